//! The BoA fixing as data (a pure leaf): tables, rows, units, exact decimals.
//!
//! Pure types shared by the parser, the archive (store), the rate answers and the sync
//! engine. Nothing here does I/O.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::currency::Currency;

/// Which official table a rate comes from. Each has its own fixing date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// The daily table (USD, EUR, … about 16 rows).
    Main,
    /// Currencies fixed about twice a month (HUF, RUB, CZK, MKD).
    Minor,
}

impl TableKind {
    /// `"main"` / `"minor"`, as in the rates answer.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Main => "main",
            TableKind::Minor => "minor",
        }
    }
}

/// One row of an official table: `published` lek per `units` of `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRate {
    /// The code as the page prints it (`SDR`, not `XDR`).
    pub code: Currency,
    /// How many units of the currency the published figure is for (100 for JPY/HUF/RUB).
    pub units: u32,
    /// The figure as published, exactly (two decimals on the page).
    #[serde(with = "rust_decimal::serde::str")]
    pub published: Decimal,
}

impl PublishedRate {
    /// The ISO code QuickBooks uses (`SDR` → `XDR`).
    pub fn iso_code(&self) -> Currency {
        self.code.iso()
    }

    /// Lek per one unit of the currency, exact (the published figure itself when per 1).
    pub fn per_unit(&self) -> Decimal {
        if self.units == 1 {
            return self.published;
        }
        self.published
            .checked_div(Decimal::from(self.units))
            .map(|d| d.normalize())
            .unwrap_or(self.published)
    }
}

/// One official table with its own "Last update" date and time (Europe/Tirane local).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixingTable {
    /// Main or minor.
    pub kind: TableKind,
    /// The fixing date printed above the table — the date the rates are for.
    pub date: NaiveDate,
    /// Publication time printed above the table, Tirana local time; `None` for imported history.
    pub published_time: Option<NaiveTime>,
    /// Rows in page order.
    pub rates: Vec<PublishedRate>,
}

impl FixingTable {
    /// The row for a code (page code or ISO code).
    pub fn rate(&self, code: Currency) -> Option<&PublishedRate> {
        self.rates
            .iter()
            .find(|r| r.code == code || r.iso_code() == code)
    }
}

/// Where a stored table came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FixingSource {
    /// Scraped from the live page.
    Page {
        /// The URL fetched.
        url: String,
        /// sha256 (hex) of the page body exactly as received.
        sha256: String,
        /// When we fetched it.
        fetched_at: DateTime<Utc>,
    },
    /// Imported from a yearly BoA workbook.
    Workbook {
        /// File name of the workbook.
        file: String,
        /// sha256 (hex) of the workbook.
        sha256: String,
    },
}

/// Everything parsed from one page: its official tables (never the bid/ask table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPage {
    /// Main table first, then minor when the page has one.
    pub tables: Vec<FixingTable>,
}
