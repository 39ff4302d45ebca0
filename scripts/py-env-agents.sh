#!/usr/bin/env bash
# Create or refresh the Python venv with a voice-agent framework's Deepgram STT plugin
# (LiveKit Agents + livekit-plugins-deepgram), used by crates/gateway/tests/voice_agent.rs
# through tests/conformance/agents/deepgram_plugin.py. Kept apart from .venv/test: it is
# larger (~120 MB of wheels) and only that test needs it.
#
# Usage: bash scripts/py-env-agents.sh        (from any directory)
# Prints only the absolute path of the venv's python on stdout; progress goes
# to stderr. Re-installs tests/conformance/agents/requirements.txt (hash-checked)
# only when that file's sha256 differs from the one recorded at the last
# successful install, so repeat runs are quick.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
venv="$repo_root/.venv/agents"
req="$repo_root/tests/conformance/agents/requirements.txt"
stamp="$venv/.requirements.sha256"
py="$venv/bin/python"

log() { printf 'py-env-agents: %s\n' "$*" >&2; }

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
