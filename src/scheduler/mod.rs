//! When the daemon fetches and syncs: [`runner`], the loop that drives the daily run,
//! polling, catch-up, keep-alive and the watchdog. Its calendar arithmetic is the leaf
//! [`crate::time::calendar`]; "now" comes from the injected [`crate::time::clock::Clock`].

pub mod lead;
pub mod runner;
