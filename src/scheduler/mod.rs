//! When the daemon fetches and syncs.
//!
//! [`time`] holds the pure calendar and wall-clock arithmetic (next run, business days,
//! catch-up dates); [`clock`] the injectable source of "now"; [`runner`] the loop that
//! drives them (daily run, polling, catch-up, keep-alive, watchdog).

pub mod clock;
pub mod runner;
pub mod time;
