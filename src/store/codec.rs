//! The one place values are encoded: a format byte, then bincode 2 (serde, standard config).
//!
//! Switching the encoding (e.g. to postcard) means changing this file and adding a migration.

use serde::{de::DeserializeOwned, Serialize};

/// The record envelope's current format byte.
pub const RECORD_FORMAT: u8 = 1;

/// A value that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The envelope byte is not one this build reads.
    #[error("record format {0} is not supported (this build reads format {RECORD_FORMAT})")]
    Format(u8),
    /// An empty value.
    #[error("empty record")]
    Empty,
    /// bincode failed.
    #[error("record encoding: {0}")]
    Bincode(String),
}

/// Encodes a value with its envelope byte.
///
/// # Errors
/// [`CodecError::Bincode`] when serde fails (e.g. a type bincode cannot represent).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![RECORD_FORMAT];
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| CodecError::Bincode(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a value written by [`encode`].
///
/// # Errors
/// Wrong envelope byte, or bytes that are not this type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != RECORD_FORMAT {
        return Err(CodecError::Format(format));
    }
    let (v, _) = bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map_err(|e| CodecError::Bincode(e.to_string()))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct R {
        #[serde(with = "rust_decimal::serde::str")]
        d: Decimal,
        o: Option<chrono::NaiveDate>,
        t: chrono::DateTime<chrono::Utc>,
    }

    #[test]
    fn round_trip_exact_decimal() {
        let r = R {
            d: Decimal::from_str("371473.97").unwrap(),
            o: chrono::NaiveDate::from_ymd_opt(2026, 5, 22),
            t: chrono::Utc::now(),
        };
        let b = encode(&r).unwrap();
        assert_eq!(b[0], RECORD_FORMAT);
        assert_eq!(decode::<R>(&b).unwrap(), r);
        let mut bad = b.clone();
        bad[0] = 9;
        assert!(matches!(decode::<R>(&bad), Err(CodecError::Format(9))));
        assert!(decode::<R>(&[]).is_err());
        assert!(decode::<R>(&b[..3]).is_err());
    }
}
