//! boa-exchange: keeps the Bank of Albania's official exchange rates in every connected
//! QuickBooks Online company.
//!
//! # Layout
//! - [`config`]: the TOML config, env overrides, secrets, validation; [`cidr`]: IP networks.
//! - [`store`]: the sled store, record encoding, encrypted tokens.
//! - [`crypto`]: the age identity that encrypts secrets at rest.
//! - [`currency`]: the currency-code type.
//! - [`boa`]: the BoA fixing — model, page parser, fetcher, workbook import.
//! - [`app`]: wiring and shutdown; [`http`]: the API; [`control`]: the Unix socket; [`ops`]: operations both share.
//! - [`cli`]: the command line; [`logging`], [`notify`] (sd_notify), [`shutdown`] (signals).
//! - [`fixings`]: the archive as the daemon uses it — fetch/validate/store, rate in force,
//!   the rates answer, workbook import.
//! - [`qbo`]: the QuickBooks accounting client, Intuit OAuth, the token manager;
//!   [`outbound`]: size-capped reading of BoA and Intuit answers.
//! - [`sync`]: rates in force and per-company rates (pure), and the sync engine.
//! - [`scheduler`]: next run, business days, the injectable clock, and the daily loop.
//! - [`alerts`]: alerts logged once and sent to the webhook.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::await_holding_lock,
    clippy::dbg_macro
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod app;
pub mod boa;
pub mod cidr;
pub mod cli;
pub mod cli_render;
pub mod config;
pub mod control;
pub mod crypto;
pub mod currency;
pub mod fixings;
pub mod http;
pub mod logging;
pub mod notify;
pub mod ops;
pub mod outbound;
pub mod qbo;
pub mod scheduler;
pub mod shutdown;
pub mod store;
pub mod sync;

/// Installs rustls' ring crypto provider once (reqwest is built without a default provider).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
