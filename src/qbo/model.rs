//! QuickBooks JSON shapes we read, and the exchange-rate write we send.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::currency::Currency;

/// An exchange rate as QuickBooks holds it (keyed by source currency and date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QboRate {
    /// `SourceCurrencyCode`.
    pub currency: Currency,
    /// `AsOfDate`.
    pub date: NaiveDate,
    /// `Rate`, exactly as the JSON number was written.
    pub rate: Decimal,
    /// `SyncToken` (a string).
    pub sync_token: String,
}

/// Preferences we need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrencyPrefs {
    /// Multicurrency switched on.
    pub multicurrency: bool,
    /// Home currency.
    pub home: Option<Currency>,
}

/// One `CompanyCurrency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyCurrency {
    /// ISO code.
    pub code: Currency,
    /// Active in the company.
    pub active: bool,
}

/// The currencies a company can be sent rates for: active in QuickBooks, not its home.
pub fn active_foreign(currencies: &[CompanyCurrency], home: Currency) -> Vec<Currency> {
    currencies
        .iter()
        .filter(|c| c.active && c.code != home)
        .map(|c| c.code)
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RawRate {
    pub source_currency_code: String,
    pub as_of_date: String,
    pub rate: serde_json::Number,
    #[serde(default)]
    pub sync_token: Option<String>,
}

impl RawRate {
    pub(crate) fn parse(self) -> Result<QboRate, String> {
        let currency = Currency::new(&self.source_currency_code).map_err(|e| e.to_string())?;
        let date = NaiveDate::parse_from_str(&self.as_of_date, "%Y-%m-%d")
            .map_err(|_| format!("bad AsOfDate {:?}", self.as_of_date))?;
        let text = self.rate.to_string();
        let rate = text
            .parse::<Decimal>()
            .or_else(|_| Decimal::from_scientific(&text))
            .map_err(|_| format!("bad Rate {text}"))?;
        Ok(QboRate {
            currency,
            date,
            rate,
            sync_token: self.sync_token.unwrap_or_else(|| "0".into()),
        })
    }
}

/// The POST body for one rate, with `Rate` as an exact JSON number (never through a float).
pub fn rate_body(
    currency: Currency,
    target: Currency,
    rate: Decimal,
    date: NaiveDate,
    sync_token: &str,
) -> String {
    let token = serde_json::to_string(sync_token).unwrap_or_else(|_| "\"0\"".into());
    format!(
        "{{\"SourceCurrencyCode\":\"{currency}\",\"TargetCurrencyCode\":\"{target}\",\"Rate\":{},\"AsOfDate\":\"{}\",\"SyncToken\":{token}}}",
        rate.normalize(),
        date.format("%Y-%m-%d"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn body_is_exact_json() {
        let b = rate_body(
            Currency::new("JPY").unwrap(),
            Currency::ALL,
            Decimal::from_str("0.516800").unwrap(),
            NaiveDate::from_ymd_opt(2026, 5, 22).unwrap(),
            "3",
        );
        assert_eq!(
            b,
            r#"{"SourceCurrencyCode":"JPY","TargetCurrencyCode":"ALL","Rate":0.5168,"AsOfDate":"2026-05-22","SyncToken":"3"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert!(v["Rate"].is_number());
    }

    #[test]
    fn parses_rates_exactly() {
        let raw: RawRate = serde_json::from_str(
            r#"{"SourceCurrencyCode":"EUR","AsOfDate":"2026-05-22","Rate":95.4,"SyncToken":"1"}"#,
        )
        .unwrap();
        let r = raw.parse().unwrap();
        assert_eq!(r.rate, Decimal::from_str("95.4").unwrap());
        assert_eq!(r.sync_token, "1");
    }
}
