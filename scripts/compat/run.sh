#!/usr/bin/env bash
# Runs the Kafka-client compatibility suite against the ferrymq binary named by FERRYMQ_BIN:
#   FERRYMQ_BIN=target/debug/ferrymq scripts/compat/run.sh [pytest args...]
# Installs its dependencies first (scripts/setup-test-deps.sh: kcat, a venv with the clients),
# then runs pytest over this folder with the venv's python. Exits with pytest's exit code.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv="${FERRYMQ_VENV:-$HOME/.cache/ferrymq-venv}"

if [[ -z "${FERRYMQ_BIN:-}" ]]; then
    echo "compat/run.sh: FERRYMQ_BIN is not set; build the broker and point it at the binary:" >&2
    echo "  cargo build -p ferrymq-server && FERRYMQ_BIN=\$CARGO_TARGET_DIR/debug/ferrymq $0" >&2
    exit 2
fi
if [[ ! -f "$FERRYMQ_BIN" || ! -x "$FERRYMQ_BIN" ]]; then
    echo "compat/run.sh: FERRYMQ_BIN=$FERRYMQ_BIN is not an executable file" >&2
    exit 2
fi
FERRYMQ_BIN=$(realpath "$FERRYMQ_BIN")
export FERRYMQ_BIN

"$here/../setup-test-deps.sh"

# No .pytest_cache or __pycache__ in the work tree; each test has a hard limit so that a hung
# client fails its test instead of the whole run.
export PYTHONDONTWRITEBYTECODE=1
cd "$here"
set +e
"$venv/bin/python" -m pytest -q -rfEs -p no:cacheprovider --timeout=120 \
    --rootdir="$here" "$here" "$@"
status=$?
set -e
exit "$status"
