#!/usr/bin/env bash
# Create or refresh the Python venv used by the conformance tooling.
#
# Usage: bash scripts/py-env.sh        (from any directory)
# Prints only the absolute path of the venv's python on stdout; progress goes
# to stderr. Re-installs tests/conformance/requirements.txt (hash-checked)
# only when that file's sha256 differs from the one recorded at the last
# successful install, so repeat runs are quick.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
venv="$repo_root/.venv/test"
req="$repo_root/tests/conformance/requirements.txt"
stamp="$venv/.requirements.sha256"
py="$venv/bin/python"

log() { printf 'py-env: %s\n' "$*" >&2; }

[[ -f "$req" ]] || { log "missing $req"; exit 1; }

if [[ ! -x "$py" ]]; then
  log "creating venv at $venv"
  mkdir -p -- "$(dirname -- "$venv")"
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
