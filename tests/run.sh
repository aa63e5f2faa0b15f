#!/usr/bin/env bash
# The test command of the README: installs what the tests need, starts Apache Kafka, then runs
# every check. Works on a fresh machine (Debian with the Rust toolchain, Java 17 and Maven) and
# is what CI (.ci/run) calls.
#
# Environment:
#   ACS_TEST_BROKERS=host:port  test against that running cluster instead of starting one
#   ACS_TEST_SKIP_BROKER=1      skip the tests that need a broker (each says so)
#   ACS_TEST_SKIP_TOOLS=1       skip the checks that need promtool and kustomize (each says so)
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds and tools are cached between runs on the same machine, whatever folder the clone is in.
cache="${XDG_CACHE_HOME:-${HOME}/.cache}/acs-stream"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${cache}/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="${cache}/bin:${PATH}"

echo "== toolchain: $(cargo --version)"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The tools of the deployment checks (tests/deploy.rs): promtool from Debian's prometheus
# package; kustomize through kubectl, or standalone from the Go module proxy.
if [ "${ACS_TEST_SKIP_TOOLS:-}" != 1 ]; then
  if ! command -v promtool >/dev/null 2>&1; then
    echo "== installing promtool (Debian's prometheus package)"
    sudo_apt() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    export DEBIAN_FRONTEND=noninteractive
    sudo_apt apt-get install -y --no-install-recommends prometheus >/dev/null ||
      { sudo_apt apt-get update >/dev/null && sudo_apt apt-get install -y --no-install-recommends prometheus >/dev/null; }
  fi
  if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
    echo "== installing kustomize (Go module proxy)"
    GOBIN="${cache}/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
  fi
  echo "== tools: $(promtool --version 2>&1 | head -n 1); kustomize $( (kubectl version --client 2>/dev/null || kustomize version) | grep -i kustomize | tr -d '\n')"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test (build)"
cargo test --all-targets --locked --no-run

# Apache Kafka, one node (tests/kafka/broker.sh: its jars are resolved by Maven once per
# machine), started after the build so that it does not wait through it. Stopped when this
# script exits, however it exits (and by broker.sh's watcher should this script be killed).
if [ -z "${ACS_TEST_BROKERS:-}" ] && [ "${ACS_TEST_SKIP_BROKER:-}" != 1 ]; then
  broker_root="$(mktemp -d)"
  stop_broker() {
    bash tests/kafka/broker.sh stop "${broker_root}/cluster" || true
    rm -rf "${broker_root}"
  }
  trap stop_broker EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  echo "== starting Apache Kafka (one node)"
  broker_env="$(ACS_BROKER_OWNER_PID=$$ bash tests/kafka/broker.sh start "${broker_root}/cluster" 1)"
  eval "export ${broker_env//$'\n'/ }"
fi
if [ "${ACS_TEST_SKIP_BROKER:-}" = 1 ]; then
  echo "== broker: none (ACS_TEST_SKIP_BROKER=1: the broker tests are skipped, each named below)"
else
  echo "== broker: ${ACS_TEST_BROKER_NAME:-a Kafka cluster} at ${ACS_TEST_BROKERS}"
fi

echo "== cargo test"
cargo test --all-targets --locked
