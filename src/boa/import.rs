//! History import from BoA's yearly workbooks, and the list of those workbooks.
//!
//! Pure functions over bytes and HTML: downloading is [`crate::boa::fetch`]'s job, storing
//! the store's. The page only shows the latest fixing, so these workbooks are the only
//! source of history before the daemon's first scrape.
//!
//! # The workbook layout (checked against the real 2024 workbook)
//! `Kursi_i_kembimit_2024_29746.xlsx` has one sheet per month named in Albanian (`Janar`,
//! `Shkurt`, … `Dhjetor`, some with a trailing space: `Korrik `, `Tetor `). In each:
//! - one header row (row 9) holds the dates across the columns as text, spelled
//!   inconsistently: `    DT.19.01.2024`, `    DT. 03.01.2024`, `    DT 11.01.2024`;
//! - each date owns two columns (plus a blank spacer): the date's own column holds the cross
//!   rate against one USD, the next one the lek per unit "sipas fix." (per the fixing) —
//!   the figure the page publishes;
//! - the currency names are in column B, rows 18–33, in Albanian and without a code cell:
//!   `Jeni Japonez (per 100) (JPY)`, `E U R O`, `Ari (oz)` (gold), `Argjendi (oz)` (silver),
//!   `Juani Kinez (onshore) CNY` … the 16 main currencies of the page; no minor ones;
//! - the values are raw floats (`66.150000000000006`); every one is a 2-decimal figure
//!   once rounded (checked for all 246 × 16 values of 2024);
//! - right of the dates, a `KURSI MESATAR` (monthly average) block without a date, and far
//!   below/right a stale helper block left over from 2020 with one date per *row*
//!   (`06.01.2020`, even `13.01.2019`). Neither is a fixing.
//!
//! # How it is read
//! - The header row is the row holding the most date-like cells (a text with exactly three
//!   digit groups `D.M.YYYY`, any prefix such as `DT`, any of `. , / -` or spaces between;
//!   or an Excel date cell). This picks row 9 and never the stale one-date-per-row block.
//! - Currency rows are the rows below it whose cells left of the first date map to a code:
//!   the last three-capital-letter token (`(JPY)`, `CNY`), else the Albanian/English name of
//!   the euro, gold or silver. Other rows are skipped. (There is no code cell, so unlike the
//!   page this has to go by name.)
//! - Values are rounded to 2 decimals, half away from zero, from the float's shortest
//!   decimal representation (`format!("{f}")`), never from its binary expansion.
//! - **Units**: the workbook's JPY row says "(per 100)" and its value *is* per 100
//!   (3 Jan 2024: USD 94.40, JPY/USD 142.71, JPY 66.15 = 94.40 / 142.71 × 100), the same
//!   scale as the page's 51.68. So the figure is stored as is, with `units` 100 — for JPY,
//!   HUF and RUB, or any name mentioning 100 — and `published` is exactly what the page
//!   would have shown.
//! - A date whose month differs from its sheet's month, a date found twice, or a value that
//!   is not a positive number is an error: a typo in a workbook must not be imported as a
//!   fixing of another day. Empty cells are skipped; a date column with no value at all is
//!   not a fixing.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::str::FromStr;

use calamine::{open_workbook_auto_from_rs, Data, Range, Reader};
use chrono::{Datelike, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use scraper::{ElementRef, Html};

use crate::currency::Currency;
use crate::fixing::{FixingTable, PublishedRate, TableKind};

/// Why a workbook could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not a readable workbook (xlsx, xls, xlsb, ods).
    #[error("cannot read the workbook: {0}")]
    Open(String),
    /// A sheet could not be read.
    #[error("cannot read sheet {sheet:?}: {reason}")]
    Sheet {
        /// The sheet name.
        sheet: String,
        /// calamine's reason.
        reason: String,
    },
    /// No sheet has a row of dates with values.
    #[error("no dated rates found in the workbook")]
    NoDates,
    /// A date outside the month its sheet is named after.
    #[error("sheet {sheet:?}: date {text:?} is not in that month")]
    DateOutsideSheet {
        /// The sheet name.
        sheet: String,
        /// The header cell text.
        text: String,
    },
    /// The same date twice in the workbook.
    #[error("date {0} appears more than once in the workbook")]
    DuplicateDate(NaiveDate),
    /// A value cell that is not a positive number.
    #[error("sheet {sheet:?}, {date}, {code}: value {text:?} is not a positive number")]
    BadValue {
        /// The sheet name.
        sheet: String,
        /// The column's date.
        date: NaiveDate,
        /// The row's currency.
        code: Currency,
        /// The cell as text.
        text: String,
    },
}

/// One yearly workbook linked from the archive page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkbookLink {
    /// The year it covers, from the link text ("Exchange rate 2024") or else the file name.
    pub year: Option<i32>,
    /// Absolute URL.
    pub url: String,
    /// The file name as published (`Kursi_i_kembimit_2024_29746.xlsx`).
    pub name: String,
}

/// Lists the `.xlsx` / `.xls` links of the archive index page, in page order, without
/// duplicates, resolved against `base` (the index page's URL).
pub fn parse_archive_index(html: &str, base: &url::Url) -> Vec<WorkbookLink> {
    let doc = Html::parse_document(html);
    let mut out: Vec<WorkbookLink> = Vec::new();
    for node in doc.tree.root().descendants() {
        let Some(a) = ElementRef::wrap(node) else {
            continue;
        };
        if a.value().name() != "a" {
            continue;
        }
        let Some(href) = a.value().attr("href") else {
            continue;
        };
        let Ok(url) = base.join(href.trim()) else {
            continue;
        };
        let path = url.path().to_ascii_lowercase();
        if !(path.ends_with(".xlsx") || path.ends_with(".xls")) {
            continue;
        }
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_string();
        let text: String = a.text().collect();
        let year = year_in(&text).or_else(|| year_in(&name));
        let url = url.to_string();
        if out.iter().all(|l| l.url != url) {
            out.push(WorkbookLink { year, url, name });
        }
    }
    out
}

/// A standalone four-digit number between 1990 and 2100.
fn year_in(s: &str) -> Option<i32> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|t| t.len() == 4)
        .filter_map(|t| t.parse::<i32>().ok())
        .find(|y| (1990..=2100).contains(y))
}

/// Reads a yearly workbook (see the module docs for the layout and rules) into one main
/// [`FixingTable`] per date, sorted by date, with no publication time.
///
/// # Errors
/// An [`ImportError`] when the bytes are not a workbook, no dated rates are found, a date is
/// outside its sheet's month or repeated, or a value is not a positive number.
pub fn read_workbook(bytes: &[u8]) -> Result<Vec<FixingTable>, ImportError> {
    let mut book = open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| ImportError::Open(e.to_string()))?;
    let mut by_date: BTreeMap<NaiveDate, FixingTable> = BTreeMap::new();
    for sheet in book.sheet_names() {
        let range = book
            .worksheet_range(&sheet)
            .map_err(|e| ImportError::Sheet {
                sheet: sheet.clone(),
                reason: e.to_string(),
            })?;
        for table in read_sheet(&sheet, &range)? {
            let date = table.date;
            if by_date.insert(date, table).is_some() {
                return Err(ImportError::DuplicateDate(date));
            }
        }
    }
    if by_date.is_empty() {
        return Err(ImportError::NoDates);
    }
    Ok(by_date.into_values().collect())
}

/// A date column of a sheet: its column, its date, the header text as found.
type HeaderDate = (usize, NaiveDate, String);

/// The fixings of one month sheet.
fn read_sheet(sheet: &str, range: &Range<Data>) -> Result<Vec<FixingTable>, ImportError> {
    let (height, width) = range.get_size();
    let cell = |r: usize, c: usize| range.get((r, c)).unwrap_or(&Data::Empty);

    // The header row: the one with the most dates (the stale helper block has one per row).
    let mut header: Option<(usize, Vec<HeaderDate>)> = None;
    for r in 0..height {
        let dates: Vec<HeaderDate> = (0..width)
            .filter_map(|c| header_date(cell(r, c)).map(|(d, t)| (c, d, t)))
            .collect();
        if !dates.is_empty()
            && header
                .as_ref()
                .is_none_or(|(_, best)| dates.len() > best.len())
        {
            header = Some((r, dates));
        }
    }
    let Some((header_row, dates)) = header else {
        return Ok(Vec::new());
    };
    let first_date_col = dates.iter().map(|(c, _, _)| *c).min().unwrap_or(0);

    // Currency rows below the header, named left of the first date column.
    let mut currencies: Vec<(usize, Currency, u32)> = Vec::new();
    for r in header_row + 1..height {
        let named = (0..first_date_col).find_map(|c| match cell(r, c) {
            Data::String(s) => code_from_name(s).map(|code| (code, units_for(code, s))),
            _ => None,
        });
        if let Some((code, units)) = named {
            if currencies.iter().all(|(_, c, _)| *c != code) {
                currencies.push((r, code, units));
            }
        }
    }

    let sheet_month = month_of_sheet(sheet);
    let mut tables = Vec::new();
    for (col, date, text) in dates {
        if sheet_month.is_some_and(|m| m != date.month()) {
            return Err(ImportError::DateOutsideSheet {
                sheet: sheet.to_string(),
                text,
            });
        }
        let mut rates = Vec::new();
        for (row, code, units) in &currencies {
            let value = cell(*row, col + 1);
            let bad = || ImportError::BadValue {
                sheet: sheet.to_string(),
                date,
                code: *code,
                text: value.to_string(),
            };
            let published = match value {
                Data::Empty => continue,
                Data::String(s) if s.trim().is_empty() => continue,
                other => lek_value(other).ok_or_else(bad)?,
            };
            if published <= Decimal::ZERO {
                return Err(bad());
            }
            rates.push(PublishedRate {
                code: *code,
                units: *units,
                published,
            });
        }
        if !rates.is_empty() {
            tables.push(FixingTable {
                kind: TableKind::Main,
                date,
                published_time: None,
                rates,
            });
        }
    }
    Ok(tables)
}

/// A header cell's date: text with exactly three digit groups D, M, YYYY, or an Excel date.
fn header_date(cell: &Data) -> Option<(NaiveDate, String)> {
    match cell {
        Data::String(s) => {
            let groups: Vec<&str> = s
                .split(|c: char| !c.is_ascii_digit())
                .filter(|g| !g.is_empty())
                .collect();
            let [d, m, y] = groups.as_slice() else {
                return None;
            };
            if d.len() > 2 || m.len() > 2 || y.len() != 4 {
                return None;
            }
            // Only separators and a short prefix (DT, Data…) around the digits.
            if s.chars()
                .any(|c| !(c.is_ascii_digit() || c.is_alphabetic() || " .,/-:\u{a0}".contains(c)))
            {
                return None;
            }
            let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
            Some((date, s.trim().to_string()))
        }
        Data::DateTime(dt) if dt.is_datetime() => {
            // Excel serial day (1900 system): day 0 is 1899-12-30 given the 1900 leap bug.
            let days = dt.as_f64().floor();
            if !(1.0..=2_958_465.0).contains(&days) {
                return None;
            }
            let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?;
            let date = epoch.checked_add_days(chrono::Days::new(days as u64))?;
            Some((date, date.format("%d.%m.%Y").to_string()))
        }
        Data::DateTimeIso(s) => {
            let date = NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
            Some((date, s.clone()))
        }
        _ => None,
    }
}

/// A lek value rounded to 2 decimals, half away from zero, via the float's shortest repr.
fn lek_value(cell: &Data) -> Option<Decimal> {
    let exact = match cell {
        Data::Float(f) if f.is_finite() => Decimal::from_str(&format!("{f}")).ok()?,
        Data::Int(i) => Decimal::from(*i),
        Data::String(s) => Decimal::from_str(s.trim()).ok()?,
        _ => return None,
    };
    let mut rounded = exact.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    // Two decimals as the page prints them (`94.40`, not `94.4`): the figure is served as a
    // string, and an imported fixing must read like a scraped one.
    rounded.rescale(2);
    Some(rounded)
}

/// The code a workbook row is about: its last three-capital-letter token (`(JPY)`,
/// `… CNY`), else the euro/gold/silver by name (Albanian or English).
fn code_from_name(name: &str) -> Option<Currency> {
    let token = name
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',' | ';'))
        .rfind(|t| t.len() == 3 && t.bytes().all(|b| b.is_ascii_uppercase()));
    if let Some(t) = token {
        return Currency::new(t).ok();
    }
    let letters: String = name
        .chars()
        .filter(|c| c.is_alphabetic())
        .flat_map(char::to_lowercase)
        .collect();
    let code = if letters.starts_with("euro") {
        "EUR"
    } else if letters.starts_with("ari") || letters.starts_with("gold") {
        "XAU"
    } else if letters.starts_with("argjend") || letters.starts_with("silver") {
        "XAG"
    } else {
        return None;
    };
    Currency::new(code).ok()
}

/// 100 for JPY, HUF, RUB or a name mentioning 100 ("(per 100)"), else 1.
fn units_for(code: Currency, name: &str) -> u32 {
    let says_100 = name
        .split(|c: char| !c.is_ascii_digit())
        .any(|t| t == "100");
    if says_100 || matches!(code.as_str(), "JPY" | "HUF" | "RUB") {
        100
    } else {
        1
    }
}

/// The month an Albanian-named sheet covers (`Janar` … `Dhjetor`, any case, trailing text).
fn month_of_sheet(name: &str) -> Option<u32> {
    let n: String = name
        .trim()
        .chars()
        .map(|c| if c == 'ë' || c == 'Ë' { 'e' } else { c })
        .flat_map(char::to_lowercase)
        .take_while(|c| c.is_alphabetic())
        .collect();
    const MONTHS: [&str; 12] = [
        "janar", "shkurt", "mars", "prill", "maj", "qershor", "korrik", "gusht", "shtator",
        "tetor", "nentor", "dhjetor",
    ];
    MONTHS
        .iter()
        .position(|m| n == *m)
        .and_then(|i| u32::try_from(i + 1).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! dec {
        ($s:literal) => {
            Decimal::from_str_exact(stringify!($s)).unwrap()
        };
    }

    const WORKBOOK: &[u8] = include_bytes!("../../tests/fixtures/boa/archive-2024.xlsx");
    const INDEX: &str =
        include_str!("../../tests/fixtures/boa/exchange-rate-archive-index-en-2026-05-24.html");

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn cur(s: &str) -> Currency {
        Currency::new(s).unwrap()
    }

    /// Read once for all tests (calamine is slow in debug builds).
    static TABLES: std::sync::LazyLock<Vec<FixingTable>> =
        std::sync::LazyLock::new(|| read_workbook(WORKBOOK).unwrap());

    fn on(tables: &[FixingTable], d: NaiveDate) -> &FixingTable {
        tables.iter().find(|t| t.date == d).unwrap()
    }

    #[test]
    fn workbook_2024_dates() {
        let tables = &*TABLES;
        // BoA's business days of 2024 (246: the year's weekdays minus Albanian holidays).
        assert_eq!(tables.len(), 246);
        assert_eq!(tables.first().unwrap().date, date(2024, 1, 3));
        assert_eq!(tables.last().unwrap().date, date(2024, 12, 31));
        assert!(tables.windows(2).all(|w| w[0].date < w[1].date));
        for t in tables {
            assert_eq!(t.kind, TableKind::Main);
            assert_eq!(t.published_time, None);
            assert_eq!(t.date.year(), 2024);
            assert!(t.date.weekday().num_days_from_monday() < 5, "{}", t.date);
            assert_eq!(t.rates.len(), 16, "{}", t.date);
        }
        // "DT 11.01.2024" (no dot) and "DT. 16.01.2024" (space) are both read.
        on(tables, date(2024, 1, 11));
        on(tables, date(2024, 1, 16));
        // The stale helper block's 2019/2020 dates never leak in.
        assert!(tables.iter().all(|t| t.date.year() == 2024));
        // Per-month counts as in the workbook.
        let per_month: Vec<usize> = (1..=12)
            .map(|m| tables.iter().filter(|t| t.date.month() == m).count())
            .collect();
        assert_eq!(per_month, [21, 21, 18, 20, 21, 19, 23, 22, 20, 23, 18, 20]);
    }

    #[test]
    fn workbook_2024_values() {
        let tables = &*TABLES;
        let t = on(tables, date(2024, 1, 3));
        let codes: Vec<&str> = t.rates.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "JPY", "GBP", "CHF", "EUR", "XAU", "XAG", "AUD", "CAD", "SEK", "NOK", "DKK", "TRY",
                "USD", "SDR", "CNY", "CNH"
            ]
        );
        let get = |t: &FixingTable, c: &str| t.rate(cur(c)).unwrap().clone();
        assert_eq!(get(t, "EUR").published, dec!(103.24));
        assert_eq!(get(t, "EUR").units, 1);
        assert_eq!(get(t, "USD").published, dec!(94.40));
        // JPY: raw float 66.150000000000006, per 100 in the workbook as on the page.
        let jpy = get(t, "JPY");
        assert_eq!((jpy.units, jpy.published), (100, dec!(66.15)));
        assert_eq!(jpy.per_unit(), dec!(0.6615));
        assert_eq!(get(t, "XAU").published, dec!(193869.19));
        assert_eq!(get(t, "XAG").published, dec!(2208.02));
        assert_eq!(get(t, "SDR").iso_code().as_str(), "XDR");
        // 2 decimals, whatever the float noise, and always two as on the page.
        assert!(tables
            .iter()
            .flat_map(|t| &t.rates)
            .all(|r| r.published.scale() == 2));
        assert_eq!(get(t, "USD").published.to_string(), "94.40");

        let t = on(tables, date(2024, 6, 14));
        assert_eq!(get(t, "EUR").published, dec!(100.48));
        assert_eq!(get(t, "JPY").published, dec!(59.95));

        let t = on(tables, date(2024, 12, 31));
        assert_eq!(get(t, "EUR").published, dec!(98.15));
        assert_eq!(get(t, "JPY").published, dec!(60.11));
        assert_eq!(get(t, "USD").published, dec!(94.26));
        assert_eq!(get(t, "XAU").published, dec!(246189.21));
        assert_eq!(get(t, "SDR").published, dec!(122.93));
    }

    #[test]
    fn workbook_import_is_deterministic_and_clock_free() {
        // Same bytes, same result: nothing depends on the current date or time.
        assert_eq!(read_workbook(WORKBOOK).unwrap(), *TABLES);
    }

    #[test]
    fn not_a_workbook() {
        assert!(matches!(
            read_workbook(b"<html>nope</html>"),
            Err(ImportError::Open(_))
        ));
        assert!(matches!(read_workbook(&[]), Err(ImportError::Open(_))));
    }

    #[test]
    fn rounding_from_shortest_repr() {
        // The workbook's `66.150000000000006` is the f64 nearest 66.15.
        assert_eq!(lek_value(&Data::Float(66.15)), Some(dec!(66.15)));
        // Float noise beyond the shortest repr: 0.30000000000000004 → 0.30.
        assert_eq!(lek_value(&Data::Float(0.1 + 0.2)), Some(dec!(0.30)));
        assert_eq!(lek_value(&Data::Float(193869.19)), Some(dec!(193869.19)));
        // 1.005 is 1.00499999999999989… in binary; its shortest repr "1.005" rounds up.
        assert_eq!(lek_value(&Data::Float(1.005)), Some(dec!(1.01)));
        assert_eq!(lek_value(&Data::Float(2.675)), Some(dec!(2.68)));
        assert_eq!(lek_value(&Data::Int(14)), Some(dec!(14)));
        for (cell, text) in [
            (Data::Float(94.4), "94.40"),
            (Data::Int(14), "14.00"),
            (Data::String(" 13.3 ".into()), "13.30"),
            (Data::Float(0.1 + 0.2), "0.30"),
        ] {
            assert_eq!(
                lek_value(&cell).map(|d| d.to_string()).as_deref(),
                Some(text)
            );
        }
        assert_eq!(lek_value(&Data::String(" 13.3 ".into())), Some(dec!(13.3)));
        assert_eq!(lek_value(&Data::Float(f64::NAN)), None);
        assert_eq!(lek_value(&Data::String("n/a".into())), None);
    }

    #[test]
    fn header_dates_are_lenient() {
        let s = |t: &str| header_date(&Data::String(t.into())).map(|(d, _)| d);
        assert_eq!(s("    DT.19.01.2024"), Some(date(2024, 1, 19)));
        assert_eq!(s("    DT. 03.01.2024"), Some(date(2024, 1, 3)));
        assert_eq!(s("    DT 11.01.2024"), Some(date(2024, 1, 11)));
        assert_eq!(s("Dt.5.2.2024"), Some(date(2024, 2, 5)));
        assert_eq!(s("06.01.2020"), Some(date(2020, 1, 6)));
        assert_eq!(s("Janar' 2024"), None);
        assert_eq!(s("         KURSI  MESATAR"), None);
        assert_eq!(s("DT.31.02.2024"), None);
        assert_eq!(s("1.2.3.2024"), None);
        assert_eq!(s("31.12.24"), None);
    }

    #[test]
    fn names_to_codes() {
        let c = |n: &str| code_from_name(n).map(|c| c.to_string());
        assert_eq!(c("Jeni Japonez (per 100) (JPY)").as_deref(), Some("JPY"));
        assert_eq!(c("E U R O").as_deref(), Some("EUR"));
        assert_eq!(c("Ari (oz)").as_deref(), Some("XAU"));
        assert_eq!(c("Argjendi (oz)").as_deref(), Some("XAG"));
        assert_eq!(c("Spec. Drawing RIGHTS (SDR)").as_deref(), Some("SDR"));
        assert_eq!(c("Juani Kinez (onshore) CNY").as_deref(), Some("CNY"));
        assert_eq!(c("Monedhat e huaja"), None);
        assert_eq!(c("max"), None);
        assert_eq!(units_for(cur("JPY"), "Jeni Japonez (per 100) (JPY)"), 100);
        assert_eq!(units_for(cur("HUF"), "Forinta (HUF)"), 100);
        assert_eq!(units_for(cur("EUR"), "E U R O"), 1);
        assert_eq!(month_of_sheet("Nëntor"), Some(11));
        assert_eq!(month_of_sheet("Tetor "), Some(10));
        assert_eq!(month_of_sheet("Dhjetor"), Some(12));
        assert_eq!(month_of_sheet("Sheet1"), None);
    }

    #[test]
    fn archive_index_lists_every_workbook() {
        let base = url::Url::parse(
            "https://www.bankofalbania.org/Markets/Official_exchange_rate/Exchage_rate_archive/",
        )
        .unwrap();
        let links = parse_archive_index(INDEX, &base);
        assert_eq!(links.len(), 32);
        let years: Vec<i32> = links.iter().map(|l| l.year.unwrap()).collect();
        assert_eq!(years, (1994..=2025).rev().collect::<Vec<_>>());
        let y2024 = links.iter().find(|l| l.year == Some(2024)).unwrap();
        assert_eq!(
            y2024.url,
            "https://www.bankofalbania.org/rc/doc/Kursi_i_kembimit_2024_29746.xlsx"
        );
        assert_eq!(y2024.name, "Kursi_i_kembimit_2024_29746.xlsx");
        let y2012 = links.iter().find(|l| l.year == Some(2012)).unwrap();
        assert_eq!(y2012.name, "kursi_2012_10998.xls");
        // The year falls back to the file name when the link text has none.
        let html = r#"<a href="/rc/doc/KK_2021_20476.xlsx">download</a><a href="/x.pdf">pdf</a>
                      <a href="/rc/doc/KK_2021_20476.xlsx">again</a>"#;
        let links = parse_archive_index(html, &base);
        assert_eq!(
            links,
            [WorkbookLink {
                year: Some(2021),
                url: "https://www.bankofalbania.org/rc/doc/KK_2021_20476.xlsx".into(),
                name: "KK_2021_20476.xlsx".into(),
            }]
        );
    }
}
