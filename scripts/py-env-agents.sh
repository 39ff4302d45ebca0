#!/usr/bin/env bash
# Create or refresh the Python venv with a voice-agent framework's Deepgram STT plugin
# (LiveKit Agents + livekit-plugins-deepgram), used by crates/gateway/tests/voice_agent.rs
# through tests/conformance/agents/deepgram_plugin.py. Kept apart from .venv/test: it is
# larger (~120 MB of wheels) and only that test needs it.
#
# Usage: bash scripts/py-env-agents.sh        (from any directory)
# Prints only the absolute path of the venv's python (.venv/agents) on stdout; the work
# is scripts/py-env.sh's (hash-checked install of tests/conformance/agents/requirements.txt,
# only when that file changed).
set -euo pipefail
exec bash "$(dirname -- "${BASH_SOURCE[0]}")/py-env.sh" agents tests/conformance/agents/requirements.txt
