#!/usr/bin/env bash
# Builds the golden clips of golden/manifest.toml, reproducibly.
#
# Usage: bash scripts/make-golden.sh [--force] [--check]
#   (default)  make every clip that is missing (the committed ones are kept as they are)
#   --force    remake every clip, committed ones too (then review `git diff --stat golden/`)
#   --check    make what is missing, then verify every clip against golden/SHA256SUMS
#
# Environment: GOLDEN_CLIPS (golden/clips) where the clips go; GOLDEN_SKIP_HUMAN=1 leaves
# out the human recordings (they need the Debian package; tests use this).
#
# Synthetic speech comes from espeak-ng (several voices and rates), everything else from
# sox: noise, tones, tempo, level and 8 kHz telephony. Human speech comes from the Debian
# package pocketsphinx-testdata (CMU Sphinx test recordings and LibriVox excerpts; origin
# and licence are in golden/manifest.toml and golden/README.md), fetched with
# `apt-get download` when /usr/share/pocketsphinx/test/data is not installed.
#
# Determinism: espeak-ng gives the same samples for the same version (1.51 here); sox runs
# with -R (fixed random seed: noise is the same every run) and -D (no dither). Clips are
# 16 kHz mono PCM16 WAV except the telephony clip (8 kHz).
#
# SNR: a noisy clip mixes speech s and noise n with SNR = 20·log10(rms(s) / rms(n)), where
# rms is over the whole file (sox `stat` "RMS amplitude"; espeak-ng clips have no long
# pauses, so the speech RMS is close to its active level). The noise is generated, its RMS
# measured, and it is scaled by rms(s) / (rms(n) · 10^(SNR/20)) before an unscaled mix.
#
# What is committed: every clip but `long-*` (2+ minutes, 4 MB): ~4 MB in all. The long
# clip is remade here (eval tells you to run this script when a clip is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

force=0
check=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --check) check=1 ;;
    *) echo "usage: $0 [--force] [--check]" >&2; exit 2 ;;
  esac
done

clips="${GOLDEN_CLIPS:-golden/clips}"
mkdir -p "$clips"
work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT

for tool in espeak-ng sox; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "make-golden: $tool is needed (apt-get install espeak-ng sox)" >&2
    exit 1
  }
done

SOX=(sox -R -D -V1)
FMT16=(-r 16000 -c 1 -b 16 -e signed-integer)

want() { [[ $force -eq 1 || ! -f "$clips/$1.wav" ]]; }
made() { echo "make-golden: $1 ($(soxi -D "$clips/$1.wav") s)" >&2; }

# speech OUT VOICE RATE TEXT: espeak-ng speech, 16 kHz mono, peak at -6 dBFS.
speech() {
  local out=$1 voice=$2 rate=$3 text=$4
  espeak-ng -v "$voice" -s "$rate" -w "$work/raw.wav" "$text"
  "${SOX[@]}" "$work/raw.wav" "${FMT16[@]}" "$out" gain -n -6
}

rms() { sox "$1" -n stat 2>&1 | awk '/RMS +amplitude/ {print $3}'; }

# mix_snr SPEECH NOISE_KIND SNR_DB OUT: speech plus noise at SNR_DB (see the header).
mix_snr() {
  local s=$1 kind=$2 snr=$3 out=$4 len
  len=$(soxi -D "$s")
  "${SOX[@]}" -n "${FMT16[@]}" "$work/noise.wav" synth "$len" "$kind" vol 0.3
  local gain
  gain=$(awk -v rs="$(rms "$s")" -v rn="$(rms "$work/noise.wav")" -v snr="$snr" \
    'BEGIN { printf "%.6f", rs / (rn * 10 ^ (snr / 20)) }')
  "${SOX[@]}" -m -v 1 "$s" -v "$gain" "$work/noise.wav" "${FMT16[@]}" "$out"
}

silence() { "${SOX[@]}" -n "${FMT16[@]}" "$1" trim 0 "$2"; }

# The sentences (the manifest's reference texts are these, word for word).
S_WEATHER="The weather today is sunny with a light breeze from the west."
S_NOTEBOOK="Please remember to bring your notebook to the meeting tomorrow morning."
S_TRAIN="Our train leaves the station at seven and arrives before noon."
S_MARKET="She bought 3 apples and 12 oranges at the market on Friday."
S_LIBRARY="The library closes at nine o'clock on weekdays and at five on Sundays."
S_GATEWAY="A quick test of the speech gateway shows how fast the results arrive."
S_LEFT="Turn left at the second traffic light and park near the blue building."
S_REQUESTS="We measured 250 requests per second during the afternoon."
S_GARDEN="My sister planted tomatoes and beans in the garden last spring."
S_COFFEE="Could you please send me the report before the end of the day?"

if want clean-en-us; then speech "$clips/clean-en-us.wav" en-us 160 "$S_WEATHER"; made clean-en-us; fi
if want clean-en-gb; then speech "$clips/clean-en-gb.wav" en-gb 150 "$S_NOTEBOOK"; made clean-en-gb; fi
if want clean-numbers; then speech "$clips/clean-numbers.wav" en-us 150 "$S_MARKET"; made clean-numbers; fi
if want clean-slow-f; then speech "$clips/clean-slow-f.wav" en-us+f3 120 "$S_GARDEN"; made clean-slow-f; fi

if want noisy-white-20db; then
  speech "$work/s.wav" en-us 160 "$S_TRAIN"
  mix_snr "$work/s.wav" whitenoise 20 "$clips/noisy-white-20db.wav"; made noisy-white-20db
fi
if want noisy-pink-10db; then
  speech "$work/s.wav" en-gb 160 "$S_LIBRARY"
  mix_snr "$work/s.wav" pinknoise 10 "$clips/noisy-pink-10db.wav"; made noisy-pink-10db
fi
if want noisy-white-5db; then
  speech "$work/s.wav" en-us 150 "$S_GATEWAY"
  mix_snr "$work/s.wav" whitenoise 5 "$clips/noisy-white-5db.wav"; made noisy-white-5db
fi

if want fast-tempo125; then
  speech "$work/s.wav" en-us 160 "$S_LEFT"
  "${SOX[@]}" "$work/s.wav" "$clips/fast-tempo125.wav" tempo -s 1.25; made fast-tempo125
fi
if want fast-rate230; then speech "$clips/fast-rate230.wav" en-gb 230 "$S_COFFEE"; made fast-rate230; fi

# Quiet: speech peaking at -36 dBFS (30 dB below the other clips).
if want quiet; then
  speech "$work/s.wav" en-us 160 "$S_REQUESTS"
  "${SOX[@]}" "$work/s.wav" "$clips/quiet.wav" gain -30; made quiet
fi

# Music-like tone under voice: an A-minor chord (220, 261.63, 329.63 Hz) with a slow
# tremolo, 12 dB below the speech's RMS.
if want tone-under-voice; then
  speech "$work/s.wav" en-us 160 "$S_NOTEBOOK"
  len=$(soxi -D "$work/s.wav")
  "${SOX[@]}" -n "${FMT16[@]}" "$work/chord.wav" synth "$len" sine 220 sine 261.63 sine 329.63 \
    channels 1 tremolo 3 40 vol 0.3
  gain=$(awk -v rs="$(rms "$work/s.wav")" -v rn="$(rms "$work/chord.wav")" \
    'BEGIN { printf "%.6f", rs / (rn * 10 ^ (12 / 20)) }')
  "${SOX[@]}" -m -v 1 "$work/s.wav" -v "$gain" "$work/chord.wav" "${FMT16[@]}" "$clips/tone-under-voice.wav"
  made tone-under-voice
fi

# Telephony: 8 kHz, 300-3400 Hz band, as a phone line would deliver it.
if want telephony-8k; then
  speech "$work/s.wav" en-us 160 "$S_TRAIN"
  "${SOX[@]}" "$work/s.wav" -r 8000 -c 1 -b 16 -e signed-integer "$clips/telephony-8k.wav" sinc 300-3400
  made telephony-8k
fi

if want silence; then silence "$clips/silence.wav" 6; made silence; fi
# Faint noise only: pink noise at about -50 dBFS RMS.
if want faint-noise; then
  "${SOX[@]}" -n "${FMT16[@]}" "$clips/faint-noise.wav" synth 6 pinknoise vol 0.006
  made faint-noise
fi

# Several voices: three speakers (voices, variants and rates differ) with short gaps.
if want several-voices; then
  speech "$work/v1.wav" en-us+m3 150 "$S_WEATHER"
  speech "$work/v2.wav" en-gb+f2 170 "$S_TRAIN"
  speech "$work/v3.wav" en-gb-scotland 140 "$S_COFFEE"
  silence "$work/gap.wav" 0.8
  "${SOX[@]}" "$work/v1.wav" "$work/gap.wav" "$work/v2.wav" "$work/gap.wav" "$work/v3.wav" \
    "$clips/several-voices.wav"
  made several-voices
fi

# Long: 24 sentences in turn, in four voices, with 1.5 s gaps: past 2 minutes.
if want long-2min; then
  sentences=("$S_WEATHER" "$S_NOTEBOOK" "$S_TRAIN" "$S_MARKET" "$S_LIBRARY" "$S_GATEWAY"
    "$S_LEFT" "$S_REQUESTS" "$S_GARDEN" "$S_COFFEE")
  voices=(en-us en-gb en-us+f3 en-gb-x-rp)
  silence "$work/gap.wav" 1.5
  parts=()
  for i in $(seq 0 23); do
    speech "$work/l$i.wav" "${voices[$((i % 4))]}" 155 "${sentences[$((i % 10))]}"
    parts+=("$work/l$i.wav" "$work/gap.wav")
  done
  "${SOX[@]}" "${parts[@]}" "$clips/long-2min.wav"
  made long-2min
fi

# Human recordings from Debian's pocketsphinx-testdata.
human_ids=(human-goforward human-librivox-0870 human-librivox-0890 human-librivox-0920)
need_human=0
if [[ ${GOLDEN_SKIP_HUMAN:-0} != 1 ]]; then
  for id in "${human_ids[@]}"; do want "$id" && need_human=1; done
fi
if ((need_human)); then
  data=/usr/share/pocketsphinx/test/data
  if [[ ! -d $data ]]; then
    (cd "$work" && apt-get download pocketsphinx-testdata >/dev/null 2>&1) || {
      echo "make-golden: cannot fetch pocketsphinx-testdata (run 'apt-get update' first?)" >&2
      exit 1
    }
    dpkg-deb -x "$work"/pocketsphinx-testdata_*.deb "$work/deb"
    data="$work/deb/usr/share/pocketsphinx/test/data"
  fi
  "${SOX[@]}" -t raw -r 16000 -c 1 -b 16 -e signed-integer -L "$data/goforward.raw" \
    "${FMT16[@]}" "$clips/human-goforward.wav"
  made human-goforward
  for n in 0870 0890 0920; do
    "${SOX[@]}" "$data/librivox/sense_and_sensibility_01_austen_64kb-$n.wav" "${FMT16[@]}" \
      "$clips/human-librivox-$n.wav"
    made "human-librivox-$n"
  done
fi

if ((check)); then
  (cd golden && sha256sum --quiet -c SHA256SUMS)
  echo "make-golden: every clip matches golden/SHA256SUMS" >&2
fi
