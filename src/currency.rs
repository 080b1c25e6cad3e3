//! Currency codes: a three-letter upper-case code that cannot hold anything else.
//!
//! Owns only the code type and its parsing; it knows nothing of rates or of which codes a
//! QuickBooks company has active.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A three-letter currency code (`EUR`, `ALL`, `XDR`, `SDR` as BoA prints it, `XAU`).
///
/// Constructed only through [`Currency::from_str`] / [`Currency::new`], so every value held is
/// exactly three ASCII upper-case letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// Why a text is not a currency code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a currency code (expected three letters such as EUR)")]
pub struct InvalidCurrency(pub String);

impl Currency {
    /// The Albanian lek, the currency BoA quotes everything in.
    pub const ALL: Currency = Currency(*b"ALL");

    /// Parses a code; lower case is accepted and upper-cased.
    ///
    /// # Errors
    /// [`InvalidCurrency`] unless the text is exactly three ASCII letters.
    pub fn new(code: &str) -> Result<Self, InvalidCurrency> {
        let bytes = code.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(InvalidCurrency(code.to_string()));
        }
        let mut out = [0u8; 3];
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = b.to_ascii_uppercase();
        }
        Ok(Currency(out))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Invariant: always three ASCII letters, hence valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The ISO 4217 code QuickBooks knows for a code as BoA prints it (`SDR` → `XDR`).
    pub fn iso(self) -> Currency {
        if &self.0 == b"SDR" {
            Currency(*b"XDR")
        } else {
            self
        }
    }
}

impl FromStr for Currency {
    type Err = InvalidCurrency;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::new(s)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::new(&s).map_err(serde::de::Error::custom)
    }
}

/// ISO 4217 codes accepted as a home currency.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL";

/// Whether a code is an ISO 4217 currency.
pub fn is_iso_currency(c: Currency) -> bool {
    ISO_4217.split(' ').any(|x| x == c.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(Currency::new("eur").unwrap().as_str(), "EUR");
        assert!(Currency::new("EURO").is_err());
        assert!(Currency::new("E1R").is_err());
        assert!(Currency::new("").is_err());
        assert_eq!(Currency::new("SDR").unwrap().iso().as_str(), "XDR");
    }

    #[test]
    fn serde_round_trip() {
        let c: Currency = serde_json::from_str("\"JPY\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"JPY\"");
        assert!(serde_json::from_str::<Currency>("\"JP\"").is_err());
    }
}
