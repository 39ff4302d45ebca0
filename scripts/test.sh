#!/usr/bin/env bash
# README command 2: everything CI checks, on any machine of this kind.
#   bash scripts/test.sh [nextest arguments]
# Formatting, lints, then every test: unit; integration against real in-process gRPC
# doubles; conformance against the official NVIDIA Riva and Triton Python stubs; end to
# end against the real local Triton (Whisper tiny.en on CPU) with espeak-ng speech. Also
# the supply-chain check (scripts/deny.sh) before the tests and a short fuzz run of every
# target after them (scripts/fuzz.sh; SGW_FUZZ_SECONDS sets its length).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*" >&2; }

step "test tools (espeak-ng, sox; shellcheck, promtool from prometheus; openssl for gen-certs.sh; chromium for the page test)"
if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v sox >/dev/null 2>&1 ||
  ! command -v shellcheck >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 ||
  ! command -v openssl >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); else sudo=(); fi
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq espeak-ng sox shellcheck prometheus openssl chromium >&2
fi

step "python test venv (tests/conformance/requirements.txt)"
bash scripts/py-env.sh >/dev/null
bash scripts/py-env-agents.sh >/dev/null

step "local Triton (scripts/local-triton.sh)"
started_triton=0
if ! bash scripts/local-triton.sh status >/dev/null 2>&1; then
  started_triton=1
fi
bash scripts/local-triton.sh start
stop_triton() {
  if ((started_triton)); then
    bash scripts/local-triton.sh stop || true
  fi
}
trap stop_triton EXIT

step "model repository unit tests (tests/triton, Python)"
.venv/triton/bin/python -m unittest discover -s tests/triton -p 'test_*.py'

step "deployment assets (scripts/check-deploy.sh: shellcheck, manifests, promtool)"
bash scripts/check-deploy.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (deny warnings)"
cargo clippy --all-targets --locked -- -D warnings

step "supply chain (scripts/deny.sh: cargo deny, offline advisories)"
bash scripts/deny.sh

step "cargo nextest run"
cargo nextest run --locked --no-fail-fast "$@"

if [[ ${CI_DROP_TEST_BUILD:-0} == 1 ]]; then
  # CI only (.ci/run): the fuzz build is a separate workspace, so the test build is not
  # needed any more; free its disk before it.
  step "freeing the test build (CI_DROP_TEST_BUILD=1)"
  rm -rf target/debug
  df -h . >&2 || true
fi

step "fuzz smoke run (scripts/fuzz.sh, ${SGW_FUZZ_SECONDS:-20} s a target)"
bash scripts/fuzz.sh "${SGW_FUZZ_SECONDS:-20}"
