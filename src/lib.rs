//! boa-exchange: keeps the Bank of Albania's official exchange rates in every connected
//! QuickBooks Online company.
//!
//! # Layout (SPEC §1 "Layers": imports only point down)
//! - wiring: `main.rs`, [`cli`] (the command line), [`app`] (builds each service, drains),
//!   [`logging`], [`shutdown`] (signals).
//! - interfaces: [`http`] (the API), [`control`] (the Unix socket): bytes ⇄ requests.
//! - operations: [`ops`] — the one door; answers and the error → status/exit-code table.
//! - services: [`sync`] (`SyncEngine`), [`archive`] (`Archive`, the BoA fixings as the
//!   daemon uses them), [`scheduler`] (`Scheduler`), [`alerts`] (`Alerts` and its sinks).
//! - adapters: [`store`] (sled, encrypted tokens), [`boa`] (fetch, parse, workbook import),
//!   [`qbo`] (accounting client, Intuit OAuth, token manager), [`crypto`], [`notify`]
//!   (sd_notify), [`metrics`], [`outbound`] (size-capped reads of BoA and Intuit answers).
//! - leaves (pure, import only other leaves): [`config`], [`cidr`], [`currency`], [`fixing`]
//!   (the BoA fixing as data), [`rates`] (which fixing is in force, what a company is sent),
//!   [`time`] (the injected clock and the Tirana calendar).
//!
//! One layer per top-level module (a folder's files share its layer); `tests/it/layers.rs`
//! fails the build's tests on an upward import, a cycle between peers, or an HTTP notion
//! below `ops`.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::await_holding_lock,
    clippy::dbg_macro
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod alerts;
pub mod app;
pub mod archive;
pub mod boa;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod connections;
pub mod control;
pub mod crypto;
pub mod currency;
pub mod demo;
pub mod fixing;
pub mod http;
pub mod locks;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod outbound;
pub mod qbo;
pub mod rates;
pub mod scheduler;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod time;

pub use outbound::install_crypto_provider;
