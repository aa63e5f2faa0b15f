#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs every check.
# Works on a fresh machine (Debian with the Rust toolchain) and is what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds are cached between runs on the same machine, whatever folder the clone is in.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME}/.cache/acs-stream/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== toolchain: $(cargo --version)"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --all-targets --locked
