//! Syncing BoA rates into QuickBooks companies. The rate arithmetic itself (which fixing is in
//! force on a date, what each company must be sent) is the pure leaf [`crate::rates`].
//!
//! - [`plan`]: pure — what QuickBooks holds × what we want → keep or write, with requestids.
//! - [`engine`]: [`SyncEngine`], the sync of one company (token, one metered read, writes
//!   that differ, retries, records) and of all companies (bounded adaptive concurrency,
//!   one run at a time).
//! - [`backfill`]: pure — the accepted ranges, skipped dates and read windows of a backfill,
//!   and its report (the loop is [`SyncEngine::backfill`]).
//! - [`error`]: [`Error`], why a sync could not be done.

pub mod backfill;
mod backfill_run;
pub mod engine;
pub mod error;
pub mod fleet;
mod pipeline;
pub mod plan;
mod session;

pub use engine::{Outcome, SyncEngine};
pub use error::Error;
pub use fleet::{Elsewhere, LastRun, Progress, RunEntries, RunEntry, RunReport, Scope};
