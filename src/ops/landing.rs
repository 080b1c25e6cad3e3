//! The landing page's data: the fixing in force today (each official table with the change
//! against its previous fixing) and the EUR and USD series over the last 90 days of the
//! archive. Plain values only; the HTML is [`crate::http::pages::index`]'s business.

use chrono::{Duration, NaiveDate, NaiveTime};
use rust_decimal::Decimal;

use super::ApiError;

use crate::config::Enrollment;
use crate::currency::Currency;
use crate::fixing::TableKind;
use crate::store::{self, Store};

/// How many calendar days of the archive the chart covers (ending at the newest fixing).
pub const SERIES_DAYS: i64 = 90;

/// Everything the landing page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingData {
    /// Whether anyone may start a connection (the Connect button) or only invitees.
    pub enrollment_open: bool,
    /// The tables in force today, main first; empty when no fixing is stored.
    pub tables: Vec<LandingTable>,
    /// One point per stored main fixing in the chart's window, oldest first.
    pub series: Vec<SeriesPoint>,
}

/// One official table as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingTable {
    /// Main or minor.
    pub kind: TableKind,
    /// The fixing date printed above the table.
    pub date: NaiveDate,
    /// Publication time (Tirana local), when known (imported history has none).
    pub published_time: Option<NaiveTime>,
    /// The date of the fixing the change column compares with.
    pub previous_date: Option<NaiveDate>,
    /// Rows in page order.
    pub rows: Vec<LandingRow>,
}

/// One currency of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingRow {
    /// The code as BoA prints it (`SDR`).
    pub code: Currency,
    /// How many units the figure is for (100 for JPY, HUF, RUB).
    pub units: u32,
    /// Lek per `units`, exactly as published.
    pub published: Decimal,
    /// `published` minus the previous fixing's figure (same units); `None` without one.
    pub change: Option<Decimal>,
}

/// EUR and USD (lek per unit) on one fixing date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    /// The fixing date.
    pub date: NaiveDate,
    /// Lek per euro, if the table has it.
    pub eur: Option<Decimal>,
    /// Lek per US dollar, if the table has it.
    pub usd: Option<Decimal>,
}

/// The landing page's data for now.
///
/// # Errors
/// A store failure (500).
pub async fn landing(ctx: &super::Ctx) -> Result<LandingData, ApiError> {
    let open = ctx.config().server.enrollment == Enrollment::Open;
    Ok(gather(&ctx.store, ctx.today(), open).await?)
}

/// The landing page's data from a store, as of `today`.
///
/// # Errors
/// sled or decode failure.
pub async fn gather(
    store: &Store,
    today: NaiveDate,
    enrollment_open: bool,
) -> Result<LandingData, store::Error> {
    let mut tables = Vec::new();
    for kind in [TableKind::Main, TableKind::Minor] {
        let Some(current) = store.table_on_or_before(kind, today).await? else {
            continue;
        };
        let t = current.table;
        let previous = match t.date.pred_opt() {
            Some(d) => store.table_on_or_before(kind, d).await?.map(|p| p.table),
            None => None,
        };
        let rows = t
            .rates
            .iter()
            .map(|r| LandingRow {
                code: r.code,
                units: r.units,
                published: r.published,
                change: previous
                    .as_ref()
                    .and_then(|p| p.rate(r.code))
                    .filter(|p| p.units == r.units)
                    .map(|p| r.published - p.published),
            })
            .collect();
        tables.push(LandingTable {
            kind,
            date: t.date,
            published_time: t.published_time,
            previous_date: previous.map(|p| p.date),
            rows,
        });
    }
    let mut series = Vec::new();
    if let Some(newest) = tables
        .iter()
        .find(|t| t.kind == TableKind::Main)
        .map(|t| t.date)
    {
        let first = newest - Duration::days(SERIES_DAYS - 1);
        let eur = Currency::new("EUR").ok();
        let usd = Currency::new("USD").ok();
        for date in store.table_dates(TableKind::Main).await? {
            if date < first || date > newest {
                continue;
            }
            let Some(t) = store.table(TableKind::Main, date).await? else {
                continue;
            };
            let per_unit =
                |c: Option<Currency>| c.and_then(|c| t.table.rate(c)).map(|r| r.per_unit());
            series.push(SeriesPoint {
                date,
                eur: per_unit(eur),
                usd: per_unit(usd),
            });
        }
    }
    Ok(LandingData {
        enrollment_open,
        tables,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixing::{FixingSource, FixingTable, PublishedRate};
    use chrono::{TimeZone, Utc};

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn rate(code: &str, units: u32, v: &str) -> PublishedRate {
        PublishedRate {
            code: Currency::new(code).unwrap(),
            units,
            published: v.parse().unwrap(),
        }
    }

    async fn put(store: &Store, kind: TableKind, date: &str, rates: Vec<PublishedRate>) {
        let table = FixingTable {
            kind,
            date: d(date),
            published_time: NaiveTime::from_hms_opt(12, 12, 23),
            rates,
        };
        let source = FixingSource::Workbook {
            file: "test".into(),
            sha256: "0".into(),
        };
        store
            .put_table(
                &table,
                &source,
                Utc.with_ymd_and_hms(2026, 5, 22, 12, 0, 0).unwrap(),
            )
            .await
            .unwrap();
    }

    /// A store with main fixings on `dates` (EUR and USD moving by a cent a day) and one
    /// minor fixing.
    async fn store_with(dates: &[&str]) -> Store {
        let store = Store::open_temporary().unwrap();
        for (i, date) in dates.iter().enumerate() {
            let cents = Decimal::new(i as i64, 2);
            put(
                &store,
                TableKind::Main,
                date,
                vec![
                    rate("USD", 1, &(Decimal::new(8200, 2) + cents).to_string()),
                    rate("EUR", 1, &(Decimal::new(9500, 2) - cents).to_string()),
                    rate("JPY", 100, "51.68"),
                ],
            )
            .await;
        }
        put(
            &store,
            TableKind::Minor,
            "2026-05-15",
            vec![rate("HUF", 100, "26.47")],
        )
        .await;
        store
    }

    #[tokio::test]
    async fn empty_store_has_no_tables_and_no_series() {
        let store = Store::open_temporary().unwrap();
        let data = gather(&store, d("2026-05-22"), true).await.unwrap();
        assert!(data.tables.is_empty());
        assert!(data.series.is_empty());
        assert!(data.enrollment_open);
    }

    #[tokio::test]
    async fn today_table_with_change_against_the_previous_fixing() {
        let store = store_with(&["2026-05-20", "2026-05-21", "2026-05-22"]).await;
        let data = gather(&store, d("2026-05-22"), false).await.unwrap();
        let main = &data.tables[0];
        assert_eq!(main.kind, TableKind::Main);
        assert_eq!(main.date, d("2026-05-22"));
        assert_eq!(main.previous_date, Some(d("2026-05-21")));
        let usd = &main.rows[0];
        assert_eq!(usd.code.as_str(), "USD");
        assert_eq!(usd.published.to_string(), "82.02");
        assert_eq!(usd.change.unwrap().to_string(), "0.01");
        assert_eq!(main.rows[1].change.unwrap().to_string(), "-0.01");
        assert_eq!(main.rows[2].change.unwrap().to_string(), "0.00");
        let minor = &data.tables[1];
        assert_eq!((minor.date, minor.previous_date), (d("2026-05-15"), None));
        assert_eq!(minor.rows[0].change, None);
        // The fixing in force on a later date (a weekend) is still Friday's.
        let sunday = gather(&store, d("2026-05-24"), false).await.unwrap();
        assert_eq!(sunday.tables[0].date, d("2026-05-22"));
    }

    #[tokio::test]
    async fn series_has_one_point_per_stored_date_within_90_days() {
        // The window is 2026-02-21..=2026-05-21 (90 days ending at the newest fixing).
        let store = store_with(&["2026-02-20", "2026-02-21", "2026-04-01", "2026-05-21"]).await;
        let data = gather(&store, d("2026-05-22"), true).await.unwrap();
        let dates: Vec<_> = data.series.iter().map(|p| p.date.to_string()).collect();
        assert_eq!(dates, ["2026-02-21", "2026-04-01", "2026-05-21"]);
        assert_eq!(data.series[2].usd.unwrap().to_string(), "82.03");
        assert_eq!(data.series[2].eur.unwrap().to_string(), "94.97");
    }

    fn polyline_points(html: &str, class: &str) -> Vec<String> {
        let tag = format!("<polyline class=\"{class}\" points=\"");
        let start = html.find(&tag).map(|i| i + tag.len()).expect("polyline");
        html[start..]
            .split('"')
            .next()
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn page_shows_the_stored_fixing_and_one_chart_point_per_date() {
        let store = store_with(&["2026-02-20", "2026-02-21", "2026-04-01", "2026-05-21"]).await;
        let data = gather(&store, d("2026-05-22"), true).await.unwrap();
        let html = crate::http::pages::index(&data);
        // The table: the values stored for the newest fixing, changes against the one before.
        assert!(
            html.contains("Official rates of Thursday 21 May 2026"),
            "{html}"
        );
        assert!(html.contains("Change since the fixing of Wednesday 1 April 2026"));
        assert!(html.contains(
            "<td>USD</td><td>US dollar</td><td class=\"n\">1</td><td class=\"n\">82.03</td><td class=\"n up\">+0.01</td>"
        ), "{html}");
        assert!(html.contains(
            "<td>EUR</td><td>Euro</td><td class=\"n\">1</td><td class=\"n\">94.97</td><td class=\"n down\">-0.01</td>"
        ));
        assert!(html.contains(
            "<td>JPY</td><td>Japanese yen</td><td class=\"n\">100</td><td class=\"n\">51.68</td><td class=\"n\">0.00</td>"
        ));
        assert!(html.contains("<td>HUF</td><td>Hungarian forint</td><td class=\"n\">100</td><td class=\"n\">26.47</td><td class=\"n\">\u{2014}</td>"));
        // The chart: one point per stored date in the window, increasing x, inside the box.
        for class in ["EUR", "USD"] {
            let pts = polyline_points(&html, class);
            assert_eq!(pts.len(), data.series.len(), "{class}: {pts:?}");
            let xs: Vec<f64> = pts
                .iter()
                .map(|p| p.split(',').next().unwrap().parse().unwrap())
                .collect();
            assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
            assert!(xs.iter().all(|x| (0.0..=640.0).contains(x)));
        }
        assert!(html.contains("viewBox=\"0 0 640 240\" width=\"100%\""));
        assert!(!html.contains("<script"));
        assert!(html.contains("href=\"/api/v1/oauth/connect\""));
    }

    #[tokio::test]
    async fn page_without_a_fixing_says_so_and_escapes() {
        let store = Store::open_temporary().unwrap();
        let data = gather(&store, d("2026-05-22"), false).await.unwrap();
        let html = crate::http::pages::index(&data);
        assert!(
            html.contains("No Bank of Albania fixing is stored yet."),
            "{html}"
        );
        assert!(!html.contains("<svg"));
        assert!(
            !html.contains("/api/v1/oauth/connect"),
            "invite-only: no button"
        );
        assert_eq!(
            crate::http::pages::esc("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
