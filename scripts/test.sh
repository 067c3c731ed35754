#!/usr/bin/env bash
# FerryMQ's test command (the README's): unit tests, end-to-end tests with librdkafka against
# the real binary, and the Python compatibility suite (kafka-python, confluent-kafka, kcat).
# Installs what it needs (kcat, a venv) through scripts/setup-test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ferrymq-target}"

scripts/setup-test-deps.sh

echo "== building the ferrymq binary"
cargo build -p ferrymq-server
export FERRYMQ_BIN="$CARGO_TARGET_DIR/debug/ferrymq"

echo "== Rust unit and end-to-end tests"
cargo test --workspace 2>&1 | tee "${TMPDIR:-/tmp}/ferrymq-cargo-test.log"
rust_status=${PIPESTATUS[0]}

echo "== Python compatibility suite"
set +e
scripts/compat/run.sh
py_status=$?
set -e

passed=$(grep -aEo '[0-9]+ passed' "${TMPDIR:-/tmp}/ferrymq-cargo-test.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -aEo '[0-9]+ failed' "${TMPDIR:-/tmp}/ferrymq-cargo-test.log" | awk '{s+=$1} END {print s+0}')
echo "rust: $passed passed, $failed failed (exit $rust_status); python: exit $py_status"
if [ "$rust_status" -ne 0 ] || [ "$py_status" -ne 0 ]; then
  exit 1
fi
