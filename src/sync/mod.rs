//! Syncing BoA rates into QuickBooks companies.
//!
//! - [`rates`]: pure arithmetic — which fixing is in force on a date and what each company
//!   must be sent (exact decimals, one rounding).
//! - [`engine`]: the sync of one company (token, one metered read, writes that differ,
//!   retries, records) and of all companies (bounded concurrency, single run at a time).

pub mod engine;
pub mod rates;

pub use engine::{on_connected, sync_all_for, sync_all_op, sync_one_op, Scope, SyncEngine};
