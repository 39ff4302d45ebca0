#!/usr/bin/env bash
# A/B of two gateway builds side by side: both run at once, each behind its own sim and
# load client (two `bench-load.sh` runs started together), so both see the same machine
# at the same moment and their CPU ratio cancels the drift that separate runs suffer
# (here, one build measured 0.149 to 0.186 cores in back-to-back runs; in pairs, an A/A
# comparison stays within ±1 %). A benchmark: not part of scripts/test.sh or CI.
#
# Usage: bash scripts/bench-pair.sh A_BIN B_BIN [ROUNDS]
#   e.g. git stash; cargo build --release --bin speech-gateway; cp target/release/speech-gateway /tmp/a
#        git stash pop; cargo build --release --bin speech-gateway
#        bash scripts/bench-pair.sh /tmp/a target/release/speech-gateway 3
#
# Environment: SESSIONS per build (default 300), DURATION (35s), RAMP (5s), WORKLOAD=short
# (sim-backend --final-words 6: a final every ~2.4 s; the default) or long (--final-words
# 100000: one utterance); DIALECT (v1, deepgram, openai-realtime) goes on to bench-load.sh.
# Needs the release sim-backend and sgw (bench-load.sh says how).
# Prints, per round: the load average before it, each build's steady CPU (cores) and RSS per
# session beyond the replay audio, and B's CPU over A's. Reports go to
# target/bench/pair/ROUND-{a,b}/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

a_bin=${1:?usage: $0 A_BIN B_BIN [ROUNDS]}
b_bin=${2:?usage: $0 A_BIN B_BIN [ROUNDS]}
rounds=${3:-3}
sessions=${SESSIONS:-300}
case ${WORKLOAD:-short} in
  short) sim_args="--final-words 6" ;;
  long) sim_args="--final-words 100000" ;;
  *)
    echo "bench-pair: WORKLOAD must be short or long" >&2
    exit 1
    ;;
esac
for bin in "$a_bin" "$b_bin"; do
  [[ -x $bin ]] || {
    echo "bench-pair: $bin is not an executable" >&2
    exit 1
  }
done
out=target/bench/pair
mkdir -p "$out"

for round in $(seq "$rounds"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  pids=()
  for side in a b; do
    bin=$a_bin
    [[ $side == b ]] && bin=$b_bin
    SIM_ARGS="$sim_args" GATEWAY_BIN="$bin" OUT="$out/$round-$side" \
      bash scripts/bench-load.sh "$sessions" "${DURATION:-35s}" "${RAMP:-5s}" 0 \
      >"$out/$round-$side.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || {
      echo "bench-pair: a run failed: see $out/$round-*.log" >&2
      exit 1
    }
  done
  python3 - "$out/$round-a/load.json" "$out/$round-b/load.json" "$round" "$load" <<'EOF'
import json, sys

a, b = (json.load(open(p)) for p in sys.argv[1:3])
ra, rb = a["resources"], b["resources"]
ca, cb = ra["steady_cpu_cores"], rb["steady_cpu_cores"]
ma = ra["rss_beyond_replay_per_session_bytes"] / 1024
mb = rb["rss_beyond_replay_per_session_bytes"] / 1024
failed = a["gateway"]["failed"] + b["gateway"]["failed"]
print(
    f"round {sys.argv[3]} (load {sys.argv[4]}): CPU A {ca:.4f} B {cb:.4f} cores, "
    f"B/A {cb / ca:.3f}; RSS beyond replay A {ma:.1f} B {mb:.1f} KiB a session; "
    f"failed sessions {failed}"
)
EOF
done
