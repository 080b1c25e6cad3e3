//! The fixing answers: the rates answer (`GET /api/v1/rates`, `rates`), a fetch, workbook
//! imports and the scrape log. The archive decides; this module only shapes the JSON.

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::{parse_date, ApiError, Ctx, OpResult};
use crate::archive::{self, FetchReport, ImportReport, NoFixing};
use crate::fixing::{FixingSource, FixingTable};
use crate::store::records::StoredTable;
use crate::store::TableOutcome;
use crate::time::calendar::rfc3339;

fn table_json(ctx: &Ctx, t: &StoredTable) -> Value {
    let tz = ctx.config().schedule.timezone;
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

fn source_json(s: &FixingSource) -> (Value, Value) {
    match s {
        FixingSource::Page { url, sha256, .. } => (json!(url), json!(sha256)),
        FixingSource::Workbook { file, sha256 } => {
            (json!(format!("workbook:{file}")), json!(sha256))
        }
    }
}

/// `GET /api/v1/rates?date=` and `rates [--date]`: the fixing in force (SPEC §5).
///
/// # Errors
/// 400 bad date, 422 no fixing in force (naming the nearest).
pub fn answer(ctx: &Ctx, date: Option<&str>) -> OpResult {
    let resolved = match date {
        None => ctx.archive.latest()?.ok_or_else(|| {
            ApiError::from(archive::Error::NoFixing {
                date: ctx.today(),
                why: NoFixing::Empty,
            })
        })?,
        Some(s) => ctx.archive.resolve(parse_date("date", s)?)?,
    };
    let (url, sha) = source_json(&resolved.main.source);
    let mut tables = vec![table_json(ctx, &resolved.main)];
    if let Some(m) = &resolved.minor {
        tables.push(table_json(ctx, m));
    }
    Ok(json!({
        "success": true,
        "date": resolved.date.to_string(),
        "source_url": url,
        "page_sha256": sha,
        "tables": tables,
    }))
}

fn fetch_json(r: &FetchReport) -> Value {
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
}

/// `fetch`: scrape BoA now (never a reused result) and store the fixing.
///
/// # Errors
/// 502 when BoA fails or the page is refused.
pub async fn fetch(ctx: &Ctx) -> OpResult {
    Ok(fetch_json(&ctx.archive.fetch(true).await?))
}

fn dates(d: Option<NaiveDate>) -> Value {
    json!(d.map(|d| d.to_string()))
}

fn import_json(r: &ImportReport) -> Value {
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
}

/// `import-archive FILE` (the CLI read the workbook): stores its tables.
///
/// # Errors
/// 400 for a bad table list or workbook.
pub async fn import_tables(ctx: &Ctx, file: &str, sha256: &str, tables: Value) -> OpResult {
    let tables: Vec<FixingTable> = serde_json::from_value(tables)
        .map_err(|e| ApiError::bad_request("bad_tables", format!("tables: {e}")))?;
    Ok(import_json(
        &ctx.archive.import_tables(file, sha256, &tables).await?,
    ))
}

/// `import-archive --list`: the yearly workbooks BoA's archive index links to.
///
/// # Errors
/// 502 when the index cannot be fetched.
pub async fn archive_index(ctx: &Ctx) -> OpResult {
    let links = ctx.archive.workbook_links().await?;
    Ok(json!({
        "success": true,
        "workbooks": links.iter().map(|l| json!({"year": l.year, "name": l.name, "url": l.url})).collect::<Vec<_>>(),
    }))
}

/// `import-archive --year YYYY`: downloads that year's workbook from BoA and imports it.
///
/// # Errors
/// 404 no workbook for the year; 502 BoA failure; 400 unreadable workbook.
pub async fn import_year(ctx: &Ctx, year: i32) -> OpResult {
    Ok(import_json(&ctx.archive.import_year(year).await?))
}

/// Recent scrape attempts (global log).
///
/// # Errors
/// Store failure.
pub fn scrapes(ctx: &Ctx, limit: usize) -> OpResult {
    let recs = ctx.archive.scrapes(limit)?;
    Ok(json!(recs
        .iter()
        .map(|r| json!({
            "at": rfc3339(r.at),
            "url": r.url,
            "success": r.success,
            "outcome": r.outcome,
            "fixing_dates": r.fixing_dates.iter().map(|(k, d)| json!({"table": k.as_str(), "date": d.to_string()})).collect::<Vec<_>>(),
        }))
        .collect::<Vec<_>>()))
}
