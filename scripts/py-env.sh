#!/usr/bin/env bash
# Create or refresh the Python venv used by the conformance tooling.
#
# Usage: bash scripts/py-env.sh [NAME REQUIREMENTS]   (from any directory)
#   NAME, REQUIREMENTS: another venv, .venv/NAME from REQUIREMENTS (a path from the
#   repository root); scripts/py-env-agents.sh uses this. Default: .venv/test from
#   tests/conformance/requirements.txt.
# Prints only the absolute path of the venv's python on stdout; progress goes
# to stderr. Re-installs tests/conformance/requirements.txt (hash-checked)
# only when that file's sha256 differs from the one recorded at the last
# successful install, so repeat runs are quick.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
venv="$repo_root/.venv/${1:-test}"
req="$repo_root/${2:-tests/conformance/requirements.txt}"
stamp="$venv/.requirements.sha256"
py="$venv/bin/python"

log() { printf 'py-env: %s\n' "$*" >&2; }

[[ -f "$req" ]] || { log "missing $req"; exit 1; }

# Tests run in parallel: one installs, the others wait for it.
mkdir -p -- "$(dirname -- "$venv")"
exec 9>"$venv.lock"
flock 9

if [[ ! -x "$py" ]]; then
  log "creating venv at $venv"
  python3 -m venv "$venv" >&2
fi

want="$(sha256sum -- "$req" | cut -d' ' -f1)"
have="$(cat -- "$stamp" 2>/dev/null || true)"

if [[ "$want" != "$have" ]]; then
  log "installing $req"
  rm -f -- "$stamp"
  "$py" -m pip install --disable-pip-version-check --no-input --quiet \
    --require-hashes -r "$req" >&2
  printf '%s\n' "$want" >"$stamp"
  log "done"
fi

printf '%s\n' "$py"
