#!/usr/bin/env bash
# The golden clips through three routes of one gateway in front of the local Triton, same
# run: `default` (the streaming model: its partials and finals), `offline` (the offline
# model, the gateway's VAD cutting utterances) and `twopass` (the streaming model's
# partials and utterance ends, each final decoded again by the offline model). Prints
# WER, first partial and final-after-end-of-speech per route and per clip.
#
# Usage: bash scripts/bench-two-pass.sh   (TAG=ci or TAG=all, SPEED=4, CONCURRENCY=1,
#        ROUNDS="1 2", DEADLINE=5s)
# Needs the release build (cargo build --release -p speech-gateway -p sgw-tools) and the
# local Triton (bash scripts/local-triton.sh start; TRITON_GRPC_PORT, default 8001).
# Reports go to OUT (default target/bench/two-pass/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BIN_DIR:-target/release}
triton="127.0.0.1:${TRITON_GRPC_PORT:-8001}"
out=${OUT:-target/bench/two-pass}
rm -rf "$out"
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SGW_LISTEN="127.0.0.1:$port" SGW_AUTH__ENABLED=false SGW_ADMISSION__MAX_DELAY=0s \
  SGW_ROUTES__DEFAULT="triton://$triton/asr_stream" \
  SGW_ROUTES__OFFLINE="triton://$triton/asr_offline" \
  SGW_ROUTES__TWOPASS="triton://$triton/asr_stream" SGW_TWO_PASS__ROUTES__TWOPASS=offline \
  SGW_TWO_PASS__DEADLINE="${DEADLINE:-5s}" \
  "$bin/speech-gateway" serve >"$out/gateway.log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
tags=(--tag "${TAG:-ci}")
[[ ${TAG:-ci} == all ]] && tags=()
for round in ${ROUNDS:-1}; do
  echo "== round $round (load $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin/sgw" eval --url "ws://127.0.0.1:$port/v1/audio/stream" \
    --route default --route offline --route twopass "${tags[@]}" \
    --speed "${SPEED:-4}" --concurrency "${CONCURRENCY:-1}" --out "$out/r$round" \
    >"$out/r$round.log" 2>&1 || true
done
curl -s "http://127.0.0.1:$port/metrics" | grep '^sgw_two_pass_finals_total' || true
python3 - "$out" <<'PY'
import glob, json, sys

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")

for f in sorted(glob.glob(f"{sys.argv[1]}/*/report.json")):
    r = json.load(open(f))
    by = {}
    for c in r["clips"]:
        by.setdefault(c["route"], []).append(c)
    print(f)
    for route, cs in by.items():
        errs = sum(c["word_errors"] for c in cs)
        words = sum(c["reference_words"] for c in cs)
        fp = [c["first_partial_ms"] for c in cs if c.get("first_partial_ms")]
        fl = [x for c in cs for x in (c.get("samples") or {}).get("final_ms", [])]
        print(f"  {route:8s} WER {errs / max(words, 1):.3f} ({errs}/{words})  first partial "
              f"p50 {pct(fp, .5):.0f} ms  final p50 {pct(fl, .5):.0f} p95 {pct(fl, .95):.0f} ms")
    for c in r["clips"]:
        if c["reference_words"]:
            print(f"    {c['route']:8s} {c['id']:24s} {c['wer']:.3f}  {c['hypothesis'][:70]}")
PY
