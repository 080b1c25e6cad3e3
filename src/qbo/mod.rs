//! QuickBooks Online: the accounting API client (typed calls), Intuit OAuth and the token
//! manager. Every base URL comes from config so tests point at the fake.

pub mod error;
pub mod model;
pub mod oauth;
pub mod tokens;

use std::time::Duration;

use chrono::NaiveDate;
use serde_json::Value;
use url::Url;

pub use error::Error;
use error::{from_cap, from_reqwest};
use model::{CompanyCurrency, CurrencyPrefs, QboRate, RawRate};

use crate::config::QuickbooksConfig;
use crate::currency::Currency;

/// Builds the shared HTTP client for Intuit calls (rustls, timeouts).
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    crate::outbound::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("boa-exchange/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        // SPEC §9: a redirect from Intuit is an error, never followed with our credentials.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Rows per page of an exchange-rate range query (QuickBooks' ceiling for `MAXRESULTS`).
pub const PAGE_SIZE: usize = 1000;

/// One page of a range query.
#[derive(Debug, Clone, Default)]
pub struct RatesPage {
    /// The rows dated inside the range.
    pub rates: Vec<QboRate>,
    /// The page held [`PAGE_SIZE`] rows: more may follow.
    pub full: bool,
}

/// An answer plus the `intuit_tid` it carried.
/// Largest answer read from Intuit (accounting API and OAuth endpoints).
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Traced<T> {
    /// The value.
    pub value: T,
    /// Intuit's transaction id.
    pub tid: Option<String>,
}

/// Typed calls to the accounting API for any realm (the access token is passed per call).
#[derive(Clone, Debug)]
pub struct QboClient {
    http: reqwest::Client,
    base: Url,
    minor_version: u32,
}

impl QboClient {
    /// A client for `api_base` (config).
    pub fn new(http: reqwest::Client, q: &QuickbooksConfig) -> Self {
        QboClient {
            http,
            base: q.api_base.clone(),
            minor_version: q.minor_version,
        }
    }

    fn url(&self, realm: &str, path: &str) -> Result<Url, Error> {
        let mut u = self
            .base
            .join(&format!("v3/company/{realm}/{path}"))
            .map_err(|e| Error::Decode(format!("bad api url: {e}")))?;
        u.query_pairs_mut()
            .append_pair("minorversion", &self.minor_version.to_string());
        Ok(u)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Traced<Value>, Error> {
        let resp = req.send().await.map_err(from_reqwest)?;
        let tid = oauth::intuit_tid(resp.headers());
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if status.is_redirection() {
            return Err(Error::Redirect {
                status: status.as_u16(),
            });
        }
        let body = crate::outbound::read_capped(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(from_cap)?;
        // Intuit's status, in the adapter's own terms (401, 429, 5xx mean something here).
        match status.as_u16() {
            401 => return Err(Error::Unauthorized),
            429 => {
                return Err(Error::RateLimited {
                    retry_after: retry_after.unwrap_or(60),
                })
            }
            s @ 500..=599 => return Err(Error::Server { status: s }),
            _ => {}
        }
        // Error bodies may be XML or empty; only JSON is read further.
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if let Some(fault) = json.as_ref().and_then(|v| v.get("Fault")) {
            return Err(parse_fault(fault));
        }
        if !status.is_success() {
            return Err(Error::Http {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        match json {
            Some(v) => Ok(Traced { value: v, tid }),
            None => Err(Error::Decode("answer is not JSON".into())),
        }
    }

    async fn get(&self, realm: &str, token: &str, url: Url) -> Result<Traced<Value>, Error> {
        let _ = realm;
        self.send(
            self.http
                .get(url)
                .bearer_auth(token)
                .header("Accept", "application/json"),
        )
        .await
    }

    /// `CompanyInfo.CompanyName`.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn company_name(&self, realm: &str, token: &str) -> Result<Traced<String>, Error> {
        let url = self.url(realm, &format!("companyinfo/{realm}"))?;
        let t = self.get(realm, token, url).await?;
        let name = t.value["CompanyInfo"]["CompanyName"]
            .as_str()
            .ok_or_else(|| Error::Decode("CompanyInfo without CompanyName".into()))?
            .to_string();
        Ok(Traced {
            value: name,
            tid: t.tid,
        })
    }

    /// Multicurrency flag and home currency.
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn preferences(
        &self,
        realm: &str,
        token: &str,
    ) -> Result<Traced<CurrencyPrefs>, Error> {
        let url = self.url(realm, "preferences")?;
        let t = self.get(realm, token, url).await?;
        let cp = &t.value["Preferences"]["CurrencyPrefs"];
        let prefs = CurrencyPrefs {
            multicurrency: cp["MultiCurrencyEnabled"].as_bool().unwrap_or(false),
            home: cp["HomeCurrency"]["value"]
                .as_str()
                .and_then(|s| Currency::new(s).ok()),
        };
        Ok(Traced {
            value: prefs,
            tid: t.tid,
        })
    }

    async fn query(&self, realm: &str, token: &str, q: &str) -> Result<Traced<Value>, Error> {
        let mut url = self.url(realm, "query")?;
        url.query_pairs_mut().append_pair("query", q);
        self.get(realm, token, url).await
    }

    /// The company's currencies (`select * from companycurrency`).
    ///
    /// # Errors
    /// Any [`Error`].
    pub async fn company_currencies(
        &self,
        realm: &str,
        token: &str,
    ) -> Result<Traced<Vec<CompanyCurrency>>, Error> {
        let t = self
            .query(realm, token, "select * from companycurrency")
            .await?;
        let list = t.value["QueryResponse"]["CompanyCurrency"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        let code = Currency::new(c["Code"].as_str()?).ok()?;
                        Some(CompanyCurrency {
                            code,
                            active: c["Active"].as_bool().unwrap_or(true),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Traced {
            value: list,
            tid: t.tid,
        })
    }

    /// One page of the exchange rates QuickBooks holds for `codes` dated `from` to `to`
    /// (inclusive): `select * from exchangerate where sourcecurrencycode in (...) and
    /// asofdate >= 'from' and asofdate <= 'to' MAXRESULTS 1000`, with `STARTPOSITION` only
    /// for a page after the first. One metered read. Answers the rows in the range and
    /// whether the page was full (then the caller asks for the next one).
    ///
    /// # Errors
    /// Any [`Error`]; a refused query is a [`Error::Fault`].
    pub async fn rates_page(
        &self,
        realm: &str,
        token: &str,
        codes: &[Currency],
        from: NaiveDate,
        to: NaiveDate,
        start: usize,
    ) -> Result<Traced<RatesPage>, Error> {
        let list = codes
            .iter()
            .map(|c| format!("'{c}'"))
            .collect::<Vec<_>>()
            .join(",");
        let paging = if start > 1 {
            format!("STARTPOSITION {start} MAXRESULTS {PAGE_SIZE}")
        } else {
            format!("MAXRESULTS {PAGE_SIZE}")
        };
        let q = format!(
            "select * from exchangerate where sourcecurrencycode in ({list}) and asofdate >= '{}' and asofdate <= '{}' {paging}",
            from.format("%Y-%m-%d"),
            to.format("%Y-%m-%d"),
        );
        let t = self.query(realm, token, &q).await?;
        let mut page = RatesPage::default();
        if let Some(a) = t.value["QueryResponse"]["ExchangeRate"].as_array() {
            page.full = a.len() >= PAGE_SIZE;
            for r in a {
                let raw: RawRate = serde_json::from_value(r.clone())
                    .map_err(|e| Error::Decode(format!("ExchangeRate: {e}")))?;
                let rate = raw.parse().map_err(Error::Decode)?;
                if rate.date >= from && rate.date <= to {
                    page.rates.push(rate);
                }
            }
        }
        Ok(Traced {
            value: page,
            tid: t.tid,
        })
    }

    /// The rate QuickBooks holds for one currency on exactly `date`
    /// (`GET exchangerate?sourcecurrencycode=&asofdate=`): the fallback read when the query
    /// is refused. `None` when there is none for that date (Fault 610, or an answer for
    /// another date: QuickBooks may fall back to an earlier one).
    ///
    /// # Errors
    /// Any [`Error`] but "not found".
    pub async fn rate_on(
        &self,
        realm: &str,
        token: &str,
        code: Currency,
        date: NaiveDate,
    ) -> Result<Traced<Option<QboRate>>, Error> {
        let mut url = self.url(realm, "exchangerate")?;
        url.query_pairs_mut()
            .append_pair("sourcecurrencycode", code.as_str())
            .append_pair("asofdate", &date.format("%Y-%m-%d").to_string());
        let t = match self.get(realm, token, url).await {
            Ok(t) => t,
            Err(e) if e.is_not_found() => {
                return Ok(Traced {
                    value: None,
                    tid: None,
                })
            }
            Err(e) => return Err(e),
        };
        let raw: RawRate = serde_json::from_value(t.value["ExchangeRate"].clone())
            .map_err(|e| Error::Decode(format!("ExchangeRate: {e}")))?;
        let rate = raw.parse().map_err(Error::Decode)?;
        Ok(Traced {
            value: (rate.date == date && rate.currency == code).then_some(rate),
            tid: t.tid,
        })
    }

    /// Creates or updates one rate (`POST exchangerate?requestid=`).
    ///
    /// # Errors
    /// Any [`Error`]; a stale SyncToken is a Fault 5010 ([`Error::is_stale`]).
    pub async fn write_rate(
        &self,
        realm: &str,
        token: &str,
        body: String,
        request_id: &str,
    ) -> Result<Traced<QboRate>, Error> {
        let mut url = self.url(realm, "exchangerate")?;
        url.query_pairs_mut().append_pair("requestid", request_id);
        let t = self
            .send(
                self.http
                    .post(url)
                    .bearer_auth(token)
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await?;
        let raw: RawRate = serde_json::from_value(t.value["ExchangeRate"].clone())
            .map_err(|e| Error::Decode(format!("ExchangeRate: {e}")))?;
        Ok(Traced {
            value: raw.parse().map_err(Error::Decode)?,
            tid: t.tid,
        })
    }
}

fn parse_fault(f: &Value) -> Error {
    let fault_type = f["type"].as_str().unwrap_or("Fault").to_string();
    let first = &f["Error"][0];
    let code = match &first["code"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let message = [first["Message"].as_str(), first["Detail"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    Error::Fault {
        fault_type,
        code,
        message,
    }
}

#[cfg(test)]
mod cap_tests {
    use super::*;
    use crate::outbound::tests::serve_once;

    fn client(api_base: &str) -> QboClient {
        crate::outbound::install_crypto_provider();
        let c = crate::config::Config::from_toml(
            &format!("[quickbooks]\napi_base = \"{api_base}\"\n"),
            "t",
            None,
            &std::collections::HashMap::new(),
        )
        .unwrap();
        QboClient::new(http_client(Duration::from_secs(5)).unwrap(), &c.quickbooks)
    }

    #[tokio::test]
    async fn accounting_redirects_are_errors_not_followed() {
        let target = serve_once(
            200,
            "",
            br#"{"CompanyInfo":{"CompanyName":"Evil"}}"#.to_vec(),
        )
        .await;
        let base = serve_once(
            302,
            &format!("location: {target}/\r\ncontent-length: 0\r\n"),
            Vec::new(),
        )
        .await;
        let e = client(&base).company_name("1", "tok").await.unwrap_err();
        assert!(matches!(e, Error::Redirect { status: 302 }), "{e}");
    }

    #[tokio::test]
    async fn accounting_answers_over_4_mib_are_refused() {
        let base = serve_once(200, "", vec![b' '; MAX_ANSWER_BYTES + 1]).await;
        let e = client(&base).company_name("1", "tok").await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let ok = serve_once(
            200,
            "",
            br#"{"CompanyInfo":{"CompanyName":"Fine"}}"#.to_vec(),
        )
        .await;
        assert_eq!(
            client(&ok).company_name("1", "tok").await.unwrap().value,
            "Fine"
        );
    }
}
