//! Waiting for something the daemon does on its own: one helper instead of hand-written
//! polling loops. A check answers `bool` (holds or not yet) or `Option<T>` (the value once it
//! is there); past the deadline the test fails naming what it waited for.
//!
//! Polling starts fast (1 ms) and backs off to 50 ms, so a quick event costs little and a
//! slow one does not spin. Use it for "this will happen"; for "this did not happen", wait on
//! an event that proves the daemon is past the point where it would have (a log line, a
//! status field, a counter at a fake), then assert at once.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// What a check answers: done (with a value) or not yet.
pub trait Check {
    type Output;
    fn done(self) -> Option<Self::Output>;
}

impl Check for bool {
    type Output = ();
    fn done(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn done(self) -> Option<T> {
        self
    }
}

/// A description computed only when the wait fails (e.g. to show the daemon's stderr as it
/// is then): `eventually(t, lazy(|| format!("… {}", d.stderr())), …)`.
pub fn lazy<F: Fn() -> String>(describe: F) -> impl Display {
    struct Lazy<F>(F);
    impl<F: Fn() -> String> Display for Lazy<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&(self.0)())
        }
    }
    Lazy(describe)
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(Duration::from_millis(50))
}

#[track_caller]
fn timed_out(within: Duration, what: &dyn Display) -> ! {
    panic!("timed out after {within:?} waiting for {what}")
}

/// Calls `check` until it is done and returns its value; panics naming `what` once `within`
/// has passed. Blocks the thread between checks (for tests without a runtime, or inside
/// `block_in_place`).
#[track_caller]
pub fn eventually<C: Check>(
    within: Duration,
    what: impl Display,
    mut check: impl FnMut() -> C,
) -> C::Output {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check().done() {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(within, &what);
        }
        std::thread::sleep(pause);
        pause = next_pause(pause);
    }
}

/// [`eventually`] for checks that await (a request to the daemon) or that run on a tokio
/// runtime: sleeps with `tokio::time::sleep`, so the runtime keeps running meanwhile.
pub async fn eventually_async<C: Check>(
    within: Duration,
    what: impl Display,
    mut check: impl AsyncFnMut() -> C,
) -> C::Output {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = check().await.done() {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(within, &what);
        }
        tokio::time::sleep(pause).await;
        pause = next_pause(pause);
    }
}
