//! The Bank of Albania source: what a fixing is, how the page is read, fetched and imported.
//!
//! - [`model`]: the fixing as data.
//! - [`parse`]: page HTML → [`ParsedPage`], and [`validate`] before storing.
//! - [`fetch`]: [`BoaClient`], the HTTP side (retries, timeouts, page hash).
//! - [`import`]: history from BoA's yearly workbooks and their index page.

pub mod fetch;
pub mod import;
pub mod model;
pub mod parse;

pub use fetch::{BoaClient, BoaClientConfig, FetchError, FetchedFile, FetchedPage};
pub use import::{parse_archive_index, read_workbook, ImportError, WorkbookLink};
pub use model::{FixingSource, FixingTable, ParsedPage, PublishedRate, TableKind};
pub use parse::{parse_page, validate, ParseError, RateProblem, ValidationError};
