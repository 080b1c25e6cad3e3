//! boa-exchange: keeps the Bank of Albania's official exchange rates in every connected
//! QuickBooks Online company.
//!
//! # Layout
//! - [`currency`]: the currency-code type.
//! - [`boa`]: the BoA fixing — model, page parser, fetcher, workbook import.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::await_holding_lock,
    clippy::dbg_macro
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod boa;
pub mod currency;
