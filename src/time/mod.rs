//! Time, as the rest of the daemon reads it (a pure leaf: imports nothing of the crate's
//! services or adapters).
//!
//! - [`clock`]: the injectable source of "now" ([`clock::Clock`], the system clock, and the
//!   tests' [`clock::ManualClock`]) — the only place that reads the wall clock.
//! - [`calendar`]: pure calendar arithmetic in Europe/Tirane — the next daily run (DST-correct),
//!   business days and holidays, catch-up dates, business hours, RFC 3339 answers.

pub mod calendar;
pub mod clock;
