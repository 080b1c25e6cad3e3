//! Reading the BoA official exchange rate page: HTML in, [`ParsedPage`] out, and the checks
//! a parsed page must pass before it is stored.
//!
//! Pure functions only: no I/O, no clock (the caller passes `today`). The parser reads the
//! page by *structure* and by ISO code, never by the words on it, so the English page
//! (`/Markets/Official_exchange_rate/`) and the Albanian one (`/Tregjet/Kursi_zyrtar_i_kembimit/`)
//! parse identically. It must never read the bid/ask table as a fixing.
//!
//! # How a page is read
//! - **Date blocks.** Every table is preceded by a "last update" block whose
//!   `span.text-primary.font-size-table` holds `<b>DD.MM.YYYY</b>` and `<em><b>HH:MM:SS</b></em>`.
//!   Walking the document in order, each table takes the nearest such block seen since the
//!   previous table. An official table without one is an error ([`ParseError::MissingDate`]).
//! - **Bid/ask table.** A table is two-sided (bid/ask, skipped) when its header has more than
//!   one row or it is 8 or more columns wide (name, code, then rate/change/arrow twice). The
//!   official tables have a one-row header and 5 columns; an extra or a missing column (4 to 7
//!   columns) still reads as official.
//! - **Columns.** The code column is the one where most rows hold a three-capital-letter code;
//!   the rate column is the first column after it in which at least half the rows hold a
//!   number (so an inserted empty or text column does not shift the rate). Rows are keyed by
//!   the code cell, never by the name.
//! - **Kind.** The official table holding USD or EUR is the main table; any other official
//!   table is the minor one. (Deciding by content rather than by position means a page that
//!   lost its main table can never have its minor table stored as the main fixing.) A page
//!   must have exactly one main table and may have at most one minor table.
//! - **Units.** 100 for JPY, HUF and RUB, and for any row whose name cell says `(100)`;
//!   otherwise 1. The page only says `(100)` for JPY, but HUF and RUB are also per 100.
//! - **Numbers.** `.` is the decimal point; `,` is accepted only as a thousands separator in
//!   well-formed groups of three (`1,234.56`); `95,40` is refused, never read as 95.40 or 9540.
//! - **Truncation.** A page whose source has more `<table` openings than `</table>` closings,
//!   or no `</html>` at all, is refused as truncated ([`ParseError::Truncated`]) before any
//!   table is read: an HTML parser would otherwise silently close a cut-off table and yield
//!   half of it.

use chrono::{NaiveDate, NaiveTime};
use rust_decimal::Decimal;
use scraper::{ElementRef, Html};
use std::fmt;
use std::str::FromStr;

use crate::currency::Currency;
use crate::fixing::{FixingTable, ParsedPage, PublishedRate, TableKind};

/// Codes BoA quotes per 100 units even when the page does not say so.
const PER_100: [&str; 3] = ["JPY", "HUF", "RUB"];

/// What is wrong with a rate cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateProblem {
    /// The cell is empty (or missing).
    Empty,
    /// The cell is not a decimal number (`abc`, `95,40`, `1.2.3`).
    NotANumber,
    /// The rate is zero.
    Zero,
    /// The rate is negative.
    Negative,
}

impl fmt::Display for RateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateProblem::Empty => "empty",
            RateProblem::NotANumber => "not a number",
            RateProblem::Zero => "zero",
            RateProblem::Negative => "negative",
        })
    }
}

/// Why a page could not be read as a fixing. Nothing of such a page may be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The page source ends early (a table is not closed, or there is no `</html>`).
    #[error("page is truncated: {0}")]
    Truncated(String),
    /// No table on the page looks like an official rate table.
    #[error("no recognisable official rate table on the page")]
    NoOfficialTable,
    /// Official tables were found, but none holds USD or EUR.
    #[error("no main rate table on the page (no official table holds USD or EUR)")]
    NoMainTable,
    /// Two official tables of the same kind.
    #[error("the page has more than one {} table", .0.as_str())]
    DuplicateTable(TableKind),
    /// An official table without a single rate row.
    #[error("{} table has no rows", .table.as_str())]
    EmptyTable {
        /// Which table.
        table: TableKind,
    },
    /// No "last update" block precedes the table.
    #[error("{} table has no \"last update\" date block before it", .table.as_str())]
    MissingDate {
        /// Which table.
        table: TableKind,
    },
    /// The date in the "last update" block is missing or not `DD.MM.YYYY`.
    #[error("{} table: fixing date {text:?} is not a DD.MM.YYYY date", .table.as_str())]
    BadDate {
        /// Which table.
        table: TableKind,
        /// The text found (empty when missing).
        text: String,
    },
    /// The time in the "last update" block is missing or not `HH:MM:SS`.
    #[error("{} table: publication time {text:?} is not a HH:MM:SS time", .table.as_str())]
    BadTime {
        /// Which table.
        table: TableKind,
        /// The text found (empty when missing).
        text: String,
    },
    /// A rate cell that is empty, not a number, zero or negative.
    #[error("{} table, {code}: rate {text:?} is {problem}", .table.as_str())]
    BadRate {
        /// Which table.
        table: TableKind,
        /// The row's code.
        code: Currency,
        /// The cell text as found.
        text: String,
        /// What is wrong with it.
        problem: RateProblem,
    },
    /// A code appears twice (in one table, or in both).
    #[error("{} table: {code} appears more than once on the page", .table.as_str())]
    DuplicateCode {
        /// The table where the second occurrence is.
        table: TableKind,
        /// The repeated code.
        code: Currency,
    },
    /// A cell in the code column that is not a three-letter code.
    #[error("{} table: {text:?} in the code column is not a currency code", .table.as_str())]
    BadCode {
        /// Which table.
        table: TableKind,
        /// The cell text.
        text: String,
    },
}

/// Why a well-formed page is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A table is dated after today (Europe/Tirane).
    #[error("{} table is dated {date}, after today ({today})", .table.as_str())]
    FutureDate {
        /// Which table.
        table: TableKind,
        /// Its date.
        date: NaiveDate,
        /// Today as the caller sees it.
        today: NaiveDate,
    },
    /// A rate moved more than the allowed percentage against the previous fixing.
    #[error("{code} moved {percent}% (from {old} to {new}), more than the {max}% allowed")]
    Jump {
        /// The currency (as the page prints it).
        code: Currency,
        /// The previous published figure.
        old: Decimal,
        /// The new published figure.
        new: Decimal,
        /// The move in percent of `old`, rounded to 2 decimals.
        percent: Decimal,
        /// The limit it broke.
        max: Decimal,
    },
}

/// Parses the official tables of a BoA exchange rate page (see the module docs for the rules).
///
/// # Errors
/// A [`ParseError`] when the page is truncated, has no recognisable main table, or any
/// official table has a missing date block, a bad date or time, a bad code or rate cell, or a
/// duplicate code. One bad row fails the whole page: a fixing is stored whole or not at all.
pub fn parse_page(html: &str) -> Result<ParsedPage, ParseError> {
    check_complete(html)?;
    let doc = Html::parse_document(html);

    let mut pending_block: Option<ElementRef<'_>> = None;
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for node in doc.tree.root().descendants() {
        let Some(el) = ElementRef::wrap(node) else {
            continue;
        };
        if is_date_block(el) {
            pending_block = Some(el);
        } else if el.value().name() == "table" {
            // Whatever the table is, the block before it is used up.
            let block = pending_block.take();
            let grid = Grid::of(el);
            if grid.is_two_sided() {
                continue;
            }
            let Some(code_col) = grid.code_column() else {
                continue; // not a rate table (e.g. a layout table): no code-shaped cell
            };
            candidates.push(Candidate {
                block,
                grid,
                code_col,
            });
        }
    }
    if candidates.is_empty() {
        return Err(ParseError::NoOfficialTable);
    }

    let mut main: Option<FixingTable> = None;
    let mut minor: Option<FixingTable> = None;
    let mut seen: Vec<Currency> = Vec::new();
    for cand in &candidates {
        let kind = if cand.holds_main_codes() {
            TableKind::Main
        } else {
            TableKind::Minor
        };
        let slot = match kind {
            TableKind::Main => &mut main,
            TableKind::Minor => &mut minor,
        };
        if slot.is_some() {
            return Err(ParseError::DuplicateTable(kind));
        }
        *slot = Some(cand.read(kind, &mut seen)?);
    }
    let Some(main) = main else {
        return Err(ParseError::NoMainTable);
    };
    let mut tables = vec![main];
    tables.extend(minor);
    Ok(ParsedPage { tables })
}

/// Checks a parsed page against today's date and the previous fixing.
///
/// - Any table dated after `today` is refused.
/// - For each rate where `previous(code)` gives a figure, the move `|new − old| / old × 100`
///   must not exceed `max_jump_percent`. `previous` must return the previous **published**
///   figure of that currency (per `units`, as the page prints it — e.g. JPY per 100), not the
///   per-unit rate: comparing like with like needs no unit conversion, and a change of units
///   on the page (a 100× move) is then caught as a jump for a human to look at. Codes are
///   passed as the page prints them (`SDR`, not `XDR`). A previous figure that is zero or
///   negative is ignored (there is nothing to compare with).
///
/// # Errors
/// The first [`ValidationError`] found (future date first, then jumps in page order).
pub fn validate(
    page: &ParsedPage,
    today: NaiveDate,
    previous: &dyn Fn(Currency) -> Option<Decimal>,
    max_jump_percent: Decimal,
) -> Result<(), ValidationError> {
    for table in &page.tables {
        if table.date > today {
            return Err(ValidationError::FutureDate {
                table: table.kind,
                date: table.date,
                today,
            });
        }
    }
    for table in &page.tables {
        for rate in &table.rates {
            let Some(old) = previous(rate.code) else {
                continue;
            };
            if old <= Decimal::ZERO {
                continue;
            }
            // Checked: a tiny previous figure must not overflow (and panic) the arithmetic;
            // an overflowing move is simply too large.
            let moved = (rate.published - old)
                .abs()
                .checked_div(old)
                .and_then(|r| r.checked_mul(Decimal::ONE_HUNDRED))
                .unwrap_or(Decimal::MAX);
            if moved > max_jump_percent {
                return Err(ValidationError::Jump {
                    code: rate.code,
                    old,
                    new: rate.published,
                    percent: moved.round_dp(2),
                    max: max_jump_percent,
                });
            }
        }
    }
    Ok(())
}

/// Refuses a page whose source was cut off (see the module docs).
fn check_complete(html: &str) -> Result<(), ParseError> {
    let lower = html.to_ascii_lowercase();
    let opens = lower
        .match_indices("<table")
        .filter(|(i, m)| {
            lower[i + m.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_whitespace() || c == '>')
        })
        .count();
    let closes = lower.matches("</table").count();
    if opens > closes {
        return Err(ParseError::Truncated(format!(
            "{opens} tables opened but only {closes} closed"
        )));
    }
    if !lower.contains("</html") {
        return Err(ParseError::Truncated("no closing </html> tag".into()));
    }
    Ok(())
}

/// A table that may be an official one, with the date block that preceded it.
struct Candidate<'a> {
    block: Option<ElementRef<'a>>,
    grid: Grid,
    code_col: usize,
}

impl Candidate<'_> {
    /// The main table is the one quoting the lek against USD or EUR.
    fn holds_main_codes(&self) -> bool {
        self.grid.rows.iter().any(|r| {
            r.get(self.code_col)
                .is_some_and(|c| c == "USD" || c == "EUR")
        })
    }

    /// Reads the whole table; `seen` collects codes across tables to refuse duplicates.
    fn read(&self, kind: TableKind, seen: &mut Vec<Currency>) -> Result<FixingTable, ParseError> {
        let block = self.block.ok_or(ParseError::MissingDate { table: kind })?;
        let (date, time) = read_block(block, kind)?;
        let rate_col = self.grid.rate_column(self.code_col);

        let mut rates = Vec::new();
        for row in &self.grid.rows {
            if row.iter().all(String::is_empty) {
                continue; // spacer row
            }
            let code_text = row.get(self.code_col).map(String::as_str).unwrap_or("");
            if !is_code_shape(code_text) {
                return Err(ParseError::BadCode {
                    table: kind,
                    text: code_text.to_string(),
                });
            }
            let code = Currency::new(code_text).map_err(|_| ParseError::BadCode {
                table: kind,
                text: code_text.to_string(),
            })?;
            if seen.contains(&code) {
                return Err(ParseError::DuplicateCode { table: kind, code });
            }
            seen.push(code);
            let rate_text = row.get(rate_col).map(String::as_str).unwrap_or("");
            let published = parse_amount(rate_text).map_err(|problem| ParseError::BadRate {
                table: kind,
                code,
                text: rate_text.to_string(),
                problem,
            })?;
            let says_100 = row[..self.code_col.min(row.len())]
                .iter()
                .any(|c| c.replace(' ', "").contains("(100)"));
            let units = if says_100 || PER_100.contains(&code.as_str()) {
                100
            } else {
                1
            };
            rates.push(PublishedRate {
                code,
                units,
                published,
            });
        }
        if rates.is_empty() {
            return Err(ParseError::EmptyTable { table: kind });
        }
        Ok(FixingTable {
            kind,
            date,
            published_time: Some(time),
            rates,
        })
    }
}

/// The cells of one table: header shape and the text of each data cell.
struct Grid {
    /// Rows in `thead`, or made only of `th` cells.
    header_rows: usize,
    /// Widest header row, counting `colspan`.
    header_width: usize,
    /// Data rows: normalised text of each cell, in order.
    rows: Vec<Vec<String>>,
}

impl Grid {
    fn of(table: ElementRef<'_>) -> Grid {
        let mut grid = Grid {
            header_rows: 0,
            header_width: 0,
            rows: Vec::new(),
        };
        for node in table.descendants() {
            let Some(tr) = ElementRef::wrap(node) else {
                continue;
            };
            if tr.value().name() != "tr" || enclosing_table(tr).map(|t| t.id()) != Some(table.id())
            {
                continue;
            }
            let cells: Vec<ElementRef<'_>> = tr
                .children()
                .filter_map(ElementRef::wrap)
                .filter(|c| matches!(c.value().name(), "td" | "th"))
                .collect();
            let in_thead = tr
                .ancestors()
                .filter_map(ElementRef::wrap)
                .take_while(|a| a.id() != table.id())
                .any(|a| a.value().name() == "thead");
            let all_th = !cells.is_empty() && cells.iter().all(|c| c.value().name() == "th");
            if in_thead || all_th {
                grid.header_rows += 1;
                let width = cells
                    .iter()
                    .map(|c| {
                        c.value()
                            .attr("colspan")
                            .and_then(|s| s.trim().parse::<usize>().ok())
                            .unwrap_or(1)
                    })
                    .sum();
                grid.header_width = grid.header_width.max(width);
            } else if !cells.is_empty() {
                grid.rows.push(cells.iter().map(|c| text_of(*c)).collect());
            }
        }
        grid
    }

    /// The bid/ask table: a two-level header, or two rate groups (8+ columns).
    fn is_two_sided(&self) -> bool {
        let data_width = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        self.header_rows > 1 || self.header_width.max(data_width) >= 8
    }

    /// The column where most rows hold a code-shaped cell (leftmost on a tie).
    fn code_column(&self) -> Option<usize> {
        let width = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut best: Option<(usize, usize)> = None;
        for col in 0..width {
            let hits = self
                .rows
                .iter()
                .filter(|r| r.get(col).is_some_and(|c| is_code_shape(c)))
                .count();
            if hits > 0 && best.is_none_or(|(_, b)| hits > b) {
                best = Some((col, hits));
            }
        }
        best.map(|(col, _)| col)
    }

    /// The first column after the code column where at least half the rows hold a number;
    /// the column right after the code when none does (its bad cells then fail the rows).
    fn rate_column(&self, code_col: usize) -> usize {
        let width = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let rows = self.rows.iter().filter(|r| !r.iter().all(String::is_empty));
        let total = rows.clone().count();
        (code_col + 1..width)
            .find(|&col| {
                let numeric = rows
                    .clone()
                    .filter(|r| r.get(col).is_some_and(|c| looks_numeric(c)))
                    .count();
                numeric > 0 && numeric * 2 >= total
            })
            .unwrap_or(code_col + 1)
    }
}

/// `span.text-primary.font-size-table` (any element with both classes).
fn is_date_block(el: ElementRef<'_>) -> bool {
    let mut primary = false;
    let mut size = false;
    for class in el.value().classes() {
        primary |= class == "text-primary";
        size |= class == "font-size-table";
    }
    primary && size
}

/// The nearest `table` element above `el`.
fn enclosing_table(el: ElementRef<'_>) -> Option<ElementRef<'_>> {
    el.ancestors()
        .filter_map(ElementRef::wrap)
        .find(|a| a.value().name() == "table")
}

/// Date (`<b>` outside `<em>`) and time (`<em>`) of a "last update" block.
fn read_block(
    block: ElementRef<'_>,
    table: TableKind,
) -> Result<(NaiveDate, NaiveTime), ParseError> {
    let descendants = || block.descendants().filter_map(ElementRef::wrap);
    let date_text = descendants()
        .find(|e| {
            e.value().name() == "b"
                && !e
                    .ancestors()
                    .filter_map(ElementRef::wrap)
                    .take_while(|a| a.id() != block.id())
                    .any(|a| a.value().name() == "em")
        })
        .map(text_of)
        .unwrap_or_default();
    let date =
        NaiveDate::parse_from_str(&date_text, "%d.%m.%Y").map_err(|_| ParseError::BadDate {
            table,
            text: date_text.clone(),
        })?;
    let time_text = descendants()
        .find(|e| e.value().name() == "em")
        .map(text_of)
        .unwrap_or_default();
    let time = NaiveTime::parse_from_str(&time_text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(&time_text, "%H:%M"))
        .map_err(|_| ParseError::BadTime {
            table,
            text: time_text.clone(),
        })?;
    Ok((date, time))
}

/// The text of an element, non-breaking spaces as spaces, whitespace collapsed, trimmed.
fn text_of(el: ElementRef<'_>) -> String {
    let raw: String = el.text().collect();
    raw.split(|c: char| c.is_whitespace() || c == '\u{a0}')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exactly three ASCII capital letters, as BoA prints codes.
fn is_code_shape(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Any number, including zero and negative ones (used to locate the rate column).
fn looks_numeric(s: &str) -> bool {
    matches!(
        parse_amount(s),
        Ok(_) | Err(RateProblem::Zero | RateProblem::Negative)
    )
}

/// Parses a published rate: optional sign, digits with optional well-formed `,` thousands
/// groups, optional `.` and decimals. Must be positive.
fn parse_amount(text: &str) -> Result<Decimal, RateProblem> {
    let t = text.trim();
    if t.is_empty() {
        return Err(RateProblem::Empty);
    }
    let (negative, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let int_digits: String = if int_part.contains(',') {
        let mut groups = int_part.split(',');
        let first = groups.next().unwrap_or("");
        if !all_digits(first) || first.len() > 3 {
            return Err(RateProblem::NotANumber);
        }
        let mut digits = first.to_string();
        for g in groups {
            if g.len() != 3 || !all_digits(g) {
                return Err(RateProblem::NotANumber);
            }
            digits.push_str(g);
        }
        digits
    } else if all_digits(int_part) {
        int_part.to_string()
    } else {
        return Err(RateProblem::NotANumber);
    };
    let normalized = match frac_part {
        Some(f) if all_digits(f) => format!("{int_digits}.{f}"),
        Some(_) => return Err(RateProblem::NotANumber),
        None => int_digits,
    };
    let value = Decimal::from_str(&normalized).map_err(|_| RateProblem::NotANumber)?;
    if value.is_zero() {
        Err(RateProblem::Zero)
    } else if negative {
        Err(RateProblem::Negative)
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact decimal from a literal, keeping its scale (`dec!(95.40)` prints `95.40`).
    macro_rules! dec {
        ($s:literal) => {
            Decimal::from_str_exact(stringify!($s)).unwrap()
        };
    }

    const FRIDAY: &str = include_str!("../../tests/fixtures/boa/official-rate-en-2026-05-22.html");
    const SUNDAY: &str = include_str!(
        "../../tests/fixtures/boa/official-rate-en-2026-05-24-sunday-shows-2026-05-22.html"
    );

    fn cur(s: &str) -> Currency {
        Currency::new(s).unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn time(h: u32, m: u32, s: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, s).unwrap()
    }

    /// Replaces exactly one occurrence (so a test edit cannot silently miss or over-reach).
    fn replace_once(html: &str, from: &str, to: &str) -> String {
        assert_eq!(html.matches(from).count(), 1, "{from:?} must occur once");
        html.replacen(from, to, 1)
    }

    /// The main table's source, from its "Last update" block to `</TABLE>`.
    fn main_table_source(html: &str) -> &str {
        let start = html.find("<div class=\"mb-2\">").unwrap();
        let end = start + html[start..].find("</TABLE>").unwrap() + "</TABLE>".len();
        &html[start..end]
    }

    /// The source of one `<TR>…</TR>` row of the main table, by its code cell.
    fn row_source<'a>(html: &'a str, code: &str) -> &'a str {
        let table = main_table_source(html);
        let at = table.find(&format!("<TD nowrap>{code}</TD>")).unwrap();
        let start = table[..at].rfind("<TR>").unwrap();
        let end = at + table[at..].find("</TR>").unwrap() + "</TR>".len();
        &table[start..end]
    }

    fn with_rate(html: &str, code: &str, old: &str, new: &str) -> String {
        let row = row_source(html, code);
        let from = format!("nowrap>{old}</td>");
        let new_row = row.replacen(&from, &format!("nowrap>{new}</td>"), 1);
        assert_ne!(row, new_row);
        replace_once(html, row, &new_row)
    }

    #[test]
    fn friday_fixture_main_table() {
        let page = parse_page(FRIDAY).unwrap();
        assert_eq!(page.tables.len(), 2);
        let main = &page.tables[0];
        assert_eq!(main.kind, TableKind::Main);
        assert_eq!(main.date, date(2026, 5, 22));
        assert_eq!(main.published_time, Some(time(12, 12, 23)));
        let codes: Vec<&str> = main.rates.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "USD", "EUR", "GBP", "CHF", "JPY", "AUD", "CAD", "SEK", "NOK", "DKK", "SDR", "XAU",
                "XAG", "CNY", "CNH", "TRY"
            ]
        );
        let get = |c: &str| main.rate(cur(c)).unwrap().clone();
        assert_eq!(get("USD").published, dec!(82.24));
        assert_eq!(get("USD").units, 1);
        assert_eq!(get("EUR").published, dec!(95.40));
        assert_eq!(get("EUR").published.to_string(), "95.40");
        assert_eq!(get("GBP").published, dec!(110.38));
        assert_eq!(get("CHF").published, dec!(104.60));
        assert_eq!(get("JPY").published, dec!(51.68));
        assert_eq!(get("JPY").units, 100);
        assert_eq!(get("JPY").per_unit(), dec!(0.5168));
        assert_eq!(get("SDR").published, dec!(112.40));
        assert_eq!(get("SDR").iso_code().as_str(), "XDR");
        assert_eq!(main.rate(cur("XDR")).unwrap().code.as_str(), "SDR");
        assert_eq!(get("XAU").published, dec!(371473.97));
        assert_eq!(get("XAU").units, 1);
        assert_eq!(get("TRY").published, dec!(1.80));
        // Nothing from the bid/ask table (USD bid 81.80, ask 82.64) leaks in.
        assert!(main.rates.iter().all(|r| r.published != dec!(81.80)));
    }

    #[test]
    fn friday_fixture_minor_table() {
        let page = parse_page(FRIDAY).unwrap();
        let minor = &page.tables[1];
        assert_eq!(minor.kind, TableKind::Minor);
        assert_eq!(minor.date, date(2026, 5, 15));
        assert_eq!(minor.published_time, Some(time(12, 25, 37)));
        let rows: Vec<(String, u32, Decimal)> = minor
            .rates
            .iter()
            .map(|r| (r.code.to_string(), r.units, r.published))
            .collect();
        assert_eq!(
            rows,
            [
                ("HUF".to_string(), 100, dec!(26.47)),
                ("RUB".to_string(), 100, dec!(111.96)),
                ("CZK".to_string(), 1, dec!(3.92)),
                ("MKD".to_string(), 1, dec!(1.55)),
            ]
        );
    }

    #[test]
    fn sunday_capture_parses_to_the_same_data() {
        assert_ne!(FRIDAY, SUNDAY, "the captures differ in session tokens");
        assert_eq!(parse_page(SUNDAY).unwrap(), parse_page(FRIDAY).unwrap());
    }

    #[test]
    fn albanian_labels_parse_identically() {
        let mut sq = FRIDAY.to_string();
        for (en, al) in [
            ("Last update:", "Përditësimi i fundit:"),
            ("Main Currency", "Monedhat kryesore"),
            (
                "Albanian Lek per  Foreign Currency Unit",
                "Lekë për njësi të monedhës së huaj",
            ),
            (">Currency<", ">Monedha<"),
            ("Average purchase price (Bid)", "Çmimi mesatar i blerjes"),
            ("Average sales price (Ask)", "Çmimi mesatar i shitjes"),
            ("US Dollar", "Dollari amerikan"),
            ("Euro", "Euro"),
            ("Great Britain Pound", "Stërlina britanike"),
            ("Swiss Franc", "Franga zvicerane"),
            ("Japanese Yen   (100)", "Jeni japonez   (100)"),
            ("Special Drawing Rights", "Të drejtat speciale të tërheqjes"),
            ("Gold(OZ 1)", "Ari(OZ 1)"),
            ("Silver(OZ 1)", "Argjendi(OZ 1)"),
            ("Hungarian Forint", "Forinta hungareze"),
            ("Russian Ruble", "Rubla ruse"),
        ] {
            assert!(sq.contains(en), "{en}");
            sq = sq.replace(en, al);
        }
        assert!(!sq.contains("Last update"));
        assert_eq!(parse_page(&sq).unwrap(), parse_page(FRIDAY).unwrap());
    }

    #[test]
    fn extra_column_is_tolerated() {
        // A trailing note column in every row of both official tables…
        let mut html = FRIDAY.replace(
            "class=\"arrow-up\"><i class=\"fa fa-arrow-up text-success\" aria-hidden=\"true\"></i></td>",
            "class=\"arrow-up\"><i class=\"fa fa-arrow-up text-success\" aria-hidden=\"true\"></i></td><td>note 7</td>",
        );
        // …and a text column inserted between code and rate in every row of the main table.
        let main = main_table_source(&html).to_string();
        let mut widened = main.clone();
        for rate in &parse_page(FRIDAY).unwrap().tables[0].rates {
            let code = format!("<TD nowrap>{}</TD>", rate.code);
            widened = widened.replacen(&code, &format!("{code}<td>n/a</td>"), 1);
        }
        html = replace_once(&html, &main, &widened);
        assert_eq!(parse_page(&html).unwrap(), parse_page(FRIDAY).unwrap());
    }

    #[test]
    fn missing_change_column_is_tolerated() {
        // Remove the change cell (the second numeric cell) of every official row.
        let mut out = String::new();
        let mut rest = FRIDAY;
        let bidask = FRIDAY.rfind("<div class=\"mb-2\">").unwrap();
        let mut offset = 0;
        while let Some(at) = rest.find("<td align=\"right\" nowrap>") {
            let abs = offset + at;
            let end = at + rest[at..].find("</td>").unwrap() + "</td>".len();
            out.push_str(&rest[..at]);
            let cell = &rest[at..end];
            let is_change = {
                let inner = &cell["<td align=\"right\" nowrap>".len()..cell.len() - 5];
                inner.starts_with('+') || inner.starts_with('-') || inner == "0.00"
            };
            if !(is_change && abs < bidask) {
                out.push_str(cell);
            }
            offset += end;
            rest = &rest[end..];
        }
        out.push_str(rest);
        let html = out;
        assert!(!main_table_source(&html).contains("+0.26"));
        assert_eq!(parse_page(&html).unwrap(), parse_page(FRIDAY).unwrap());
    }

    #[test]
    fn layout_table_around_everything_is_harmless() {
        let start = FRIDAY.find("<div class=\"mb-2\">").unwrap();
        let end = FRIDAY.rfind("</TABLE>").unwrap() + "</TABLE>".len();
        let html = format!(
            "{}<table class=\"layout\"><tr><td>{}</td></tr></table>{}",
            &FRIDAY[..start],
            &FRIDAY[start..end],
            &FRIDAY[end..]
        );
        assert_eq!(parse_page(&html).unwrap(), parse_page(FRIDAY).unwrap());
    }

    #[test]
    fn rows_reordered() {
        let usd = row_source(FRIDAY, "USD");
        let try_row = row_source(FRIDAY, "TRY");
        let html = FRIDAY
            .replacen(usd, "@@USD@@", 1)
            .replacen(try_row, usd, 1)
            .replacen("@@USD@@", try_row, 1);
        let page = parse_page(&html).unwrap();
        let main = &page.tables[0];
        assert_eq!(main.rates[0].code.as_str(), "TRY");
        assert_eq!(main.rates[15].code.as_str(), "USD");
        assert_eq!(main.rate(cur("USD")).unwrap().published, dec!(82.24));
        assert_eq!(main.rate(cur("TRY")).unwrap().published, dec!(1.80));
        assert_eq!(main.rates.len(), 16);
    }

    #[test]
    fn new_currency_added() {
        let try_row = row_source(FRIDAY, "TRY");
        let pln = try_row
            .replace("Turkish Lira", "Polish Zloty")
            .replace(">TRY<", ">PLN<")
            .replace(">1.80<", ">22.41<");
        let html = replace_once(FRIDAY, try_row, &format!("{try_row}\n{pln}"));
        let page = parse_page(&html).unwrap();
        let main = &page.tables[0];
        assert_eq!(main.rates.len(), 17);
        let p = main.rate(cur("PLN")).unwrap();
        assert_eq!((p.units, p.published), (1, dec!(22.41)));
    }

    #[test]
    fn currency_removed() {
        let html = replace_once(FRIDAY, row_source(FRIDAY, "CAD"), "");
        let page = parse_page(&html).unwrap();
        assert_eq!(page.tables[0].rates.len(), 15);
        assert!(page.tables[0].rate(cur("CAD")).is_none());
    }

    #[test]
    fn name_saying_100_sets_units() {
        let html = FRIDAY.replace("Swiss Franc", "Swiss Franc (100)");
        let page = parse_page(&html).unwrap();
        assert_eq!(page.tables[0].rate(cur("CHF")).unwrap().units, 100);
        // HUF and RUB are per 100 though the page does not say so; CZK/MKD are not.
        let minor = &page.tables[1];
        assert_eq!(minor.rate(cur("HUF")).unwrap().units, 100);
        assert_eq!(minor.rate(cur("CZK")).unwrap().units, 1);
    }

    #[test]
    fn bad_rates_are_refused_with_table_code_and_text() {
        for (text, problem) in [
            ("0.00", RateProblem::Zero),
            ("-1.00", RateProblem::Negative),
            ("", RateProblem::Empty),
            ("abc", RateProblem::NotANumber),
            ("95,40", RateProblem::NotANumber),
            ("1.2.3", RateProblem::NotANumber),
        ] {
            let html = with_rate(FRIDAY, "EUR", "95.40", text);
            let err = parse_page(&html).unwrap_err();
            assert_eq!(
                err,
                ParseError::BadRate {
                    table: TableKind::Main,
                    code: cur("EUR"),
                    text: text.to_string(),
                    problem,
                },
                "{text:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("main") && msg.contains("EUR"), "{msg}");
        }
        // In the minor table too.
        let html = replace_once(FRIDAY, "nowrap>3.92</td>", "nowrap>n/a</td>");
        assert!(matches!(
            parse_page(&html).unwrap_err(),
            ParseError::BadRate { table: TableKind::Minor, code, .. } if code.as_str() == "CZK"
        ));
    }

    #[test]
    fn thousands_separator() {
        let html = with_rate(FRIDAY, "XAU", "371473.97", "371,473.97");
        let page = parse_page(&html).unwrap();
        assert_eq!(
            page.tables[0].rate(cur("XAU")).unwrap().published,
            dec!(371473.97)
        );
        let html = with_rate(FRIDAY, "EUR", "95.40", "1,234.56");
        let page = parse_page(&html).unwrap();
        assert_eq!(
            page.tables[0].rate(cur("EUR")).unwrap().published,
            dec!(1234.56)
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("82.24"), Ok(dec!(82.24)));
        assert_eq!(parse_amount(" 1,234,567.5 "), Ok(dec!(1234567.5)));
        assert_eq!(parse_amount("+7"), Ok(dec!(7)));
        assert_eq!(parse_amount("-0.00"), Err(RateProblem::Zero));
        assert_eq!(parse_amount("1,23.4"), Err(RateProblem::NotANumber));
        assert_eq!(parse_amount("1234,567.0"), Err(RateProblem::NotANumber));
        assert_eq!(parse_amount("12."), Err(RateProblem::NotANumber));
        assert_eq!(parse_amount(".5"), Err(RateProblem::NotANumber));
        assert_eq!(parse_amount("1e3"), Err(RateProblem::NotANumber));
        assert_eq!(parse_amount("-"), Err(RateProblem::NotANumber));
    }

    #[test]
    fn duplicate_code() {
        let html = replace_once(FRIDAY, "<TD nowrap>GBP</TD>", "<TD nowrap>EUR</TD>");
        assert_eq!(
            parse_page(&html).unwrap_err(),
            ParseError::DuplicateCode {
                table: TableKind::Main,
                code: cur("EUR")
            }
        );
        // Across tables: a minor row repeating a main code.
        let html = replace_once(FRIDAY, "<TD nowrap>MKD</TD>", "<TD nowrap>CHF</TD>");
        assert_eq!(
            parse_page(&html).unwrap_err(),
            ParseError::DuplicateCode {
                table: TableKind::Minor,
                code: cur("CHF")
            }
        );
    }

    #[test]
    fn unknown_code_shape() {
        let html = replace_once(FRIDAY, "<TD nowrap>CHF</TD>", "<TD nowrap>SFr.</TD>");
        assert_eq!(
            parse_page(&html).unwrap_err(),
            ParseError::BadCode {
                table: TableKind::Main,
                text: "SFr.".into()
            }
        );
        let html = replace_once(FRIDAY, "<TD nowrap>CZK</TD>", "<TD nowrap>czk</TD>");
        assert!(matches!(
            parse_page(&html).unwrap_err(),
            ParseError::BadCode {
                table: TableKind::Minor,
                ..
            }
        ));
    }

    #[test]
    fn no_tables_at_all() {
        let mut html = FRIDAY.to_string();
        while let Some(start) = html.find("<TABLE") {
            let end = start + html[start..].find("</TABLE>").unwrap() + "</TABLE>".len();
            html.replace_range(start..end, "");
        }
        assert_eq!(parse_page(&html).unwrap_err(), ParseError::NoOfficialTable);
        assert_eq!(
            parse_page("<html><body><p>Service unavailable</p></body></html>").unwrap_err(),
            ParseError::NoOfficialTable
        );
    }

    #[test]
    fn only_bid_ask_table_is_not_a_fixing() {
        // Drop both official tables; the bid/ask table alone must not be read.
        let mut html = FRIDAY.to_string();
        for _ in 0..2 {
            let start = html.find("<div class=\"mb-2\">").unwrap();
            let end = start + html[start..].find("</TABLE>").unwrap() + "</TABLE>".len();
            html.replace_range(start..end, "");
        }
        assert!(html.contains("Average purchase price (Bid)"));
        assert_eq!(parse_page(&html).unwrap_err(), ParseError::NoOfficialTable);
    }

    #[test]
    fn main_table_required() {
        let html = replace_once(FRIDAY, main_table_source(FRIDAY), "");
        assert_eq!(parse_page(&html).unwrap_err(), ParseError::NoMainTable);
    }

    #[test]
    fn truncated_page_is_refused() {
        let cut = FRIDAY.find("<TD nowrap>JPY</TD>").unwrap();
        let err = parse_page(&FRIDAY[..cut]).unwrap_err();
        assert!(matches!(err, ParseError::Truncated(_)), "{err}");
        // Cut right after the main table: tables are closed but the page is not.
        let end = FRIDAY.find("</TABLE>").unwrap() + "</TABLE>".len();
        let err = parse_page(&FRIDAY[..end]).unwrap_err();
        assert_eq!(err, ParseError::Truncated("no closing </html> tag".into()));
    }

    #[test]
    fn missing_or_bad_date_block() {
        let block = "<div class=\"mb-2\"><span class=\"font-weight-normal\">Last update:</span>&nbsp;<span class=\"text-primary font-size-table\"><b>15.05.2026</b>&nbsp;&nbsp;<em><b>12:25:37</b></em></span></div>";
        let html = replace_once(FRIDAY, block, "");
        assert_eq!(
            parse_page(&html).unwrap_err(),
            ParseError::MissingDate {
                table: TableKind::Minor
            }
        );
        let html = replace_once(FRIDAY, "<b>15.05.2026</b>", "<b>15/05/2026</b>");
        assert_eq!(
            parse_page(&html).unwrap_err(),
            ParseError::BadDate {
                table: TableKind::Minor,
                text: "15/05/2026".into()
            }
        );
        let html = replace_once(FRIDAY, "<b>15.05.2026</b>", "");
        assert!(matches!(
            parse_page(&html).unwrap_err(),
            ParseError::BadDate { table: TableKind::Minor, text } if text.is_empty()
        ));
        let html = replace_once(FRIDAY, "<b>12:25:37</b>", "<b>25:61:00</b>");
        assert_eq!(
            parse_page(&html).unwrap_err(),
            ParseError::BadTime {
                table: TableKind::Minor,
                text: "25:61:00".into()
            }
        );
        let html = replace_once(FRIDAY, "<em><b>12:25:37</b></em>", "");
        assert!(matches!(
            parse_page(&html).unwrap_err(),
            ParseError::BadTime {
                table: TableKind::Minor,
                ..
            }
        ));
    }

    #[test]
    fn validate_accepts_the_real_page() {
        let page = parse_page(FRIDAY).unwrap();
        let prev = |c: Currency| match c.as_str() {
            "EUR" => Some(dec!(95.35)),
            "JPY" => Some(dec!(51.59)),
            _ => None,
        };
        assert_eq!(validate(&page, date(2026, 5, 22), &prev, dec!(20)), Ok(()));
        assert_eq!(
            validate(&page, date(2026, 5, 24), &|_| None, dec!(20)),
            Ok(())
        );
    }

    #[test]
    fn validate_refuses_future_date() {
        let page = parse_page(FRIDAY).unwrap();
        assert_eq!(
            validate(&page, date(2026, 5, 21), &|_| None, dec!(20)),
            Err(ValidationError::FutureDate {
                table: TableKind::Main,
                date: date(2026, 5, 22),
                today: date(2026, 5, 21)
            })
        );
    }

    #[test]
    fn validate_refuses_jumps_over_the_limit() {
        let page = parse_page(FRIDAY).unwrap();
        // 95.40 vs 79.50 is a 20.00% move: allowed at exactly the limit.
        let at_limit = |c: Currency| (c.as_str() == "EUR").then_some(dec!(79.50));
        assert_eq!(
            validate(&page, date(2026, 5, 22), &at_limit, dec!(20)),
            Ok(())
        );
        // JPY compared published-to-published (per 100): 51.68 vs 40.00 is +29.2%.
        let jpy = |c: Currency| (c.as_str() == "JPY").then_some(dec!(40.00));
        let err = validate(&page, date(2026, 5, 22), &jpy, dec!(20)).unwrap_err();
        assert_eq!(
            err,
            ValidationError::Jump {
                code: cur("JPY"),
                old: dec!(40.00),
                new: dec!(51.68),
                percent: dec!(29.20),
                max: dec!(20),
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("JPY")
                && msg.contains("40.00")
                && msg.contains("51.68")
                && msg.contains("29.20"),
            "{msg}"
        );
        // A previous per-unit figure would look like a 100x jump: units changes are caught.
        let per_unit = |c: Currency| (c.as_str() == "JPY").then_some(dec!(0.5168));
        assert!(validate(&page, date(2026, 5, 22), &per_unit, dec!(20)).is_err());
        // Falls too, and in the minor table.
        let huf = |c: Currency| (c.as_str() == "HUF").then_some(dec!(40));
        assert!(matches!(
            validate(&page, date(2026, 5, 22), &huf, dec!(20)),
            Err(ValidationError::Jump { code, .. }) if code.as_str() == "HUF"
        ));
        // A tiny previous figure cannot overflow the arithmetic.
        let tiny = |c: Currency| (c.as_str() == "XAU").then_some(Decimal::new(1, 28));
        assert!(matches!(
            validate(&page, date(2026, 5, 22), &tiny, dec!(20)),
            Err(ValidationError::Jump { code, .. }) if code.as_str() == "XAU"
        ));
        // A nonsensical previous figure is ignored.
        let zero = |_: Currency| Some(Decimal::ZERO);
        assert_eq!(validate(&page, date(2026, 5, 22), &zero, dec!(20)), Ok(()));
    }
}
