#!/usr/bin/env bash
# Finals-first scheduling on the local Triton's offline model: `sgw load` with N sessions
# (each looping the golden clips in real time, partials on) through the gateway's offline
# route, once with triton.max_inflight=4096 (every request goes to Triton at once: no
# ordering in the gateway), once with the default (4: finals first) and once with the same
# bound in arrival order (fifo4: triton.queue=fifo — tells the bound's effect from the
# order's). Prints partial and final p50/p95 per run and the statuses the clients got.
#
# Usage: bash scripts/bench-finals-first.sh   (SESSIONS="8 16", DURATION=45s, RAMP=5s,
#        INFLIGHT="4096 4 fifo4": N = finals first with N in flight, fifoN = arrival order)
# Needs the release build (cargo build --release -p speech-gateway -p sgw-tools) and the
# local Triton (bash scripts/local-triton.sh start; TRITON_GRPC_PORT, default 8001).
# Reports go to OUT (default target/bench/finals-first/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BIN_DIR:-target/release}
triton="127.0.0.1:${TRITON_GRPC_PORT:-8001}"
out=${OUT:-target/bench/finals-first}
rm -rf "$out"
mkdir -p "$out"
for n in ${SESSIONS:-8 16}; do
  for arm in ${INFLIGHT:-4096 4 fifo4}; do
    inflight=${arm#fifo}
    queue=finals_first
    [[ $arm == fifo* ]] && queue=fifo
    run="$out/n$n-inflight$arm"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    SGW_LISTEN="127.0.0.1:$port" SGW_AUTH__ENABLED=false SGW_ADMISSION__MAX_DELAY=0s \
      SGW_ROUTES__DEFAULT="triton://$triton/asr_offline" SGW_ROUTES__OFFLINE="triton://$triton/asr_offline" \
      SGW_TRITON__MAX_INFLIGHT="$inflight" SGW_TRITON__QUEUE="$queue" \
      "$bin/speech-gateway" serve >"$run.gateway.log" 2>&1 &
    gw=$!
    for _ in $(seq 100); do
      curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "== $n sessions, max_inflight $inflight, queue $queue (load $(cut -d' ' -f1-3 /proc/loadavg))"
    "$bin/sgw" load --url "ws://127.0.0.1:$port/v1/audio/stream" --route offline \
      --clips golden/clips --sessions "$n" --duration "${DURATION:-45s}" --ramp "${RAMP:-5s}" \
      --out "$run" >"$run.log" 2>&1 || true
    curl -s "http://127.0.0.1:$port/metrics" | grep -E '^sgw_decode_(wait_seconds_(sum|count)|partials_skipped_total)' || true
    kill "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
    sed -n '/^[|] path/,/^$/p' "$run/load.md" || true
  done
done
