#!/usr/bin/env bash
# README command 2: everything CI checks, on any machine of this kind.
#   bash scripts/test.sh
# Formatting, lints, then every test (unit, integration against real in-process gRPC
# doubles, and conformance against the official NVIDIA Riva Python stubs). The Python
# venv for the conformance tests is built (pinned, hash-checked) by scripts/py-env.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "python test venv (tests/conformance/requirements.txt)"
bash scripts/py-env.sh >/dev/null

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (deny warnings)"
cargo clippy --all-targets --locked -- -D warnings

step "cargo nextest run"
cargo nextest run --locked --no-fail-fast "$@"
