//! The Bank of Albania source: what a fixing is, how the page is read, fetched and imported.
//!
//! The fixing as data is the leaf [`crate::fixing`] (re-exported here).
//! - [`parse`]: page HTML → [`ParsedPage`], and [`validate`] before storing.
//! - [`fetch`]: [`BoaClient`], the HTTP side (retries, timeouts, page hash).
//! - [`import`]: history from BoA's yearly workbooks and their index page.

pub mod fetch;
pub mod import;
pub mod parse;

pub use crate::fixing::{FixingSource, FixingTable, ParsedPage, PublishedRate, TableKind};
pub use fetch::{BoaClient, BoaClientConfig, FetchError, FetchedFile, FetchedPage};
pub use import::{parse_archive_index, read_workbook, ImportError, WorkbookLink};
pub use parse::{parse_page, validate, ParseError, RateProblem, ValidationError};

// ---------------------------------------------------------------------------------------
// Parsing off the async workers (SPEC §9). HTML and xlsx parsing take milliseconds to tens of
// milliseconds of CPU; on a runtime worker that stalls every request and the watchdog ping
// queued behind it. Async callers use these; the plain functions stay for tests and tools.

/// Runs `f` on tokio's blocking pool and returns its value; a panic in `f` is resumed here
/// as if `f` had run inline.
async fn off_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime is shutting down.
            Err(e) => std::panic::resume_unwind(Box::new(format!("parsing task cancelled: {e}"))),
        },
    }
}

/// [`parse_page`] on the blocking pool.
///
/// # Errors
/// As [`parse_page`].
pub async fn parse_page_blocking(body: String) -> Result<ParsedPage, ParseError> {
    off_worker(move || parse_page(&body)).await
}

/// [`parse_archive_index`] on the blocking pool.
pub async fn parse_archive_index_blocking(html: String, base: url::Url) -> Vec<WorkbookLink> {
    off_worker(move || parse_archive_index(&html, &base)).await
}

/// [`read_workbook`] on the blocking pool.
///
/// # Errors
/// As [`read_workbook`].
pub async fn read_workbook_blocking(bytes: Vec<u8>) -> Result<Vec<FixingTable>, ImportError> {
    off_worker(move || read_workbook(&bytes)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = include_str!("../../tests/fixtures/boa/official-rate-en-2026-05-22.html");

    #[tokio::test(flavor = "current_thread")]
    async fn blocking_wrappers_give_the_same_answers_off_the_worker() {
        // On a current-thread runtime, work done inline would run on this thread.
        let here = std::thread::current().id();
        assert_ne!(off_worker(|| std::thread::current().id()).await, here);
        assert_eq!(
            parse_page_blocking(PAGE.to_string()).await.unwrap(),
            parse_page(PAGE).unwrap()
        );
        let base = url::Url::parse("https://www.bankofalbania.org/x/").unwrap();
        let html = "<a href=\"/rc/doc/Kursi_2024.xlsx\">Exchange rate 2024</a>".to_string();
        let links = parse_archive_index_blocking(html.clone(), base.clone()).await;
        assert_eq!(links, parse_archive_index(&html, &base));
        assert_eq!(links.len(), 1);
        assert!(read_workbook_blocking(b"not a workbook".to_vec())
            .await
            .is_err());
    }
}

#[cfg(test)]
mod panic_tests {
    #[tokio::test]
    #[should_panic(expected = "boom in parser")]
    async fn a_panic_in_the_parser_is_resumed_in_the_caller() {
        super::off_worker(|| -> () { panic!("boom in parser") }).await;
    }
}
