//! When the daemon fetches and syncs.
//!
//! [`time`] holds the pure calendar and wall-clock arithmetic (next run, business days,
//! catch-up dates); [`clock`] the injectable source of "now". Neither sleeps nor does I/O:
//! the loop that drives them lives here later and must keep all date logic in [`time`].

pub mod clock;
pub mod time;
