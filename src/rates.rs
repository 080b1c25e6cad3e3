//! Which BoA rates are in force on a date, and what each QuickBooks company must be sent.
//!
//! Pure arithmetic over stored [`FixingTable`]s (SPEC §5 "Rate in force" and "Rate for a
//! company"). It owns the choice of table, the cross-rate formula and its rounding; it must
//! not read the store, talk to QuickBooks or decide *whether* a date needs a fixing (a
//! business day without its own main fixing is the caller's "not yet published" case).
//!
//! All arithmetic is exact: the only rounding is the final one to [`RATE_DECIMALS`] places,
//! half to even, and no float is ever involved.

use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::currency::Currency;
use crate::fixing::{FixingTable, TableKind};

/// Decimal places of a rate written to QuickBooks (SPEC §5: "at most 6 decimals").
pub const RATE_DECIMALS: u32 = 6;

/// One currency's rate in force on a date, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForceRate {
    /// The code as the page prints it (`SDR`), kept for the rates answer.
    pub code: Currency,
    /// The ISO code QuickBooks knows (`XDR`); rates are matched and sorted by it.
    pub iso: Currency,
    /// How many units of the currency `published` is for (100 for JPY, HUF, RUB).
    pub units: u32,
    /// Lek per `units`, exactly as published.
    #[serde(with = "rust_decimal::serde::str")]
    pub published: Decimal,
    /// The table the row comes from; main and minor tables have different dates.
    pub table: TableKind,
    /// The date of that table — the fixing date of this rate, which may be before the date
    /// asked for (weekends, holidays, minor currencies).
    pub fixing_date: NaiveDate,
}

impl InForceRate {
    /// Lek per one unit, exact; `None` only for a (never stored) row with zero units.
    pub fn per_unit(&self) -> Option<Decimal> {
        self.published
            .checked_div(Decimal::from(self.units))
            .map(|d| d.normalize())
    }
}

/// Every rate in force on one date.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InForce {
    /// Date of the main table in force, `None` when no main table is dated on or before it.
    pub main_date: Option<NaiveDate>,
    /// Date of the minor table in force; usually older than `main_date`.
    pub minor_date: Option<NaiveDate>,
    /// One row per ISO code, sorted by ISO code.
    pub rates: Vec<InForceRate>,
}

impl InForce {
    /// The rate for a code, given as the page prints it (`SDR`) or as ISO (`XDR`).
    pub fn rate(&self, code: Currency) -> Option<&InForceRate> {
        self.rates.iter().find(|r| r.iso == code || r.code == code)
    }

    /// True when no fixing at all is dated on or before the date asked for.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }
}

/// The rate to write to a company for one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyRate {
    /// The ISO code written as `SourceCurrencyCode` (`XDR`, never `SDR`).
    pub currency: Currency,
    /// Home-currency units per one unit of `currency`: at most [`RATE_DECIMALS`] places,
    /// trailing zeros removed (`95.40` becomes `95.4`). Compare numerically, not as text.
    #[serde(with = "rust_decimal::serde::str")]
    pub rate: Decimal,
}

/// Why a company's rates cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The company's home currency is neither ALL nor in the fixing in force, so no cross
    /// rate exists.
    #[error("home currency {0} is not in the bank of albania fixing in force")]
    HomeNotFixed(Currency),
    /// A stored row cannot be divided by (validation should have refused it).
    #[error("rate for {currency} is unusable: {published} per {units}")]
    Unusable {
        /// The row's ISO code.
        currency: Currency,
        /// Its units.
        units: u32,
        /// Its published figure.
        published: Decimal,
    },
    /// The figures are too large for exact decimal arithmetic.
    #[error("rate for {0} overflows decimal arithmetic")]
    Overflow(Currency),
}

/// The rates in force on `date` among any set of stored tables (main and minor, any dates,
/// any order).
///
/// For each kind, only the **latest table of that kind dated on or before `date`** is used,
/// and every row of it is in force. A currency that an older table of the same kind had but
/// the latest one dropped is therefore *not* in force: BoA no longer fixes it, and carrying
/// its old rate forward would write a stale figure as if it were official. (Per-currency
/// fallback to older tables is deliberately not done.)
///
/// Ties and oddities, none of which validated data should produce:
/// - two tables of the same kind and date: the later `published_time` wins (`None`, i.e.
///   imported history, counts as earliest); on a full tie the later one in `tables`;
/// - a code in both the main and the minor table in force (a currency moved between tables):
///   the row with the later fixing date wins, the main one on equal dates;
/// - a code twice in one table: the first row wins (`SDR` and `XDR` are the same code).
pub fn rates_in_force(tables: &[FixingTable], date: NaiveDate) -> InForce {
    let main = latest_table(tables, TableKind::Main, date);
    let minor = latest_table(tables, TableKind::Minor, date);

    let mut rates: Vec<InForceRate> = Vec::new();
    // Main first, so that on equal fixing dates the main row is the one kept.
    for table in [main, minor].into_iter().flatten() {
        for row in &table.rates {
            let candidate = InForceRate {
                code: row.code,
                iso: row.iso_code(),
                units: row.units,
                published: row.published,
                table: table.kind,
                fixing_date: table.date,
            };
            match rates.iter_mut().find(|r| r.iso == candidate.iso) {
                None => rates.push(candidate),
                Some(kept) if candidate.fixing_date > kept.fixing_date => *kept = candidate,
                Some(_) => {}
            }
        }
    }
    rates.sort_by_key(|r| r.iso);

    InForce {
        main_date: main.map(|t| t.date),
        minor_date: minor.map(|t| t.date),
        rates,
    }
}

/// The latest table of `kind` dated on or before `date` (see [`rates_in_force`] for ties).
fn latest_table(tables: &[FixingTable], kind: TableKind, date: NaiveDate) -> Option<&FixingTable> {
    tables
        .iter()
        .filter(|t| t.kind == kind && t.date <= date)
        // `max_by_key` keeps the last of equal maxima; `None < Some(_)` ranks imported
        // history below a scraped page of the same date.
        .max_by_key(|t| (t.date, t.published_time))
}

/// The rates a company with home currency `home` and active currencies `active` must be
/// sent, sorted by currency code.
///
/// - Home `ALL`: lek per one unit, `published / units`.
/// - Other home H: the cross rate `(pub_X / units_X) / (pub_H / units_H)`, and ALL itself
///   `1 / (pub_H / units_H)`.
///
/// Only codes in `active` that have a rate in force (or ALL, for a non-ALL home) are listed,
/// never the home currency, each once. Codes are compared as ISO codes, so an active `XDR`
/// gets BoA's `SDR`; XDR, CNH, XAU and XAG thus appear only when the company has them active.
/// Active codes BoA does not fix are left out silently; [`unfixed_currencies`] names them.
///
/// Each rate is computed exactly and rounded once to [`RATE_DECIMALS`] places, half to even,
/// then has its trailing zeros removed.
///
/// # Errors
/// [`RateError::HomeNotFixed`] when the home currency is not ALL and has no rate in force;
/// [`RateError::Unusable`] for a row with zero units or a non-positive figure that would be
/// divided by or written; [`RateError::Overflow`] for figures beyond decimal range.
pub fn company_rates(
    in_force: &InForce,
    home: Currency,
    active: &[Currency],
) -> Result<Vec<CompanyRate>, RateError> {
    let home = home.iso();
    let home_quote = if home == Currency::ALL {
        Quote::LEK
    } else {
        let row = in_force.rate(home).ok_or(RateError::HomeNotFixed(home))?;
        Quote::of(row)?
    };

    let mut out = Vec::new();
    for currency in wanted_codes(home, active) {
        let quote = if currency == Currency::ALL {
            Quote::LEK
        } else {
            match in_force.rate(currency) {
                Some(row) => Quote::of(row)?,
                None => continue,
            }
        };
        let rate = cross_rate(quote, home_quote).ok_or(RateError::Overflow(currency))?;
        out.push(CompanyRate { currency, rate });
    }
    Ok(out)
}

/// Active codes (ISO, sorted, each once, never `home`) for which no rate is in force, so the
/// caller can report them; ALL is always available to a non-ALL home and never listed.
pub fn unfixed_currencies(
    in_force: &InForce,
    home: Currency,
    active: &[Currency],
) -> Vec<Currency> {
    wanted_codes(home.iso(), active)
        .into_iter()
        .filter(|c| *c != Currency::ALL && in_force.rate(*c).is_none())
        .collect()
}

/// Active codes as ISO codes, sorted, deduplicated, without the home currency.
fn wanted_codes(home: Currency, active: &[Currency]) -> Vec<Currency> {
    let mut codes: Vec<Currency> = active
        .iter()
        .map(|c| c.iso())
        .filter(|c| *c != home)
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

/// `published` lek per `units` of a currency, checked to be usable as a divisor.
#[derive(Debug, Clone, Copy)]
struct Quote {
    published: Decimal,
    units: u32,
}

impl Quote {
    /// The lek itself: one lek per one lek.
    const LEK: Quote = Quote {
        published: Decimal::ONE,
        units: 1,
    };

    fn of(row: &InForceRate) -> Result<Quote, RateError> {
        if row.units == 0 || row.published <= Decimal::ZERO {
            return Err(RateError::Unusable {
                currency: row.iso,
                units: row.units,
                published: row.published,
            });
        }
        Ok(Quote {
            published: row.published,
            units: row.units,
        })
    }
}

/// Home-currency units per one unit of `x`, rounded once to [`RATE_DECIMALS`] places half to
/// even: `(pub_x * units_h) / (units_x * pub_h)`. Both quotes are positive. `None` only on
/// overflow of decimal range.
fn cross_rate(x: Quote, h: Quote) -> Option<Decimal> {
    exact_cross_rate(x, h)
        .or_else(|| approximate_cross_rate(x, h))
        .map(|d| d.normalize())
}

/// The exact path, in integers: with `pub = m / 10^s`,
/// `rate * 10^6 = m_x * units_h * 10^(s_h + 6) / (units_x * m_h * 10^s_x)`, one integer
/// division whose remainder decides the rounding. `None` when a product exceeds `u128`,
/// which BoA's two-decimal figures never come near.
fn exact_cross_rate(x: Quote, h: Quote) -> Option<Decimal> {
    let px = x.published.normalize();
    let ph = h.published.normalize();
    let mx = u128::try_from(px.mantissa()).ok()?;
    let mh = u128::try_from(ph.mantissa()).ok()?;

    let top = mx
        .checked_mul(u128::from(h.units))?
        .checked_mul(10u128.checked_pow(ph.scale() + RATE_DECIMALS)?)?;
    let bottom = u128::from(x.units)
        .checked_mul(mh)?
        .checked_mul(10u128.checked_pow(px.scale())?)?;
    if bottom == 0 {
        return None;
    }

    let mut q = top / bottom;
    let r = top % bottom;
    // Compare r with bottom / 2 without overflowing 2r: r > bottom - r means past the midpoint.
    let rest = bottom - r;
    if r > rest || (r == rest && q % 2 == 1) {
        q += 1;
    }
    Decimal::try_from_i128_with_scale(i128::try_from(q).ok()?, RATE_DECIMALS).ok()
}

/// The fallback for figures too large for [`exact_cross_rate`]: one decimal division (28
/// significant digits) then the same rounding. Only a quotient within ~1e-20 of a rounding
/// midpoint could round differently from the exact value.
fn approximate_cross_rate(x: Quote, h: Quote) -> Option<Decimal> {
    let top = x.published.checked_mul(Decimal::from(h.units))?;
    let bottom = Decimal::from(x.units).checked_mul(h.published)?;
    top.checked_div(bottom)
        .map(|q| q.round_dp_with_strategy(RATE_DECIMALS, RoundingStrategy::MidpointNearestEven))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixing::PublishedRate;
    use chrono::NaiveTime;
    use std::str::FromStr;

    fn c(code: &str) -> Currency {
        Currency::new(code).unwrap()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn day(y: i32, m: u32, dd: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, dd).unwrap()
    }

    fn row(code: &str, units: u32, published: &str) -> PublishedRate {
        PublishedRate {
            code: c(code),
            units,
            published: d(published),
        }
    }

    fn table(kind: TableKind, date: NaiveDate, rows: &[(&str, u32, &str)]) -> FixingTable {
        FixingTable {
            kind,
            date,
            published_time: None,
            rates: rows.iter().map(|(cd, u, p)| row(cd, *u, p)).collect(),
        }
    }

    /// The real main table of 22.05.2026 (the sanity figures plus the other rows).
    fn main_2026_05_22() -> FixingTable {
        let mut t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[
                ("USD", 1, "82.24"),
                ("EUR", 1, "95.40"),
                ("GBP", 1, "110.38"),
                ("CHF", 1, "104.60"),
                ("JPY", 100, "51.68"),
                ("SDR", 1, "112.40"),
                ("XAU", 1, "371473.97"),
                ("CNH", 1, "11.40"),
                ("TRY", 1, "1.80"),
            ],
        );
        t.published_time = NaiveTime::from_hms_opt(12, 12, 23);
        t
    }

    /// The real minor table of 15.05.2026.
    fn minor_2026_05_15() -> FixingTable {
        table(
            TableKind::Minor,
            day(2026, 5, 15),
            &[
                ("HUF", 100, "26.47"),
                ("RUB", 100, "111.96"),
                ("CZK", 1, "3.92"),
                ("MKD", 1, "1.55"),
            ],
        )
    }

    fn fixing_22_may() -> InForce {
        rates_in_force(&[minor_2026_05_15(), main_2026_05_22()], day(2026, 5, 22))
    }

    fn rate_of(rates: &[CompanyRate], code: &str) -> Option<Decimal> {
        rates.iter().find(|r| r.currency == c(code)).map(|r| r.rate)
    }

    fn codes(rates: &[CompanyRate]) -> Vec<String> {
        rates.iter().map(|r| r.currency.to_string()).collect()
    }

    /// Independent reference: round(num/den) to 6 places, half to even, in plain integers.
    fn reference_6dp(num: u128, den: u128) -> Decimal {
        let scaled = num * 1_000_000;
        let (q, r) = (scaled / den, scaled % den);
        let q = match (2 * r).cmp(&den) {
            std::cmp::Ordering::Greater => q + 1,
            std::cmp::Ordering::Equal if q % 2 == 1 => q + 1,
            _ => q,
        };
        Decimal::from_i128_with_scale(q as i128, 6)
    }

    // ---- rates_in_force -------------------------------------------------------------

    #[test]
    fn in_force_carries_both_dates_and_all_rows() {
        let f = fixing_22_may();
        assert_eq!(f.main_date, Some(day(2026, 5, 22)));
        assert_eq!(f.minor_date, Some(day(2026, 5, 15)));
        assert_eq!(f.rates.len(), 13);
        let huf = f.rate(c("HUF")).unwrap();
        assert_eq!(huf.table, TableKind::Minor);
        assert_eq!(huf.fixing_date, day(2026, 5, 15));
        assert_eq!(huf.units, 100);
        assert_eq!(huf.per_unit(), Some(d("0.2647")));
        let usd = f.rate(c("USD")).unwrap();
        assert_eq!(usd.table, TableKind::Main);
        assert_eq!(usd.fixing_date, day(2026, 5, 22));
        assert_eq!(usd.published, d("82.24"));
    }

    #[test]
    fn in_force_sorted_by_iso_and_sdr_keeps_page_code() {
        let f = fixing_22_may();
        let isos: Vec<Currency> = f.rates.iter().map(|r| r.iso).collect();
        let mut sorted = isos.clone();
        sorted.sort();
        assert_eq!(isos, sorted);
        let sdr = f.rate(c("XDR")).unwrap();
        assert_eq!(sdr.code, c("SDR"));
        assert_eq!(sdr.iso, c("XDR"));
        assert_eq!(f.rate(c("SDR")), Some(sdr));
    }

    #[test]
    fn weekend_uses_last_business_days_tables() {
        let tables = [minor_2026_05_15(), main_2026_05_22()];
        for date in [day(2026, 5, 23), day(2026, 5, 24)] {
            let f = rates_in_force(&tables, date);
            assert_eq!(f, fixing_22_may(), "{date}");
        }
    }

    #[test]
    fn picks_latest_of_each_kind_on_or_before_date_in_any_order() {
        let main_20 = table(TableKind::Main, day(2026, 5, 20), &[("USD", 1, "80.00")]);
        let main_21 = table(TableKind::Main, day(2026, 5, 21), &[("USD", 1, "81.00")]);
        let main_25 = table(TableKind::Main, day(2026, 5, 25), &[("USD", 1, "85.00")]);
        let minor_01 = table(TableKind::Minor, day(2026, 5, 1), &[("HUF", 100, "25.00")]);
        let minor_29 = table(TableKind::Minor, day(2026, 5, 29), &[("HUF", 100, "27.00")]);
        let tables = [
            main_25,
            minor_29,
            main_20,
            minor_2026_05_15(),
            main_21,
            minor_01,
        ];

        let f = rates_in_force(&tables, day(2026, 5, 21));
        assert_eq!(f.main_date, Some(day(2026, 5, 21)));
        assert_eq!(f.minor_date, Some(day(2026, 5, 15)));
        assert_eq!(f.rate(c("USD")).unwrap().published, d("81.00"));
        assert_eq!(f.rate(c("HUF")).unwrap().published, d("26.47"));

        let f = rates_in_force(&tables, day(2026, 5, 14));
        assert_eq!(f.main_date, None);
        assert_eq!(f.minor_date, Some(day(2026, 5, 1)));
        assert_eq!(f.rates.len(), 1);

        let f = rates_in_force(&tables, day(2026, 5, 29));
        assert_eq!(f.main_date, Some(day(2026, 5, 25)));
        assert_eq!(f.minor_date, Some(day(2026, 5, 29)));
        assert_eq!(f.rate(c("USD")).unwrap().published, d("85.00"));
        assert_eq!(f.rate(c("HUF")).unwrap().published, d("27.00"));
    }

    #[test]
    fn nothing_in_force_before_the_oldest_table() {
        let f = rates_in_force(&[minor_2026_05_15(), main_2026_05_22()], day(2026, 5, 14));
        assert!(f.is_empty());
        assert_eq!(f, InForce::default());
        assert!(rates_in_force(&[], day(2026, 5, 22)).is_empty());
    }

    #[test]
    fn minor_only_or_main_only() {
        // Between the minor fixing of the 15th and a main table dated later only.
        let f = rates_in_force(&[minor_2026_05_15(), main_2026_05_22()], day(2026, 5, 18));
        assert_eq!(f.main_date, None);
        assert_eq!(f.minor_date, Some(day(2026, 5, 15)));
        assert_eq!(f.rates.len(), 4);
        let f = rates_in_force(&[main_2026_05_22()], day(2026, 5, 22));
        assert_eq!(f.minor_date, None);
        assert!(f.rate(c("HUF")).is_none());
    }

    #[test]
    fn a_currency_dropped_from_the_latest_table_is_not_carried_forward() {
        let old = table(
            TableKind::Minor,
            day(2026, 4, 30),
            &[("HUF", 100, "26.00"), ("BGN", 1, "48.00")],
        );
        let f = rates_in_force(&[old, minor_2026_05_15()], day(2026, 5, 20));
        assert!(f.rate(c("BGN")).is_none());
        assert_eq!(f.rate(c("HUF")).unwrap().published, d("26.47"));
        // Before the newer table, BGN was in force.
        let old = table(TableKind::Minor, day(2026, 4, 30), &[("BGN", 1, "48.00")]);
        let f = rates_in_force(&[old, minor_2026_05_15()], day(2026, 5, 14));
        assert_eq!(f.rate(c("BGN")).unwrap().published, d("48.00"));
    }

    #[test]
    fn same_date_tables_prefer_later_publication_then_later_in_slice() {
        let mut imported = table(TableKind::Main, day(2026, 5, 22), &[("USD", 1, "1.00")]);
        let mut scraped = table(TableKind::Main, day(2026, 5, 22), &[("USD", 1, "2.00")]);
        scraped.published_time = NaiveTime::from_hms_opt(12, 12, 0);
        let f = rates_in_force(&[scraped.clone(), imported.clone()], day(2026, 5, 22));
        assert_eq!(f.rate(c("USD")).unwrap().published, d("2.00"));
        let f = rates_in_force(&[imported.clone(), scraped.clone()], day(2026, 5, 22));
        assert_eq!(f.rate(c("USD")).unwrap().published, d("2.00"));
        imported.published_time = scraped.published_time;
        let f = rates_in_force(&[scraped, imported], day(2026, 5, 22));
        assert_eq!(f.rate(c("USD")).unwrap().published, d("1.00"));
    }

    #[test]
    fn code_in_both_tables_keeps_the_newer_fixing_main_on_ties() {
        let main = table(TableKind::Main, day(2026, 5, 22), &[("HUF", 100, "26.90")]);
        let f = rates_in_force(&[minor_2026_05_15(), main.clone()], day(2026, 5, 22));
        let huf = f.rate(c("HUF")).unwrap();
        assert_eq!((huf.table, huf.published), (TableKind::Main, d("26.90")));
        assert_eq!(f.rates.iter().filter(|r| r.iso == c("HUF")).count(), 1);

        let newer_minor = table(TableKind::Minor, day(2026, 5, 29), &[("HUF", 100, "27.10")]);
        let f = rates_in_force(&[newer_minor.clone(), main.clone()], day(2026, 5, 29));
        assert_eq!(f.rate(c("HUF")).unwrap().table, TableKind::Minor);

        let tie = table(TableKind::Minor, day(2026, 5, 22), &[("HUF", 100, "27.10")]);
        let f = rates_in_force(&[tie, main], day(2026, 5, 22));
        assert_eq!(f.rate(c("HUF")).unwrap().table, TableKind::Main);
    }

    #[test]
    fn duplicate_row_first_wins_and_sdr_xdr_are_one() {
        let t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[("SDR", 1, "112.40"), ("XDR", 1, "1.00"), ("SDR", 1, "2.00")],
        );
        let f = rates_in_force(&[t], day(2026, 5, 22));
        assert_eq!(f.rates.len(), 1);
        assert_eq!(f.rates[0].code, c("SDR"));
        assert_eq!(f.rates[0].published, d("112.40"));
    }

    #[test]
    fn in_force_serde_keeps_decimals_exact() {
        let f = fixing_22_may();
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"published\":\"95.40\""), "{json}");
        assert!(json.contains("\"table\":\"minor\""), "{json}");
        let back: InForce = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }

    // ---- company_rates: ALL home ----------------------------------------------------

    #[test]
    fn all_home_real_figures() {
        let f = fixing_22_may();
        let active = [
            c("USD"),
            c("EUR"),
            c("JPY"),
            c("HUF"),
            c("RUB"),
            c("XDR"),
            c("ALL"),
        ];
        let rates = company_rates(&f, Currency::ALL, &active).unwrap();
        assert_eq!(
            codes(&rates),
            ["EUR", "HUF", "JPY", "RUB", "USD", "XDR"],
            "sorted, home excluded"
        );
        assert_eq!(rate_of(&rates, "JPY"), Some(d("0.5168")));
        assert_eq!(rate_of(&rates, "HUF"), Some(d("0.2647")));
        assert_eq!(rate_of(&rates, "RUB"), Some(d("1.1196")));
        assert_eq!(rate_of(&rates, "USD"), Some(d("82.24")));
        assert_eq!(rate_of(&rates, "EUR"), Some(d("95.4")));
        assert_eq!(rate_of(&rates, "XDR"), Some(d("112.4")));
        // Trailing zeros are stripped, so the text is the shortest form.
        assert_eq!(rate_of(&rates, "EUR").unwrap().to_string(), "95.4");
        assert_eq!(rate_of(&rates, "XDR").unwrap().to_string(), "112.4");
    }

    #[test]
    fn special_codes_only_when_active() {
        let f = fixing_22_may();
        let rates = company_rates(&f, Currency::ALL, &[c("USD")]).unwrap();
        assert_eq!(codes(&rates), ["USD"]);
        let rates = company_rates(&f, Currency::ALL, &[c("XAU"), c("CNH")]).unwrap();
        assert_eq!(codes(&rates), ["CNH", "XAU"]);
        assert_eq!(rate_of(&rates, "XAU"), Some(d("371473.97")));
        // An active code spelt as BoA prints it is still written as ISO.
        let rates = company_rates(&f, Currency::ALL, &[c("SDR")]).unwrap();
        assert_eq!(codes(&rates), ["XDR"]);
    }

    #[test]
    fn inactive_and_unfixed_never_listed_duplicates_once() {
        let f = fixing_22_may();
        let active = [c("CAD"), c("USD"), c("USD"), c("XDR"), c("SDR"), c("ZAR")];
        let rates = company_rates(&f, Currency::ALL, &active).unwrap();
        assert_eq!(codes(&rates), ["USD", "XDR"]);
        assert_eq!(
            unfixed_currencies(&f, Currency::ALL, &active),
            [c("CAD"), c("ZAR")]
        );
        assert_eq!(company_rates(&f, Currency::ALL, &[]).unwrap(), []);
        assert!(unfixed_currencies(&f, c("EUR"), &[c("ALL"), c("EUR")]).is_empty());
    }

    #[test]
    fn every_rate_has_at_most_six_decimals() {
        let f = fixing_22_may();
        let all: Vec<Currency> = f
            .rates
            .iter()
            .map(|r| r.iso)
            .chain([Currency::ALL])
            .collect();
        for home in &all {
            for r in company_rates(&f, *home, &all).unwrap() {
                assert!(r.rate.scale() <= RATE_DECIMALS, "{home} {r:?}");
                assert!(r.rate > Decimal::ZERO, "{home} {r:?}");
                assert_ne!(r.currency, home.iso());
            }
        }
    }

    // ---- company_rates: other homes --------------------------------------------------

    #[test]
    fn eur_home_real_figures() {
        let f = fixing_22_may();
        let active = [
            c("ALL"),
            c("USD"),
            c("EUR"),
            c("JPY"),
            c("HUF"),
            c("RUB"),
            c("GBP"),
            c("CHF"),
            c("XDR"),
            c("XAU"),
            c("TRY"),
            c("CZK"),
            c("MKD"),
        ];
        let rates = company_rates(&f, c("EUR"), &active).unwrap();
        assert_eq!(
            codes(&rates),
            ["ALL", "CHF", "CZK", "GBP", "HUF", "JPY", "MKD", "RUB", "TRY", "USD", "XAU", "XDR"]
        );
        // Hand-checked: 82.24 / 95.40 = 0.86205450733…, so 0.862055 (not truncated to …054).
        assert_eq!(rate_of(&rates, "USD"), Some(d("0.862055")));
        assert_eq!(rate_of(&rates, "USD"), Some(reference_6dp(8224, 9540)));
        // 1 / 95.40 = 0.0104821802…
        assert_eq!(rate_of(&rates, "ALL"), Some(d("0.010482")));
        assert_eq!(rate_of(&rates, "ALL"), Some(reference_6dp(100, 9540)));
        // 0.5168 / 95.40 = 0.00541719077…
        assert_eq!(rate_of(&rates, "JPY"), Some(d("0.005417")));
        assert_eq!(
            rate_of(&rates, "JPY"),
            Some(reference_6dp(5168, 100 * 9540))
        );
        // 0.2647 / 95.40 = 0.00277463312…
        assert_eq!(rate_of(&rates, "HUF"), Some(d("0.002775")));
        assert_eq!(
            rate_of(&rates, "HUF"),
            Some(reference_6dp(2647, 100 * 9540))
        );
        assert_eq!(rate_of(&rates, "RUB"), Some(d("0.011736")));
        assert_eq!(rate_of(&rates, "GBP"), Some(d("1.157023")));
        assert_eq!(rate_of(&rates, "CHF"), Some(d("1.096436")));
        assert_eq!(rate_of(&rates, "XDR"), Some(d("1.178197")));
        assert_eq!(rate_of(&rates, "XAU"), Some(d("3893.857128")));
        assert_eq!(rate_of(&rates, "TRY"), Some(d("0.018868")));
        assert_eq!(rate_of(&rates, "CZK"), Some(d("0.04109")));
        assert_eq!(rate_of(&rates, "MKD"), Some(d("0.016247")));
    }

    #[test]
    fn usd_and_jpy_home_real_figures() {
        let f = fixing_22_may();
        let active = [c("ALL"), c("EUR"), c("USD"), c("JPY"), c("HUF"), c("XAU")];
        let usd = company_rates(&f, c("USD"), &active).unwrap();
        assert_eq!(codes(&usd), ["ALL", "EUR", "HUF", "JPY", "XAU"]);
        assert_eq!(rate_of(&usd, "EUR"), Some(d("1.160019")));
        assert_eq!(rate_of(&usd, "ALL"), Some(d("0.01216")));
        assert_eq!(rate_of(&usd, "JPY"), Some(d("0.006284")));
        assert_eq!(rate_of(&usd, "HUF"), Some(d("0.003219")));
        assert_eq!(rate_of(&usd, "XAU"), Some(d("4516.950024")));

        // A home quoted per 100: units_H multiplies the numerator.
        let jpy = company_rates(&f, c("JPY"), &active).unwrap();
        assert_eq!(codes(&jpy), ["ALL", "EUR", "HUF", "USD", "XAU"]);
        assert_eq!(rate_of(&jpy, "EUR"), Some(d("184.597523")));
        assert_eq!(rate_of(&jpy, "USD"), Some(d("159.133127")));
        assert_eq!(rate_of(&jpy, "HUF"), Some(d("0.51219")));
        assert_eq!(rate_of(&jpy, "ALL"), Some(d("1.934985")));
        assert_eq!(rate_of(&jpy, "ALL"), Some(reference_6dp(100 * 100, 5168)));
    }

    #[test]
    fn minor_currency_home_and_xdr_home() {
        let f = fixing_22_may();
        let huf = company_rates(&f, c("HUF"), &[c("EUR"), c("ALL")]).unwrap();
        // 95.40 / 0.2647 = 360.40800906…; 1 / 0.2647 = 3.77786173…
        assert_eq!(rate_of(&huf, "EUR"), Some(reference_6dp(9540 * 100, 2647)));
        assert_eq!(rate_of(&huf, "EUR"), Some(d("360.408009")));
        assert_eq!(rate_of(&huf, "ALL"), Some(d("3.777862")));
        // A home given as BoA's SDR is the ISO XDR; its own code is never listed.
        let xdr = company_rates(&f, c("SDR"), &[c("XDR"), c("SDR"), c("USD")]).unwrap();
        assert_eq!(codes(&xdr), ["USD"]);
        assert_eq!(rate_of(&xdr, "USD"), Some(reference_6dp(8224, 11240)));
    }

    #[test]
    fn non_all_home_lists_all_only_when_active() {
        let f = fixing_22_may();
        let rates = company_rates(&f, c("EUR"), &[c("USD")]).unwrap();
        assert_eq!(codes(&rates), ["USD"]);
        let rates = company_rates(&f, c("EUR"), &[c("EUR")]).unwrap();
        assert!(rates.is_empty());
    }

    #[test]
    fn home_not_fixed_is_an_error() {
        let f = fixing_22_may();
        assert_eq!(
            company_rates(&f, c("CAD"), &[c("USD")]),
            Err(RateError::HomeNotFixed(c("CAD")))
        );
        assert_eq!(
            company_rates(&InForce::default(), c("EUR"), &[]),
            Err(RateError::HomeNotFixed(c("EUR")))
        );
        // An ALL home never needs a rate of its own.
        assert_eq!(
            company_rates(&InForce::default(), Currency::ALL, &[c("USD")]),
            Ok(vec![])
        );
        assert_eq!(
            RateError::HomeNotFixed(c("CAD")).to_string(),
            "home currency CAD is not in the bank of albania fixing in force"
        );
    }

    #[test]
    fn unusable_rows_are_errors_not_panics() {
        let t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[("EUR", 1, "0"), ("USD", 0, "82.24"), ("GBP", 1, "-1")],
        );
        let f = rates_in_force(&[t], day(2026, 5, 22));
        assert_eq!(f.rate(c("USD")).unwrap().per_unit(), None);
        assert!(matches!(
            company_rates(&f, c("EUR"), &[c("ALL")]),
            Err(RateError::Unusable { currency, .. }) if currency == c("EUR")
        ));
        assert!(matches!(
            company_rates(&f, Currency::ALL, &[c("USD")]),
            Err(RateError::Unusable { currency, units: 0, .. }) if currency == c("USD")
        ));
        assert!(matches!(
            company_rates(&f, Currency::ALL, &[c("GBP")]),
            Err(RateError::Unusable { currency, .. }) if currency == c("GBP")
        ));
    }

    // ---- rounding -----------------------------------------------------------------------

    #[test]
    fn half_even_ties_with_two_decimal_figures() {
        // Home HHH at 1.28 lek: X at 0.01 → 0.0078125 exactly, a tie → even 0.007812;
        // Y at 0.03 → 0.0234375 → even 0.023438; ALL → 1/1.28 = 0.78125 (no rounding).
        let t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[("HHH", 1, "1.28"), ("XXX", 1, "0.01"), ("YYY", 1, "0.03")],
        );
        let f = rates_in_force(&[t], day(2026, 5, 22));
        let rates = company_rates(&f, c("HHH"), &[c("XXX"), c("YYY"), c("ALL")]).unwrap();
        assert_eq!(rate_of(&rates, "XXX"), Some(d("0.007812")));
        assert_eq!(rate_of(&rates, "YYY"), Some(d("0.023438")));
        assert_eq!(rate_of(&rates, "ALL"), Some(d("0.78125")));

        // ALL itself on a tie: 1 / 128.00 = 0.0078125 → 0.007812; 3 / 128.00 → 0.023438.
        let t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[("HHH", 1, "128.00"), ("KKK", 3, "128.00")],
        );
        let f = rates_in_force(&[t], day(2026, 5, 22));
        let h = company_rates(&f, c("HHH"), &[c("ALL")]).unwrap();
        assert_eq!(rate_of(&h, "ALL"), Some(d("0.007812")));
        let k = company_rates(&f, c("KKK"), &[c("ALL")]).unwrap();
        assert_eq!(rate_of(&k, "ALL"), Some(d("0.023438")));
    }

    #[test]
    fn half_even_ties_for_an_all_home() {
        // published ÷ units with a seventh decimal of exactly 5.
        let t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[
                ("AAA", 2, "1.000001"),
                ("BBB", 2, "1.000003"),
                ("CCC", 1000, "0.01"),
                ("DDD", 2, "0.000003"),
            ],
        );
        let f = rates_in_force(&[t], day(2026, 5, 22));
        let active = [c("AAA"), c("BBB"), c("CCC"), c("DDD")];
        let rates = company_rates(&f, Currency::ALL, &active).unwrap();
        assert_eq!(rate_of(&rates, "AAA"), Some(d("0.5")));
        assert_eq!(rate_of(&rates, "BBB"), Some(d("0.500002")));
        // 0.00001 exactly: no rounding needed.
        assert_eq!(rate_of(&rates, "CCC"), Some(d("0.00001")));
        // 0.0000015 → 0.000002 (1 is odd).
        assert_eq!(rate_of(&rates, "DDD"), Some(d("0.000002")));
    }

    #[test]
    fn just_off_the_midpoint_rounds_the_right_way() {
        // 1.0000025000001 / 2 = 0.50000125000005 → up; 1.0000024999999 / 2 → down.
        let above = Quote {
            published: d("1.0000025000001"),
            units: 2,
        };
        let below = Quote {
            published: d("1.0000024999999"),
            units: 2,
        };
        assert_eq!(cross_rate(above, Quote::LEK), Some(d("0.500001")));
        assert_eq!(cross_rate(below, Quote::LEK), Some(d("0.500001")));
        let above = Quote {
            published: d("1.0000030000001"),
            units: 2,
        };
        let below = Quote {
            published: d("1.0000029999999"),
            units: 2,
        };
        assert_eq!(cross_rate(above, Quote::LEK), Some(d("0.500002")));
        assert_eq!(cross_rate(below, Quote::LEK), Some(d("0.500001")));
    }

    #[test]
    fn exact_where_a_28_digit_division_would_fake_a_tie() {
        // (4.5e22 − 1) / 3e28 = 0.0000015 − 3.3…e-29. A 28-digit quotient rounds that to
        // exactly 0.0000015, which half-even would wrongly take up to 0.000002.
        let x = Quote {
            published: d("44999999999999999999999"),
            units: 1,
        };
        let h = Quote {
            published: d("30000000000000000000000000000"),
            units: 1,
        };
        assert_eq!(cross_rate(x, h), Some(d("0.000001")));
        let naive = approximate_cross_rate(x, h);
        assert_eq!(
            naive,
            Some(d("0.000002")),
            "the pitfall the exact path avoids"
        );
    }

    #[test]
    fn matches_integer_reference_over_many_figures() {
        // Deterministic pseudo-random two-decimal figures and the units BoA uses.
        let mut seed: u64 = 0x2026_0522;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        let units = [1u32, 100, 1000];
        for _ in 0..5000 {
            let cents_x = u128::from(next() % 50_000_000 + 1);
            let cents_h = u128::from(next() % 50_000_000 + 1);
            let ux = units[(next() % 3) as usize];
            let uh = units[(next() % 3) as usize];
            let x = Quote {
                published: Decimal::from_i128_with_scale(cents_x as i128, 2),
                units: ux,
            };
            let h = Quote {
                published: Decimal::from_i128_with_scale(cents_h as i128, 2),
                units: uh,
            };
            let expected = reference_6dp(cents_x * u128::from(uh), u128::from(ux) * cents_h);
            let got = cross_rate(x, h).unwrap();
            assert_eq!(got, expected, "{x:?} / {h:?}");
            assert!(got.scale() <= RATE_DECIMALS);
            // The 28-digit decimal path agrees on ordinary figures.
            assert_eq!(
                approximate_cross_rate(x, h),
                Some(expected),
                "{x:?} / {h:?}"
            );
        }
    }

    #[test]
    fn huge_figures_fall_back_or_overflow_without_panicking() {
        let max = Quote {
            published: Decimal::MAX,
            units: 1,
        };
        let tiny = Quote {
            published: d("0.0000000000000000000000000001"),
            units: u32::MAX,
        };
        assert_eq!(cross_rate(max, Quote::LEK), Some(Decimal::MAX));
        // MAX / 1e-28 is beyond decimal range.
        assert_eq!(cross_rate(max, tiny), None);
        let big = Quote {
            published: d("79228162514264337593543950"),
            units: 3,
        };
        let rate = cross_rate(
            big,
            Quote {
                published: d("7"),
                units: 1,
            },
        )
        .unwrap();
        assert!(rate.scale() <= RATE_DECIMALS);
        assert_eq!(rate.trunc(), d("3772769643536397028263997"));

        let t = table(
            TableKind::Main,
            day(2026, 5, 22),
            &[("HHH", u32::MAX, "0.0000000000000000000000000001")],
        );
        let mut f = rates_in_force(&[t], day(2026, 5, 22));
        f.rates.push(InForceRate {
            code: c("MAX"),
            iso: c("MAX"),
            units: 1,
            published: Decimal::MAX,
            table: TableKind::Main,
            fixing_date: day(2026, 5, 22),
        });
        assert_eq!(
            company_rates(&f, c("HHH"), &[c("MAX")]),
            Err(RateError::Overflow(c("MAX")))
        );
    }

    #[test]
    fn company_rate_serialises_rate_as_string() {
        let r = CompanyRate {
            currency: c("EUR"),
            rate: d("95.4"),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"currency":"EUR","rate":"95.4"}"#
        );
    }
}
