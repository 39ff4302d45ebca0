#!/usr/bin/env bash
# Create or refresh the Python venv with RealtimeSTT's own client, used by
# crates/gateway/tests/realtimestt.rs through tests/conformance/realtimestt/stt_client.py.
# The package is installed without its dependencies (PIP_NO_DEPS: it declares torch and
# the whole recorder; its client needs only tests/conformance/realtimestt/requirements.txt).
#
# Usage: bash scripts/py-env-realtimestt.sh      (from any directory)
# Prints only the absolute path of the venv's python (.venv/realtimestt) on stdout.
set -euo pipefail
export PIP_NO_DEPS=1
exec bash "$(dirname -- "${BASH_SOURCE[0]}")/py-env.sh" realtimestt tests/conformance/realtimestt/requirements.txt
