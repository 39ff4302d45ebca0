#!/usr/bin/env bash
# Fuzz targets (fuzz/: cargo-fuzz, libFuzzer) for a short time each.
#   bash scripts/fuzz.sh [seconds per target, default 20] [target ...]
# Targets: client_message (v1 decoder), audio_frame (frame validation, PCM decoding,
# resampling), riva_response, triton_response and deepgram_message (back-end response
# mapping). Each run starts from the committed seeds in fuzz/corpus/<target>/ and writes
# what it finds to a scratch corpus, so the tree stays clean. A crash fails the script
# and leaves the input in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --sanitizer none <target> fuzz/artifacts/<target>/<file>
# Longer runs: SGW_FUZZ_CORPUS=DIR keeps the corpus in DIR/<target> between runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-20}
shift || true

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# cargo-fuzz passes rustc flags that only nightly accepts (-Z sanitizer, the
# sanitizer-coverage passes). CI has the stable toolchain only; RUSTC_BOOTSTRAP=1 lets
# stable rustc accept them. AddressSanitizer works on stable x86_64 Linux too (its
# runtime ships with the standard library).
export RUSTC_BOOTSTRAP=1

cargo fmt --manifest-path fuzz/Cargo.toml -- --check

if (($# == 0)); then
  mapfile -t targets < <(cargo fuzz list)
else
  targets=("$@")
fi

# Build flags. The default is for CI's smoke run: the dev profile (debug assertions,
# overflow checks; fuzz/Cargo.toml optimises the gateway crate lightly) without a
# sanitizer, which builds in about half the time of cargo-fuzz's default (release +
# AddressSanitizer). Our code has no `unsafe`, so what a short run can find is panics,
# overflows and broken invariants, which need no sanitizer. Long runs:
#   SGW_FUZZ_FLAGS="--sanitizer address --codegen-units 16" (release + ASan).
read -r -a flags <<<"${SGW_FUZZ_FLAGS:---dev --sanitizer none}"
cargo fuzz build "${flags[@]}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  corpus="${SGW_FUZZ_CORPUS:-$scratch}/$t"
  mkdir -p "$corpus"
  printf '\n== fuzz %s (%ss)\n' "$t" "$seconds" >&2
  log="$scratch/$t.log"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: libFuzzer's default.
  if ! cargo fuzz run "${flags[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    # The panic message (or sanitizer report), then libFuzzer's summary.
    grep -m 3 -A 4 -E 'panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer' "$log" >&2 || true
    tail -n 25 "$log" >&2
    echo "fuzz target $t FAILED: the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" >&2 || true
done
