#!/usr/bin/env bash
# The gateway's own cost at N real-time sessions, against the zero-compute back end.
#
# Usage: bash scripts/bench-load.sh SESSIONS [DURATION [RAMP [DIRECT_SESSIONS]]]
#   e.g. bash scripts/bench-load.sh 1000 40s 10s
#
# Starts `sim-backend` (Riva) and `speech-gateway serve` in front of it as separate
# processes of the release build (BIN_DIR=dir overrides target/release), runs
# `sgw load` with the gateway's pid (CPU and RSS from /proc) and, in the same
# run, DIRECT_SESSIONS (default: min(SESSIONS, 1000)) Riva streams straight to the sim with
# the same audio and cadence (the baseline of the added latency). Prints the load report and
# the CPU used by the sim and the load client over the run. Reports go to target/bench/N/.
# GATEWAY_BIN runs another build as the gateway (A/B). SIM_ARGS adds sim-backend flags (e.g. "--final-words 1": a final every word, so the
# replay buffer stays small). DIALECT=deepgram makes the gateway's sessions speak Deepgram's
# /v1/listen instead of v1, DIALECT=openai-realtime OpenAI's /v1/realtime (24 kHz base64
# appends, resampled by the gateway) (`sgw load --dialect`; same audio, pacing and report;
# the direct baseline is Riva either way); reports then go to target/bench/N-DIALECT/. OUT=dir
# overrides the report directory. CLIPS=path (a WAV or a directory of them) replaces samples/hello.wav
# (e.g. a 24 kHz copy, to price the resampling apart from a dialect's framing). Everything listens on 127.0.0.1 and stops at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sessions=${1:?usage: $0 SESSIONS [DURATION [RAMP [DIRECT_SESSIONS]]]}
duration=${2:-60s}
ramp=${3:-10s}
direct=${4:-$((sessions < 1000 ? sessions : 1000))}
bin_dir=${BIN_DIR:-target/release}
# GATEWAY_BIN: another build for the gateway process only (A/B of a change: the sim and
# the load client stay the same).
gw_bin=${GATEWAY_BIN:-$bin_dir/speech-gateway}
sim_bin=$bin_dir/sim-backend
sgw_bin=$bin_dir/sgw
[[ -x $gw_bin && -x $sim_bin && -x $sgw_bin ]] || {
  echo "bench-load: build first: cargo build --release --bin speech-gateway --bin sim-backend --bin sgw" >&2
  exit 1
}
dialect=${DIALECT:-v1}
case $dialect in
  v1) out=${OUT:-target/bench/$sessions} ;;
  deepgram) out=${OUT:-target/bench/$sessions-deepgram} ;;
  openai-realtime) out=${OUT:-target/bench/$sessions-openai-realtime} ;;
  *)
    echo "bench-load: DIALECT must be v1, deepgram or openai-realtime, not $dialect" >&2
    exit 1
    ;;
esac
mkdir -p "$out"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
riva_port=$(free_port)
gw_port=$(free_port)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

ulimit -n "$(ulimit -Hn)"
read -r -a sim_args <<<"${SIM_ARGS:-}"
"$sim_bin" --riva "127.0.0.1:$riva_port" "${sim_args[@]}" >"$out/sim.log" 2>&1 &
sim_pid=$!
pids+=("$sim_pid")
# Every session comes from 127.0.0.1: the per-IP connect limit is off.
SGW_LIMITS__CONNECT_RATE=0 SGW_AUTH__ENABLED=false SGW_LOG_LEVEL=warn SGW_HEALTH__INTERVAL=5s "$gw_bin" serve --listen "127.0.0.1:$gw_port" \
  --backend "riva://127.0.0.1:$riva_port" >"$out/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$gw_port/ready" >/dev/null 2>&1 && break
  sleep 0.1
done

# CPU ticks of a process: "user system" (kernel time includes the loopback TCP work the
# process's sends trigger on the receiving side too).
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
read -r sim_u0 sim_s0 < <(ticks "$sim_pid")
read -r gw_u0 gw_s0 < <(ticks "$gw_pid")
start=$(date +%s.%N)
"$sgw_bin" load --url "ws://127.0.0.1:$gw_port/v1/audio/stream" --dialect "$dialect" --sessions "$sessions" \
  --duration "$duration" --ramp "$ramp" --pid "$gw_pid" --clips "${CLIPS:-samples/hello.wav}" \
  --direct-riva "127.0.0.1:$riva_port" --direct-sessions "$direct" --out "$out" &
load_pid=$!
sleep 1
read -r load_u0 load_s0 < <(ticks "$load_pid")
wait_for_load() { wait "$load_pid"; }
# The load client's own CPU: read just before it exits (sampled every second).
load_u1=$load_u0 load_s1=$load_s0
while kill -0 "$load_pid" 2>/dev/null; do
  if t=$(ticks "$load_pid" 2>/dev/null); then read -r load_u1 load_s1 <<<"$t"; fi
  sleep 1
done
wait_for_load
end=$(date +%s.%N)
read -r sim_u1 sim_s1 < <(ticks "$sim_pid")
read -r gw_u1 gw_s1 < <(ticks "$gw_pid")
awk -v t0="$start" -v t1="$end" -v hz="$hz" \
  -v g="$gw_u0 $gw_s0 $gw_u1 $gw_s1" -v s="$sim_u0 $sim_s0 $sim_u1 $sim_s1" \
  -v l="$load_u0 $load_s0 $load_u1 $load_s1" '
  function use(name, v,    a, user, sys) {
    split(v, a, " ")
    user = (a[3] - a[1]) / hz / wall; sys = (a[4] - a[2]) / hz / wall
    total_user += user; total_sys += sys
    printf "| %s | %.2f | %.2f | %.2f |\n", name, user + sys, user, sys
  }
  BEGIN {
    wall = t1 - t0
    printf "\nCPU over the whole run (%.0f s, ramp and wind-down included), in cores:\n\n", wall
    print "| process | total | user | kernel |"
    print "|---|---:|---:|---:|"
    use("gateway", g); use("sim-backend", s); use("load client", l)
    printf "| all three | %.2f | %.2f | %.2f |\n", total_user + total_sys, total_user, total_sys
  }' | tee -a "$out/load.md"
