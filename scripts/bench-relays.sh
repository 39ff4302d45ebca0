#!/usr/bin/env bash
# Relays side by side (issue 17): the gateway (plain and TLS), examples/floor_relay and,
# given its source, NVIDIA's websocket-bridge, each in front of the same zero-compute back
# end and loaded by the same Node client. A benchmark: not part of scripts/test.sh or CI.
#
# Usage: [SESSIONS=400] [DURATION=35] [RAMP=10] [RUNS=3] [ROWS=id,...] [BRIDGE_SRC=dir] \
#          bash scripts/bench-relays.sh
#
# Rows (ROWS takes ids or shell patterns, comma-separated, e.g. ROWS='gw-*,floor-long'):
#   bridge-long      NVIDIA websocket-bridge (Node, wss): only with BRIDGE_SRC, only long
#                    (it ends a session at its first final)
#   gw-tls-long      speech-gateway serving wss (tls.cert / tls.key: dev certs)
#   gw-long          speech-gateway, plain ws
#   gw-nowords-long  speech-gateway, plain, `word_timestamps: false` in `start`
#   floor-long       examples/floor_relay, plain (text, confidence, timestamp: no words)
#   floor-words-long examples/floor_relay with FLOOR_RELAY_WORDS=1: each result's words
#                    too, the same output as gw-long (the floor for word timestamps on)
#   gw-tls-short, gw-short, floor-short   the same on the short workload
# Workloads (sim-backend --riva, its default 400 ms a word): long = --final-words 100000 (no
# final until the stream ends: every partial carries the whole utterance), short =
# --final-words 6 (a final every ~2.4 s).
#
# Each run starts a fresh sim and relay on 127.0.0.1, prints the load average, and runs
# benches/relay-client (node; `npm ci` on first use): SESSIONS sessions started evenly over
# RAMP seconds, each streaming a 10 s speech clip (CLIP=file overrides; made with sox from
# two golden clips) in 100 ms frames at real time for DURATION seconds. Over the steady
# window (RAMP + 1 s to DURATION - 0.5 s after the first start: every session live) the
# client reads the relay process's CPU (/proc/PID/stat utime + stime) and RSS
# (/proc/PID/status VmRSS; per session = (RSS at N - RSS idle before the run) / N) and the
# latency of the partials it receives (benches/relay-client/client.js says how, per
# protocol). RUNS repeats every row, interleaved (run 1 of every row, then run 2, ...); the
# table gives the range over the runs. The table goes to stdout and to
# target/bench/relays/STAMP/table.md (and target/bench/relays/latest.md); each run's JSON
# and the processes' logs sit beside it (OUT=dir moves them).
#
# BRIDGE_SRC=dir: a local copy of the public nvidia-riva/websocket-bridge source. It is
# copied to target/bench/relays/websocket-bridge (scratch, never committed; its
# node_modules are kept between invocations), patched there — its `grpc` require and
# dependency become `@grpc/grpc-js` (the native `grpc` module does not build on current
# Node), it listens on 127.0.0.1 only — then `npm install --omit=dev`; each run writes its
# env.txt (RIVA_API_URL = the sim, PORT) and certificates/ (the dev certs of
# scripts/gen-certs.sh) and starts `node server.js`.
#
# Binaries (release builds; this script builds nothing): BIN_DIR (default target/release)
# holds speech-gateway and sim-backend; floor_relay is BIN_DIR/examples/floor_relay or
# BIN_DIR/floor_relay (FLOOR_BIN overrides; GATEWAY_BIN and SIM_BIN likewise). Build them with
#   cargo build --release --bin speech-gateway --bin sim-backend
#   cargo build --release -p speech-gateway --example floor_relay
# Needs node and npm, sox (for the clip), curl, python3, openssl (certificates).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "bench-relays: $*" >&2; exit 1; }
log() { echo "bench-relays: $*" >&2; }

sessions=${SESSIONS:-400}
duration=${DURATION:-35}
duration=${duration%s}
ramp=${RAMP:-10}
ramp=${ramp%s}
runs=${RUNS:-3}
[[ $sessions =~ ^[1-9][0-9]*$ && $duration =~ ^[1-9][0-9]*$ && $ramp =~ ^[0-9]+$ && $runs =~ ^[1-9][0-9]*$ ]] ||
  die "SESSIONS, DURATION, RAMP (seconds) and RUNS must be whole numbers"
((duration >= ramp + 4)) || die "DURATION must be at least RAMP + 4 s (the steady window is RAMP + 1 .. DURATION - 0.5)"

bin_dir=${BIN_DIR:-target/release}
gw_bin=${GATEWAY_BIN:-$bin_dir/speech-gateway}
sim_bin=${SIM_BIN:-$bin_dir/sim-backend}
floor_bin=${FLOOR_BIN:-}
if [[ -z $floor_bin ]]; then
  floor_bin=$bin_dir/examples/floor_relay
  [[ -x $floor_bin ]] || floor_bin=$bin_dir/floor_relay
fi
out_root=${OUT:-target/bench/relays}
client_dir=benches/relay-client

# id | relay (as the table names it) | workload
all_rows=(
  "bridge-long|NVIDIA websocket-bridge (Node, wss)|long"
  "gw-tls-long|speech-gateway, TLS|long"
  "gw-long|speech-gateway, plain|long"
  "gw-nowords-long|speech-gateway, plain, \`word_timestamps: false\`|long"
  "floor-long|\`examples/floor_relay\` (plain)|long"
  "floor-words-long|\`examples/floor_relay\` (plain), with words|long"
  "gw-tls-short|speech-gateway, TLS|short"
  "gw-short|speech-gateway, plain|short"
  "floor-short|\`examples/floor_relay\` (plain)|short"
)
IFS=',' read -r -a patterns <<<"${ROWS:-*}"
rows=()
for row in "${all_rows[@]}"; do
  id=${row%%|*}
  for p in "${patterns[@]}"; do
    # shellcheck disable=SC2053 # ROWS holds patterns
    if [[ $id == $p ]]; then
      if [[ $id == bridge-* && -z ${BRIDGE_SRC:-} ]]; then
        [[ $p == "$id" ]] && die "row $id needs BRIDGE_SRC=path of a websocket-bridge source"
        log "skipping $id (no BRIDGE_SRC)"
      else
        rows+=("$row")
      fi
      break
    fi
  done
done
((${#rows[@]})) || die "ROWS=${ROWS:-} selects no row (ids: bridge-long gw-tls-long gw-long gw-nowords-long floor-long floor-words-long gw-tls-short gw-short floor-short)"
# shellcheck disable=SC2053 # $1 is a pattern
any_selected() { local r; for r in "${rows[@]}"; do [[ ${r%%|*} == $1 ]] && return 0; done; return 1; }

for t in node npm curl python3; do command -v "$t" >/dev/null 2>&1 || die "$t not found"; done
[[ -x $sim_bin ]] || die "no $sim_bin (BIN_DIR / SIM_BIN; cargo build --release --bin sim-backend)"
if any_selected 'gw-*'; then
  [[ -x $gw_bin ]] || die "no $gw_bin (BIN_DIR / GATEWAY_BIN; cargo build --release --bin speech-gateway)"
fi
if any_selected 'floor-*'; then
  [[ -x $floor_bin ]] || die "no floor_relay in $bin_dir/examples or $bin_dir (FLOOR_BIN; cargo build --release -p speech-gateway --example floor_relay)"
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$out_root/$stamp
mkdir -p "$out"

# The client (ws pinned by package-lock.json), installed again only when the lock changes.
lock_sum=$(sha256sum "$client_dir/package-lock.json" | cut -d' ' -f1)
if [[ $(cat "$client_dir/node_modules/.lock.sha256" 2>/dev/null || true) != "$lock_sum" ]]; then
  log "npm ci in $client_dir"
  (cd "$client_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_sum" >"$client_dir/node_modules/.lock.sha256"
fi

# The clip: 10 s of speech (two human golden recordings, 7.1 s + 5.3 s, cut at 10 s).
clip=${CLIP:-$out_root/clip-10s.wav}
if [[ ! -f $clip ]]; then
  command -v sox >/dev/null 2>&1 || die "sox not found (apt-get install sox), or give CLIP=file.wav"
  sox golden/clips/human-librivox-0870.wav golden/clips/human-librivox-0890.wav "$clip" trim 0 10
fi

certs=$out_root/certs
if any_selected '*tls*' || any_selected 'bridge-*'; then
  if [[ ! -f $certs/server.pem ]]; then
    bash scripts/gen-certs.sh --out "$certs" >&2
  fi
fi

bridge_dir=$out_root/websocket-bridge
if any_selected 'bridge-*'; then
  [[ -f $BRIDGE_SRC/server.js && -f $BRIDGE_SRC/riva_client/asr.js ]] ||
    die "BRIDGE_SRC=$BRIDGE_SRC does not look like websocket-bridge (no server.js, riva_client/asr.js)"
  log "websocket-bridge: copying $BRIDGE_SRC to $bridge_dir and patching it"
  mkdir -p "$bridge_dir"
  tar -C "$BRIDGE_SRC" --exclude=.git --exclude=node_modules -cf - . | tar -C "$bridge_dir" -xf -
  # The native `grpc` module does not build on current Node: the same API from @grpc/grpc-js
  # (already one of its dependencies).
  mapfile -t grpc_users < <(grep -rlE --include='*.js' --exclude-dir=node_modules "require\(['\"]grpc['\"]\)" "$bridge_dir" || true)
  ((${#grpc_users[@]})) || log "websocket-bridge: no require('grpc') found (already grpc-js?)"
  for f in "${grpc_users[@]}"; do
    sed -i -E "s/require\((['\"])grpc(['\"])\)/require(\1@grpc\/grpc-js\2)/g" "$f"
    log "websocket-bridge: patched ${f#"$bridge_dir"/}: require('grpc') -> require('@grpc/grpc-js')"
  done
  node -e '
    const fs = require("fs"); const f = process.argv[1];
    const p = JSON.parse(fs.readFileSync(f, "utf8"));
    delete p.dependencies.grpc;
    p.dependencies["@grpc/grpc-js"] = p.dependencies["@grpc/grpc-js"] || "^1.7.1";
    fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n");' "$bridge_dir/package.json"
  log "websocket-bridge: package.json: dependency grpc removed (@grpc/grpc-js kept)"
  # Listen on 127.0.0.1 only, like everything else here (it listens on every address).
  if grep -q "server.listen(port, " "$bridge_dir/server.js"; then
    sed -i "s/server.listen(port, /server.listen(port, '127.0.0.1', /" "$bridge_dir/server.js"
    log "websocket-bridge: patched server.js: listens on 127.0.0.1"
  else
    log "websocket-bridge: server.js has no 'server.listen(port, ': left listening on every address"
  fi
  log "websocket-bridge: npm install --omit=dev"
  (cd "$bridge_dir" && npm install --omit=dev --no-audit --no-fund --loglevel=error >&2)
  mkdir -p "$bridge_dir/certificates"
  cp "$certs/server.pem" "$bridge_dir/certificates/cert.pem"
  cp "$certs/server.key" "$bridge_dir/certificates/key.pem"
fi

ulimit -n "$(ulimit -Hn)"
hz=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tcp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # what, command...
  local what=$1
  shift
  for _ in $(seq 200); do
    "$@" && return 0
    sleep 0.1
  done
  die "$what did not come up (see $out)"
}

pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

results=()
run_row() { # row run
  local row=$1 run=$2 id relay workload final_words riva_port port relay_pid url tag
  IFS='|' read -r id relay workload <<<"$row"
  case $workload in long) final_words=100000 ;; short) final_words=6 ;; esac
  local base=$out/$id-$run
  riva_port=$(free_port)
  port=$(free_port)
  "$sim_bin" --riva "127.0.0.1:$riva_port" --final-words "$final_words" >"$base.sim.log" 2>&1 &
  pids+=("$!")
  wait_for "sim-backend" tcp_up "$riva_port"
  local client_args=(--protocol v1)
  case $id in
    gw-*)
      local env=(SGW_LIMITS__CONNECT_RATE=0 SGW_AUTH__ENABLED=false SGW_LOG_LEVEL=warn SGW_HEALTH__INTERVAL=5s)
      if [[ $id == gw-tls-* ]]; then
        env+=(SGW_TLS__CERT="$certs/server.pem" SGW_TLS__KEY="$certs/server.key" SGW_TLS__MAX_HANDSHAKES_PER_IP=0)
        url=wss://127.0.0.1:$port/v1/audio/stream
      else
        url=ws://127.0.0.1:$port/v1/audio/stream
      fi
      env "${env[@]}" "$gw_bin" serve --listen "127.0.0.1:$port" --backend "riva://127.0.0.1:$riva_port" \
        >"$base.relay.log" 2>&1 &
      relay_pid=$!
      pids+=("$relay_pid")
      if [[ $id == gw-tls-* ]]; then
        wait_for "speech-gateway" curl -fs --cacert "$certs/ca.pem" "https://127.0.0.1:$port/ready" -o /dev/null
      else
        wait_for "speech-gateway" curl -fs "http://127.0.0.1:$port/ready" -o /dev/null
      fi
      [[ $id == gw-nowords-* ]] && client_args+=(--word-timestamps false)
      ;;
    floor-*)
      local words=0
      [[ $id == floor-words-* ]] && words=1
      FLOOR_RELAY_WORDS=$words "$floor_bin" serve --listen "127.0.0.1:$port" --backend "riva://127.0.0.1:$riva_port" >"$base.relay.log" 2>&1 &
      relay_pid=$!
      pids+=("$relay_pid")
      url=ws://127.0.0.1:$port/v1/audio/stream
      wait_for "floor_relay" tcp_up "$port"
      ;;
    bridge-*)
      printf '# written by scripts/bench-relays.sh\nRIVA_API_URL="127.0.0.1:%s"\nPORT="%s"\n' "$riva_port" "$port" \
        >"$bridge_dir/env.txt"
      (cd "$bridge_dir" && exec node server.js) >"$base.relay.log" 2>&1 &
      relay_pid=$!
      pids+=("$relay_pid")
      url=wss://127.0.0.1:$port/
      client_args=(--protocol audiocodes)
      wait_for "websocket-bridge" tcp_up "$port"
      ;;
  esac
  [[ $url == wss://* ]] && client_args+=(--ca "$certs/ca.pem")
  sleep 1 # idle: the RSS before the run
  local loadavg
  loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
  log "run $run/$runs: $id ($relay, $workload), load average before: $loadavg"
  tag=(--tag "row=$id" --tag "relay=$relay" --tag "workload=$workload" --tag "run=$run" --tag "loadavg=$loadavg")
  node "$client_dir/client.js" "${client_args[@]}" --url "$url" --clip "$clip" --sessions "$sessions" \
    --duration "$duration" --ramp "$ramp" --pid "$relay_pid" --clk-tck "$hz" --out "$base.json" "${tag[@]}" &
  local client_pid=$!
  pids+=("$client_pid")
  wait "$client_pid" || log "client failed on $id run $run"
  kill -0 "$relay_pid" 2>/dev/null || log "the relay of $id run $run died (see $base.relay.log)"
  stop_all
  [[ -f $base.json ]] && results+=("$base.json")
  return 0
}

log "$sessions sessions, $duration s each, ramp $ramp s, $runs run(s) of: $(for r in "${rows[@]}"; do printf '%s ' "${r%%|*}"; done)"
log "reports in $out"
for ((run = 1; run <= runs; run++)); do
  for row in "${rows[@]}"; do
    run_row "$row" "$run"
  done
done
((${#results[@]})) || die "no run produced a result"

{
  echo "Relays side by side: $sessions sessions, $duration s each (ramp $ramp s), $runs run(s) a row;"
  echo "sim-backend --riva (--final-words 100000 long, 6 short); clip $(basename "$clip"); $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ)."
  echo "Command: SESSIONS=$sessions DURATION=$duration RAMP=$ramp RUNS=$runs${ROWS:+ ROWS=$ROWS}${BRIDGE_SRC:+ BRIDGE_SRC=…} bash scripts/bench-relays.sh"
  echo
  node "$client_dir/report.js" "${results[@]}"
} | tee "$out/table.md"
cp "$out/table.md" "$out_root/latest.md"
log "table: $out/table.md"
