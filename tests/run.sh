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

# The real Kafka-compatible broker for the Kafka tests: tansu with its SQLite storage
# (its in-memory storage loses acknowledged records). Installed once per machine.
if ! command -v tansu >/dev/null 2>&1; then
  echo "== installing tansu 0.6.0 (about 15 minutes, once per machine)"
  cargo install tansu --locked --version 0.6.0 --features libsql
fi
broker_dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
(cd "$broker_dir" && exec tansu broker \
  --listener-url "tcp://127.0.0.1:${port}" --advertised-listener-url "tcp://127.0.0.1:${port}" \
  --storage-engine sqlite://tansu.db >"$broker_dir/tansu.log" 2>&1) &
broker_pid=$!
stop_broker() {
  kill "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  rm -rf "$broker_dir"
}
trap stop_broker EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then break; fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null || { echo "tansu did not start:"; cat "$broker_dir/tansu.log"; exit 1; }
export ACS_TEST_BROKERS="127.0.0.1:${port}"
echo "== tansu broker on ${ACS_TEST_BROKERS}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --all-targets --locked
