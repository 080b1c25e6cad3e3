#!/bin/sh
# Sync-all benchmark against the fake Intuit (benches/sync_all.rs; figures in BENCHMARKS.md).
#   bench/run.sh                 N = 1000 and 10000 companies
#   bench/run.sh 500 2000        other sizes
# Environment: BENCH_LATENCY_MS (20), BENCH_CONCURRENCY (16), BENCH_LOG (info),
# BENCH_EXPIRED_TOKENS=1 (every sync starts with a token refresh, as on a real daily run),
# BENCH_WRAPPER (e.g. "heaptrack -o /tmp/ht" to profile the daemon),
# BENCH_BACKEND=sled|postgres|both (sled; postgres: a throwaway PostgreSQL cluster, fsync on).
# Builds the daemon with the release profile (cargo bench) and prints a Markdown table on
# stdout; details on stderr.
set -eu
cd "$(dirname "$0")/.."
exec cargo bench --bench sync_all -- "$@"
