//! boa-exchange: keeps the Bank of Albania's official exchange rates in every connected
//! QuickBooks Online company.
//!
//! # Layout
//! - [`currency`]: the currency-code type.
//! - [`boa`]: the BoA fixing — model, page parser, fetcher, workbook import.
//! - [`sync`]: rates in force and per-company rates; later the sync engine.
//! - [`scheduler`]: next run, business days, catch-up dates, the injectable clock.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::await_holding_lock,
    clippy::dbg_macro
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod boa;
pub mod currency;
pub mod scheduler;
pub mod sync;
