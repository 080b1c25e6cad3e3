#!/usr/bin/env bash
# Regenerates the files the .deb ships that come from the clap definitions (src/cli/mod.rs)
# and src/cli/man/*.roff: the man page and the bash, zsh and fish completions. A test
# (tests/it/toolbox.rs) fails when the checked-in copies differ from what the binary prints.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin boa-exchange
bin=target/debug/boa-exchange
"$bin" manpage >packaging/boa-exchange.8
"$bin" completions bash >packaging/completions/boa-exchange.bash
"$bin" completions zsh >packaging/completions/_boa-exchange
"$bin" completions fish >packaging/completions/boa-exchange.fish
echo "regenerated packaging/boa-exchange.8 and packaging/completions/"
