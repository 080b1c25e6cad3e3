//! BoA parsing and import timings, on the real captures (figures go to BENCHMARKS.md).
//!
//! Run in release: `cargo bench --bench parse`. No bench framework: each case is warmed up,
//! then run repeatedly for about `BENCH_SECONDS` (default 3) and reported as mean, median
//! and minimum per run. What is timed:
//! - `parse_page` of the 2026-05-22 page (the daemon's work per scrape, before storing);
//! - `read_workbook` of the 2024 yearly workbook (what `import-archive` does client-side);
//! - storing those 246 tables the way the daemon's `import_tables` does (`put_table` into a
//!   fresh temporary sled store, then one flush; opening the store is not timed).

use std::hint::black_box;
use std::time::{Duration, Instant};

use boa_exchange::boa::{parse_page, read_workbook, FixingSource};
use boa_exchange::store::Store;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/boa/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Runs `f` on a fresh `setup()` value until `budget` has passed (at least `min_runs` times)
/// after `warmup` runs; only `f` is timed. Prints mean, median and minimum per run.
fn bench<S>(
    label: &str,
    warmup: u32,
    min_runs: u32,
    budget: Duration,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(S),
) {
    for _ in 0..warmup {
        f(setup());
    }
    let mut runs = Vec::new();
    let started = Instant::now();
    while runs.len() < min_runs as usize || started.elapsed() < budget {
        let input = setup();
        let t = Instant::now();
        f(input);
        runs.push(t.elapsed());
    }
    runs.sort();
    let total: Duration = runs.iter().sum();
    let mean = total / runs.len() as u32;
    let median = runs[runs.len() / 2];
    let min = runs[0];
    println!(
        "{label}: mean {}, median {}, min {} ({} runs)",
        show(mean),
        show(median),
        show(min),
        runs.len()
    );
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    let budget = Duration::from_secs_f64(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    );

    let page = String::from_utf8(fixture("official-rate-en-2026-05-22.html")).expect("UTF-8");
    let parsed = parse_page(&page).expect("the capture parses");
    assert_eq!(parsed.tables.len(), 2);
    bench(
        &format!("parse_page, 2026-05-22 page ({} KB)", page.len() / 1024),
        20,
        100,
        budget,
        || (),
        |()| {
            black_box(parse_page(black_box(&page)).expect("parses"));
        },
    );

    let workbook = fixture("archive-2024.xlsx");
    let tables = read_workbook(&workbook).expect("the workbook reads");
    bench(
        &format!(
            "read_workbook, archive-2024.xlsx ({} KB, {} dates)",
            workbook.len() / 1024,
            tables.len()
        ),
        2,
        10,
        budget,
        || (),
        |()| {
            black_box(read_workbook(black_box(&workbook)).expect("reads"));
        },
    );

    let source = FixingSource::Workbook {
        file: "archive-2024.xlsx".into(),
        sha256: String::new(),
    };
    let now = chrono::Utc::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    bench(
        &format!(
            "store {} workbook tables (temporary sled, put_table + flush)",
            tables.len()
        ),
        2,
        10,
        budget,
        || Store::open_temporary().expect("store"),
        |store| {
            for t in &tables {
                black_box(rt.block_on(store.put_table(t, &source, now)).expect("put"));
            }
            rt.block_on(store.flush()).expect("flush");
        },
    );
}
