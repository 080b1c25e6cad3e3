//! BoaClient and the page parser against the fake BoA site: retries, timeouts, truncation,
//! the User-Agent sent, and the archive index → workbook path.

use std::time::{Duration, Instant};

use crate::support::fake_boa::{self, FakeBoa, Mode};
use boa_exchange::boa::fetch::DEFAULT_USER_AGENT;
use boa_exchange::boa::{
    parse_archive_index, parse_page, read_workbook, BoaClient, BoaClientConfig, FetchError,
    ParseError, TableKind,
};
use boa_exchange::time::clock::ManualClock;

/// sha256 of the Friday capture, from fixtures/boa/SOURCES.md.
const FRIDAY_SHA256: &str = "2e6850edc062a00cfe1dd9b7b55145aa1cb6873fa2d815b841329101a4250e87";

/// The injected clock's reading: every fetch is stamped with it, not the wall clock.
fn clock_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-05-22T12:00:00Z")
        .unwrap()
        .to_utc()
}

fn client(url: &str) -> BoaClient {
    BoaClient::new(
        BoaClientConfig {
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff_base: Duration::from_millis(5),
            ..BoaClientConfig::new(url)
        },
        std::sync::Arc::new(ManualClock::new(clock_time())),
    )
    .unwrap()
}

#[tokio::test]
async fn ok_page_is_fetched_hashed_and_parsed() {
    let fake = FakeBoa::start().await;
    let page = client(&fake.url()).fetch().await.unwrap();
    assert_eq!(page.url, fake.url());
    assert_eq!(
        page.fetched_at,
        clock_time(),
        "stamped by the injected clock"
    );
    assert_eq!(page.sha256, FRIDAY_SHA256);
    assert_eq!(page.body.as_bytes(), fake_boa::fixture(fake_boa::FRIDAY));
    let parsed = parse_page(&page.body).unwrap();
    assert_eq!(parsed.tables.len(), 2);
    assert_eq!(parsed.tables[0].kind, TableKind::Main);
    assert_eq!(parsed.tables[0].date.to_string(), "2026-05-22");
    assert_eq!(parsed.tables[0].rates.len(), 16);
    assert_eq!(parsed.tables[1].date.to_string(), "2026-05-15");
    assert_eq!(fake.requests(), 1);

    // The English path serves the same page.
    let english = client(&fake.english_url()).fetch().await.unwrap();
    assert_eq!(english.sha256, FRIDAY_SHA256);
}

#[tokio::test]
async fn scripted_page_is_served() {
    let fake = FakeBoa::start().await;
    fake.set_page(fake_boa::fixture(fake_boa::SUNDAY));
    let page = client(&fake.url()).fetch().await.unwrap();
    assert_ne!(page.sha256, FRIDAY_SHA256);
    let friday = String::from_utf8(fake_boa::fixture(fake_boa::FRIDAY)).unwrap();
    assert_eq!(
        parse_page(&page.body).unwrap(),
        parse_page(&friday).unwrap()
    );
}

#[tokio::test]
async fn persistent_503_is_retried_then_reported_with_its_status() {
    let fake = FakeBoa::start().await;
    fake.set_mode(Mode::Status(503));
    let err = client(&fake.url()).fetch().await.unwrap_err();
    assert_eq!(
        err,
        FetchError::Status {
            status: 503,
            url: fake.url()
        }
    );
    assert!(err.is_retryable());
    assert_eq!(fake.requests(), 3, "3 attempts, no more");
}

#[tokio::test]
async fn two_503_then_ok_succeeds() {
    let fake = FakeBoa::start().await;
    fake.fail_next(2, 503);
    let page = client(&fake.url()).fetch().await.unwrap();
    assert_eq!(page.sha256, FRIDAY_SHA256);
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let fake = FakeBoa::start().await;
    fake.set_mode(Mode::Status(404));
    let err = client(&fake.url()).fetch().await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(fake.requests(), 1);

    fake.set_mode(Mode::Ok);
    fake.fail_next(1, 403);
    let err = client(&fake.url()).fetch().await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 403, .. }),
        "{err}"
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn slow_answer_past_the_timeout_is_a_timeout() {
    let fake = FakeBoa::start().await;
    fake.set_mode(Mode::Slow(Duration::from_secs(30)));
    let client = BoaClient::new(
        BoaClientConfig {
            timeout: Duration::from_millis(200),
            attempts: 2,
            backoff_base: Duration::from_millis(5),
            ..BoaClientConfig::new(fake.url())
        },
        std::sync::Arc::new(boa_exchange::time::clock::SystemClock),
    )
    .unwrap();
    let started = Instant::now();
    let err = client.fetch().await.unwrap_err();
    assert_eq!(err, FetchError::Timeout);
    assert!(err.is_retryable());
    assert_eq!(fake.requests(), 2, "timeouts are retried");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn truncated_page_fetches_but_does_not_parse() {
    let fake = FakeBoa::start().await;
    fake.set_mode(Mode::Truncated);
    let page = client(&fake.url()).fetch().await.unwrap();
    assert!(page.body.contains("<TD nowrap>EUR</TD>"));
    assert!(!page.body.contains(">JPY<"));
    let err = parse_page(&page.body).unwrap_err();
    assert!(matches!(err, ParseError::Truncated(_)), "{err}");
}

#[tokio::test]
async fn changed_layout_is_no_recognisable_table() {
    let fake = FakeBoa::start().await;
    fake.set_mode(Mode::ChangedLayout);
    let page = client(&fake.url()).fetch().await.unwrap();
    assert!(page.body.contains("82.24"));
    assert_eq!(
        parse_page(&page.body).unwrap_err(),
        ParseError::NoOfficialTable
    );
}

#[tokio::test]
async fn user_agent_is_browser_like() {
    let fake = FakeBoa::start().await;
    fake.fail_next(1, 502);
    client(&fake.url()).fetch().await.unwrap();
    let agents = fake.user_agents();
    assert_eq!(agents.len(), 2);
    for ua in agents {
        assert_eq!(ua, DEFAULT_USER_AGENT);
        assert!(ua.starts_with("Mozilla/5.0 ("), "{ua}");
        assert!(ua.contains("Gecko/") && ua.contains("Firefox/"), "{ua}");
    }
}

#[tokio::test]
async fn archive_index_leads_to_the_workbook() {
    let fake = FakeBoa::start().await;
    let client = client(&fake.url());
    let index = client.fetch_url(&fake.archive_url()).await.unwrap();
    let base = url::Url::parse(&index.url).unwrap();
    let links = parse_archive_index(&index.body, &base);
    assert_eq!(links.len(), 32);
    let link = links.iter().find(|l| l.year == Some(2024)).unwrap();
    assert_eq!(link.url, fake.workbook_url());

    let file = client.fetch_bytes(&link.url).await.unwrap();
    assert_eq!(file.bytes, fake_boa::fixture(fake_boa::WORKBOOK_2024));
    assert_eq!(file.sha256.len(), 64);
    let tables = read_workbook(&file.bytes).unwrap();
    assert_eq!(tables.len(), 246);

    // A workbook the site does not have is a 404, not retried.
    let missing = format!("http://{}/rc/doc/nope_1993.xls", fake.addr());
    let before = fake.requests();
    let err = client.fetch_bytes(&missing).await.unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    assert_eq!(fake.requests(), before + 1);
}
