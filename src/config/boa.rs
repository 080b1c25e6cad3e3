//! `[boa]`: the Bank of Albania page, its timeout and the largest accepted jump.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBoa {
    pub(super) url: String,
    pub(super) timeout_secs: i64,
    pub(super) max_jump_percent: toml::Value,
}

impl Default for RawBoa {
    fn default() -> Self {
        RawBoa {
            url: "https://www.bankofalbania.org/Tregjet/Kursi_zyrtar_i_kembimit/".into(),
            timeout_secs: 30,
            max_jump_percent: toml::Value::Integer(20),
        }
    }
}

/// `[boa]`.
#[derive(Debug, Clone)]
pub struct BoaConfig {
    /// The official rate page.
    pub url: Url,
    /// Per-request timeout.
    pub timeout_secs: u64,
    /// Refuse a fixing whose rate moved more than this percentage from the previous one.
    pub max_jump_percent: Decimal,
}

/// `[boa]`.
pub(super) fn validate_boa(b: RawBoa) -> Result<BoaConfig, Error> {
    let max_jump_percent = match &b.max_jump_percent {
        toml::Value::Integer(i) => Decimal::from(*i),
        toml::Value::Float(f) => Decimal::try_from(*f).unwrap_or(Decimal::ZERO),
        other => {
            return Err(invalid(
                "boa.max_jump_percent",
                format!("{other} is not a number"),
            ))
        }
    };
    if max_jump_percent <= Decimal::ZERO {
        return Err(invalid(
            "boa.max_jump_percent",
            format!("{max_jump_percent} must be greater than 0"),
        ));
    }
    Ok(BoaConfig {
        url: parse_url("boa.url", &b.url)?,
        timeout_secs: positive("boa.timeout_secs", b.timeout_secs, 3600)? as u64,
        max_jump_percent,
    })
}
