#!/usr/bin/env bash
# The hand-written pieces the gateway kept, measured against the crates that could replace
# them (benches/crates/, its own workspace). Prints markdown tables; ~2 min on 2 cores.
#   bash scripts/bench-crates.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
manifest=benches/crates/Cargo.toml
echo "## Resampling: the gateway's resampler against rubato"
cargo run --quiet --release --manifest-path "$manifest" --bin resample
echo
echo "## WAV files written to a pipe, read by hound"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng --stdout "hello world" >"$tmp/espeak-stdout.wav"
sox -n -r 16000 -c 1 -b 16 -t wav - synth 1 sine 440 >"$tmp/sox-pipe.wav" 2>/dev/null
cargo run --quiet --release --manifest-path "$manifest" --bin wav -- "$tmp"/*.wav samples/hello.wav
