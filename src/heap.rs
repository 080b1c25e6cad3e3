//! Allocator housekeeping (an adapter over glibc's malloc; nothing else here).
//!
//! The daemon runs for years on a small machine: work that frees as much as it allocates
//! (a sync-all, a backup) can still leave the freed space resident in glibc's arenas.
//! [`release_free_heap`] hands it back; its callers say when (BENCHMARKS.md, issues 15, 22).

/// Hands the free pages inside glibc's malloc arenas back to the kernel (`malloc_trim(0)`).
/// A sync-all frees as much as it allocates, but spread over the arenas of the runtime's
/// and blocking pool's threads (one flush thread per company in flight), the free space
/// stays resident and grows with the run: calling this every 1,000 companies lowered the
/// peak RSS of a 100,000-company run from ~147 to ~124 MiB (BENCHMARKS.md, issue 15). One
/// call walks the arenas' free lists (milliseconds): call it from a blocking thread.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused memory of the allocator to the kernel; it
    // takes each arena's lock and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
