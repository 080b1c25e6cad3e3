//! Signals (`signal-hook`): SIGTERM or SIGINT end the daemon; SIGHUP asks for a config
//! reload. A second SIGTERM/SIGINT while the first one's drain runs exits at once (status 1):
//! what was acknowledged is already on disk (SPEC §8).
//!
//! Handlers are registered once, before any loop, so no signal between iterations is lost.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals as SignalStream;

/// The process's signal stream.
pub struct Signals {
    stream: SignalStream,
}

impl Signals {
    /// Registers SIGTERM, SIGINT and SIGHUP handlers, and the "second stop signal exits
    /// now" rule.
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub fn new() -> std::io::Result<Signals> {
        let stopping = Arc::new(AtomicBool::new(false));
        for sig in [SIGTERM, SIGINT] {
            // Order matters: the conditional exit sees the flag as the previous signal left
            // it, then the flag is set for the next one.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stopping))?;
            signal_hook::flag::register(sig, Arc::clone(&stopping))?;
        }
        Ok(Signals {
            stream: SignalStream::new([SIGTERM, SIGINT, SIGHUP])?,
        })
    }

    /// Waits for the next signal (`None` once the stream is closed).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.stream.next().await? {
                SIGTERM => return Some(Event::Stop("SIGTERM")),
                SIGINT => return Some(Event::Stop("SIGINT")),
                SIGHUP => return Some(Event::Reload),
                _ => continue,
            }
        }
    }
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stop gracefully (the signal's name).
    Stop(&'static str),
    /// Re-read the config.
    Reload,
}
