#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain, idempotently:
#   - Debian packages: kcat (the compat suite's command-line client) and, where `python3 -m venv`
#     cannot work without it, python3-venv. Skipped with a message when not root or without apt.
#   - for the chaos harness (tests/src/chaos): iproute2 (ip, tc: namespaces, veths, netem) and
#     nftables (partitions); without them it runs on loopback and skips the network faults.
#     `--chaos-only` installs just these.
#   - a Python venv at ${FERRYMQ_VENV:-$HOME/.cache/ferrymq-venv} holding
#     scripts/compat/requirements.txt. A stamp file in the venv records the hash of that file (and
#     the interpreter's version), so a re-run with nothing changed returns in well under a second.
# Environment: FERRYMQ_VENV (venv path), PYTHON (interpreter to build the venv from; python3).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
requirements="$repo_root/scripts/compat/requirements.txt"
venv="${FERRYMQ_VENV:-$HOME/.cache/ferrymq-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.ferrymq-requirements.stamp"

say() { echo "setup-test-deps: $*" >&2; }

# Installs Debian packages by name; refreshes the package lists only if a first try fails
# (a fresh image may have none). Returns non-zero if they could not be installed.
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        say "not root: cannot install $* with apt-get; install them by hand"
        return 1
    fi
    if ! command -v apt-get >/dev/null; then
        say "no apt-get on this machine: cannot install $*"
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-y -q --no-install-recommends -o Dpkg::Use-Pty=0)
    if apt-get install "${apt_opts[@]}" "$@" >/dev/null 2>&1; then
        return 0
    fi
    say "apt-get install $* failed; running apt-get update and trying again"
    apt-get update -q >/dev/null && apt-get install "${apt_opts[@]}" "$@" >/dev/null
}

install_kcat() {
    if command -v kcat >/dev/null || command -v kafkacat >/dev/null; then
        return
    fi
    say "installing kcat"
    # Without kcat its tests are skipped (with the reason); the other clients still run.
    apt_install kcat || say "kcat not installed: test_kcat.py will be skipped"
}

# Creates the venv unless a working one is there. Debian's python3 lacks ensurepip until
# python3-venv (named after the minor version, e.g. python3.11-venv) is installed.
ensure_venv() {
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        return
    fi
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if "$python" -m venv "$venv" >/dev/null 2>&1; then
        return
    fi
    rm -rf "$venv"
    local minor
    minor=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    say "'$python -m venv' failed; installing python$minor-venv"
    apt_install "python$minor-venv" || apt_install python3-venv || true
    "$python" -m venv "$venv"
}

venv_stamp() {
    {
        sha256sum "$requirements" | cut -d' ' -f1
        "$venv/bin/python" -c 'import sys; print(sys.version)'
    } 2>/dev/null
}

install_requirements() {
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$(venv_stamp)" ]]; then
        return
    fi
    say "installing $requirements into $venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        -r "$requirements"
    venv_stamp >"$stamp"
}

install_chaos_tools() {
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v tc >/dev/null || [[ " ${missing[*]} " == *" iproute2 "* ]] || missing+=(iproute2)
    command -v nft >/dev/null || missing+=(nftables)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    say "installing ${missing[*]} for the chaos harness"
    apt_install "${missing[@]}" || say "${missing[*]} not installed: chaos tests run on loopback without network faults"
}

main() {
    install_chaos_tools
    if [[ "${1:-}" == --chaos-only ]]; then
        return
    fi
    install_kcat
    mkdir -p "$(dirname "$venv")"
    # Two test runs sharing a venv must not install into it at the same time.
    exec 9>"$venv.lock"
    if command -v flock >/dev/null; then
        flock 9
    fi
    ensure_venv
    install_requirements
}

main "$@"
