//! The fixing answers: the rates answer (`GET /api/v1/rates`, `rates`), a fetch, workbook
//! imports and the scrape log. The archive decides; this module only shapes the JSON.

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_date, ApiError, Ctx, OpResult};
use crate::archive::{self, FetchReport, ImportReport, NoFixing, Resolved};
use crate::boa::WorkbookLink;
use crate::fixing::{FixingSource, FixingTable};
use crate::store::records::{ScrapeRecord, StoredTable};
use crate::store::TableOutcome;
use crate::time::calendar::rfc3339;

/// The answer of `rates [--date]` (`GET /api/v1/rates`): the fixing in force. Fields of
/// every answer type here in alphabetical order: the order they have always had on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatesAnswer {
    /// The date asked for (or the newest fixing's).
    pub date: String,
    /// SHA-256 of the page (or workbook) the main table came from.
    pub page_sha256: String,
    /// The page's URL, or `workbook:FILE`.
    pub source_url: String,
    /// Always true.
    pub success: bool,
    /// The main table, then the minor one when there is one.
    pub tables: Vec<RatesTable>,
}

/// One table of [`RatesAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatesTable {
    /// The fixing date.
    pub date: String,
    /// Publication time, RFC 3339 with the Tirana offset; `null` when unknown.
    pub published_at: Option<String>,
    /// Rows in page order.
    pub rates: Vec<RateEntry>,
    /// 1 for the first version of the date, 2 after a revision, …
    pub revision: usize,
    /// `main` or `minor`.
    pub table: String,
}

/// One currency of a [`RatesTable`] (decimals as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateEntry {
    /// The code as BoA prints it.
    pub code: String,
    /// The ISO 4217 code.
    pub iso_code: String,
    /// Lek per unit.
    pub per_unit: String,
    /// Lek per `units`, as published.
    pub published: String,
    /// How many units the figure is for.
    pub units: u32,
}

impl RatesTable {
    /// A stored table, its publication time in `tz`.
    pub fn of(t: &StoredTable, tz: Tz) -> RatesTable {
        let published_at = t.table.published_time.and_then(|time| {
            t.table
                .date
                .and_time(time)
                .and_local_timezone(tz)
                .earliest()
                .map(|dt| {
                    dt.fixed_offset()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
        });
        RatesTable {
            date: t.table.date.to_string(),
            published_at,
            rates: t
                .table
                .rates
                .iter()
                .map(|r| RateEntry {
                    code: r.code.as_str().into(),
                    iso_code: r.iso_code().as_str().into(),
                    per_unit: r.per_unit().to_string(),
                    published: r.published.to_string(),
                    units: r.units,
                })
                .collect(),
            revision: t.previous.len() + 1,
            table: t.table.kind.as_str().into(),
        }
    }
}

/// The `source_url` and `page_sha256` of a source.
fn source(s: &FixingSource) -> (String, String) {
    match s {
        FixingSource::Page { url, sha256, .. } => (url.clone(), sha256.clone()),
        FixingSource::Workbook { file, sha256 } => (format!("workbook:{file}"), sha256.clone()),
    }
}

/// `GET /api/v1/rates?date=` and `rates [--date]`: the fixing in force (SPEC §5).
///
/// # Errors
/// 400 bad date, 422 no fixing in force (naming the nearest).
pub async fn answer(ctx: &Ctx, date: Option<&str>) -> OpResult<RatesAnswer> {
    let resolved = match date {
        None => ctx.archive.latest().await?.ok_or_else(|| {
            ApiError::from(archive::Error::NoFixing {
                date: ctx.today(),
                why: NoFixing::Empty,
            })
        })?,
        Some(s) => ctx.archive.resolve(parse_date("date", s)?).await?,
    };
    Ok(RatesAnswer::of(&resolved, ctx.config().schedule.timezone))
}

impl RatesAnswer {
    /// The answer for the fixing in force, publication times in `tz`.
    pub fn of(resolved: &Resolved, tz: Tz) -> RatesAnswer {
        let (source_url, page_sha256) = source(&resolved.main.source);
        let mut tables = vec![RatesTable::of(&resolved.main, tz)];
        if let Some(m) = &resolved.minor {
            tables.push(RatesTable::of(m, tz));
        }
        RatesAnswer {
            date: resolved.date.to_string(),
            page_sha256,
            source_url,
            success: true,
            tables,
        }
    }
}

/// The answer of `fetch`: what the scrape stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchAnswer {
    /// SHA-256 of the page.
    pub page_sha256: String,
    /// The page's URL.
    pub source_url: String,
    /// Always true.
    pub success: bool,
    /// Each table found.
    pub tables: Vec<FetchedTable>,
}

/// One table of a [`FetchAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedTable {
    /// Its fixing date.
    pub date: String,
    /// `new`, `unchanged`, `revised` or `skipped`.
    pub outcome: String,
    /// `main` or `minor`.
    pub table: String,
}

impl FetchAnswer {
    /// The answer for a fetch.
    pub fn of(r: &FetchReport) -> FetchAnswer {
        FetchAnswer {
            page_sha256: r.sha256.clone(),
            source_url: r.url.clone(),
            success: true,
            tables: r
                .tables
                .iter()
                .map(|(k, d, o)| FetchedTable {
                    date: d.to_string(),
                    outcome: match o {
                        TableOutcome::New => "new",
                        TableOutcome::Unchanged => "unchanged",
                        TableOutcome::Revised => "revised",
                        TableOutcome::Skipped => "skipped",
                    }
                    .into(),
                    table: k.as_str().into(),
                })
                .collect(),
        }
    }
}

/// `fetch`: scrape BoA now (never a reused result) and store the fixing.
///
/// # Errors
/// 502 when BoA fails or the page is refused.
pub async fn fetch(ctx: &Ctx) -> OpResult<FetchAnswer> {
    Ok(FetchAnswer::of(&ctx.archive.fetch(true).await?))
}

/// The answer of `import-archive FILE` and `import-archive --year YYYY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportAnswer {
    /// The workbook's file name.
    pub file: String,
    /// The first fixing date in it; `null` for none.
    pub first_date: Option<String>,
    /// Weekdays of its span without a fixing.
    pub holidays: Vec<String>,
    /// Fixings stored.
    pub imported: usize,
    /// The last fixing date in it; `null` for none.
    pub last_date: Option<String>,
    /// `imported N fixings from FILE (M already stored)`.
    pub message: String,
    /// Fixings already stored.
    pub skipped: usize,
    /// Always true.
    pub success: bool,
}

impl ImportAnswer {
    /// The answer for an import.
    pub fn of(r: &ImportReport) -> ImportAnswer {
        let date = |d: Option<NaiveDate>| d.map(|d| d.to_string());
        ImportAnswer {
            file: r.file.clone(),
            first_date: date(r.first_date),
            holidays: r.holidays.iter().map(|d| d.to_string()).collect(),
            imported: r.imported,
            last_date: date(r.last_date),
            message: format!(
                "imported {} fixings from {} ({} already stored)",
                r.imported, r.file, r.skipped
            ),
            skipped: r.skipped,
            success: true,
        }
    }
}

/// `import-archive FILE` (the CLI read the workbook): stores its tables.
///
/// # Errors
/// 400 for a bad table list or workbook.
pub async fn import_tables(
    ctx: &Ctx,
    file: &str,
    sha256: &str,
    tables: Value,
) -> OpResult<ImportAnswer> {
    let tables: Vec<FixingTable> = serde_json::from_value(tables)
        .map_err(|e| ApiError::bad_request("bad_tables", format!("tables: {e}")))?;
    Ok(ImportAnswer::of(
        &ctx.archive.import_tables(file, sha256, &tables).await?,
    ))
}

/// `import-archive --list`: the yearly workbooks BoA's archive index links to.
///
/// # Errors
/// 502 when the index cannot be fetched.
pub async fn archive_index(ctx: &Ctx) -> OpResult<ArchiveIndexAnswer> {
    Ok(ArchiveIndexAnswer::of(&ctx.archive.workbook_links().await?))
}

/// The answer of `import-archive --list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveIndexAnswer {
    /// Always true.
    pub success: bool,
    /// The workbooks in page order.
    pub workbooks: Vec<WorkbookEntry>,
}

/// One workbook of an [`ArchiveIndexAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkbookEntry {
    /// The file name as published.
    pub name: String,
    /// Absolute URL.
    pub url: String,
    /// The year it covers, when known.
    pub year: Option<i32>,
}

impl ArchiveIndexAnswer {
    /// The answer for the links of the index.
    pub fn of(links: &[WorkbookLink]) -> ArchiveIndexAnswer {
        ArchiveIndexAnswer {
            success: true,
            workbooks: links
                .iter()
                .map(|l| WorkbookEntry {
                    name: l.name.clone(),
                    url: l.url.clone(),
                    year: l.year,
                })
                .collect(),
        }
    }
}

/// `import-archive --year YYYY`: downloads that year's workbook from BoA and imports it.
///
/// # Errors
/// 404 no workbook for the year; 502 BoA failure; 400 unreadable workbook.
pub async fn import_year(ctx: &Ctx, year: i32) -> OpResult<ImportAnswer> {
    Ok(ImportAnswer::of(&ctx.archive.import_year(year).await?))
}

/// One scrape attempt of the global log (the `scrapes` answer is a list of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeEntry {
    /// RFC 3339 UTC.
    pub at: String,
    /// The fixing dates seen, per table.
    pub fixing_dates: Vec<FixingDate>,
    /// `new`, `unchanged`, `revised` or the error.
    pub outcome: String,
    /// Whether it succeeded.
    pub success: bool,
    /// The URL fetched.
    pub url: String,
}

/// A table's fixing date in a [`ScrapeEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixingDate {
    /// YYYY-MM-DD.
    pub date: String,
    /// `main` or `minor`.
    pub table: String,
}

impl ScrapeEntry {
    /// A scrape record as the log shows it.
    pub fn of(r: &ScrapeRecord) -> ScrapeEntry {
        ScrapeEntry {
            at: rfc3339(r.at),
            fixing_dates: r
                .fixing_dates
                .iter()
                .map(|(k, d)| FixingDate {
                    date: d.to_string(),
                    table: k.as_str().into(),
                })
                .collect(),
            outcome: r.outcome.clone(),
            success: r.success,
            url: r.url.clone(),
        }
    }
}

/// Recent scrape attempts (global log).
///
/// # Errors
/// Store failure.
pub async fn scrapes(ctx: &Ctx, limit: usize) -> OpResult<Vec<ScrapeEntry>> {
    Ok(ctx
        .archive
        .scrapes(limit)
        .await?
        .iter()
        .map(ScrapeEntry::of)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boa::{PublishedRate, TableKind};
    use crate::currency::Currency;
    use crate::ops::assert_wire_json;
    use chrono::{NaiveTime, TimeZone, Utc};
    use serde_json::json;

    // The answers as the code before the typed answers built them (verbatim but for the
    // zone, which the old code read from the context).
    fn old_table_json(tz: Tz, t: &StoredTable) -> Value {
        let published_at = t.table.published_time.and_then(|time| {
            t.table
                .date
                .and_time(time)
                .and_local_timezone(tz)
                .earliest()
                .map(|dt| {
                    dt.fixed_offset()
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                })
        });
        json!({
            "table": t.table.kind.as_str(),
            "date": t.table.date.to_string(),
            "published_at": published_at,
            "revision": t.previous.len() + 1,
            "rates": t.table.rates.iter().map(|r| json!({
                "code": r.code.as_str(),
                "iso_code": r.iso_code().as_str(),
                "units": r.units,
                "published": r.published.to_string(),
                "per_unit": r.per_unit().to_string(),
            })).collect::<Vec<_>>(),
        })
    }

    fn old_source_json(s: &FixingSource) -> (Value, Value) {
        match s {
            FixingSource::Page { url, sha256, .. } => (json!(url), json!(sha256)),
            FixingSource::Workbook { file, sha256 } => {
                (json!(format!("workbook:{file}")), json!(sha256))
            }
        }
    }

    fn old_answer(tz: Tz, resolved: &Resolved) -> Value {
        let (url, sha) = old_source_json(&resolved.main.source);
        let mut tables = vec![old_table_json(tz, &resolved.main)];
        if let Some(m) = &resolved.minor {
            tables.push(old_table_json(tz, m));
        }
        json!({
            "success": true,
            "date": resolved.date.to_string(),
            "source_url": url,
            "page_sha256": sha,
            "tables": tables,
        })
    }

    fn date(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 5, day).unwrap()
    }

    fn stored(kind: TableKind, source: FixingSource, revisions: usize) -> StoredTable {
        let rate = |code: &str, units: u32, published: &str| PublishedRate {
            code: Currency::new(code).unwrap(),
            units,
            published: published.parse().unwrap(),
        };
        let table = FixingTable {
            kind,
            date: date(22),
            published_time: (kind == TableKind::Main)
                .then(|| NaiveTime::from_hms_opt(12, 30, 0).unwrap()),
            rates: vec![
                rate("EUR", 1, "100.25"),
                rate("JPY", 100, "61.10"),
                rate("SDR", 1, "125.0"),
            ],
        };
        let at = Utc.with_ymd_and_hms(2026, 5, 22, 10, 31, 0).unwrap();
        StoredTable {
            previous: vec![(table.clone(), source.clone(), at); revisions],
            table,
            source,
            stored_at: at,
        }
    }

    #[test]
    fn the_rates_answer_is_the_old_json() {
        let tz = chrono_tz::Europe::Tirane;
        let page = FixingSource::Page {
            url: "https://www.bankofalbania.org/x?a=1&b=\"2\"".into(),
            sha256: "ab".repeat(32),
            fetched_at: Utc::now(),
        };
        let workbook = FixingSource::Workbook {
            file: "Kursi_2024.xlsx".into(),
            sha256: "cd".repeat(32),
        };
        for (source, minor) in [(page, true), (workbook, false)] {
            let resolved = Resolved {
                date: date(23),
                main: stored(TableKind::Main, source.clone(), 0),
                minor: minor.then(|| stored(TableKind::Minor, source, 2)),
            };
            assert_wire_json(&RatesAnswer::of(&resolved, tz), &old_answer(tz, &resolved));
        }
    }

    #[test]
    fn the_fixing_answers_are_the_old_json() {
        let report = FetchReport {
            tables: vec![
                (TableKind::Main, date(22), TableOutcome::New),
                (TableKind::Minor, date(21), TableOutcome::Revised),
                (TableKind::Main, date(20), TableOutcome::Unchanged),
                (TableKind::Minor, date(19), TableOutcome::Skipped),
            ],
            url: "https://www.bankofalbania.org/x".into(),
            sha256: "ab".repeat(32),
        };
        let old_fetch = |r: &FetchReport| {
            json!({
                "success": true,
                "source_url": r.url,
                "page_sha256": r.sha256,
                "tables": r.tables.iter().map(|(k, d, o)| json!({
                    "table": k.as_str(),
                    "date": d.to_string(),
                    "outcome": match o {
                        TableOutcome::New => "new",
                        TableOutcome::Unchanged => "unchanged",
                        TableOutcome::Revised => "revised",
                        TableOutcome::Skipped => "skipped",
                    },
                })).collect::<Vec<_>>(),
            })
        };
        assert_wire_json(&FetchAnswer::of(&report), &old_fetch(&report));
        let dates = |d: Option<NaiveDate>| json!(d.map(|d| d.to_string()));
        let old_import = |r: &ImportReport| {
            json!({
                "success": true,
                "file": r.file,
                "imported": r.imported,
                "skipped": r.skipped,
                "first_date": dates(r.first_date),
                "last_date": dates(r.last_date),
                "holidays": r.holidays.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "message": format!("imported {} fixings from {} ({} already stored)", r.imported, r.file, r.skipped),
            })
        };
        let full = ImportReport {
            file: "Kursi_2024.xlsx".into(),
            imported: 249,
            skipped: 1,
            first_date: Some(date(1)),
            last_date: Some(date(29)),
            holidays: vec![date(1), date(14)],
        };
        let empty = ImportReport {
            imported: 0,
            first_date: None,
            last_date: None,
            holidays: vec![],
            ..full.clone()
        };
        for r in [full, empty] {
            assert_wire_json(&ImportAnswer::of(&r), &old_import(&r));
        }
        let links = vec![
            WorkbookLink {
                year: Some(2024),
                url: "https://x/Kursi_2024.xlsx".into(),
                name: "Kursi_2024.xlsx".into(),
            },
            WorkbookLink {
                year: None,
                url: "https://x/old.xls".into(),
                name: "old.xls".into(),
            },
        ];
        let old_index = json!({
            "success": true,
            "workbooks": links.iter().map(|l| json!({"year": l.year, "name": l.name, "url": l.url})).collect::<Vec<_>>(),
        });
        assert_wire_json(&ArchiveIndexAnswer::of(&links), &old_index);
        let recs = [
            ScrapeRecord {
                at: Utc.with_ymd_and_hms(2026, 5, 22, 10, 31, 0).unwrap(),
                url: "https://x".into(),
                success: true,
                fixing_dates: vec![(TableKind::Main, date(22)), (TableKind::Minor, date(21))],
                outcome: "new".into(),
            },
            ScrapeRecord {
                at: Utc.with_ymd_and_hms(2026, 5, 22, 10, 0, 0).unwrap(),
                url: "https://x".into(),
                success: false,
                fixing_dates: vec![],
                outcome: "BoA answered 503".into(),
            },
        ];
        let old_scrapes = json!(recs
            .iter()
            .map(|r| json!({
                "at": rfc3339(r.at),
                "url": r.url,
                "success": r.success,
                "outcome": r.outcome,
                "fixing_dates": r.fixing_dates.iter().map(|(k, d)| json!({"table": k.as_str(), "date": d.to_string()})).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>());
        let typed: Vec<ScrapeEntry> = recs.iter().map(ScrapeEntry::of).collect();
        assert_wire_json(&typed, &old_scrapes);
    }
}
