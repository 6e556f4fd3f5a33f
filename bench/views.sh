#!/usr/bin/env bash
# Times `veil view run --format parquet` against a baseline that only parses
# the same NDJSON (crates/views/examples/parse_ndjson.rs: same JSON library
# and settings, one thread, as `view run` is), in the same run, on the
# Synthea sample's Observations replicated with fresh ids.
#
#   bench/views.sh [COPIES]     (default 62 copies: 1,011,530 Observations)
#
# Prints rows/s of the view, resources/s of both, and the ratio. Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-62}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p veil-cli -p veil-views --example parse_ndjson
python3 bench/synthea-ndjson.py "$work" --copies "$copies" --types Observation
input="$work/Observation.ndjson"
n=$(wc -l < "$input")
echo "input: $n Observations, $(( $(stat -c %s "$input") / 1000000 )) MB ($(nproc) cores)"

timed() { # label command... -> seconds
  local start end
  start=$(date +%s.%N)
  "$@" 2>>"$work/log" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

# Warm the page cache so that both read from memory.
cat "$input" > /dev/null
base=$(timed target/release/examples/parse_ndjson "$input")
veil=$(timed target/release/veil view run --view bench/views/observation.json --input "$input" --format parquet -o "$work/out.parquet")
rows=$(grep -o 'veil view: [0-9]* rows' "$work/log" | grep -o '[0-9]*')
printf "baseline (parse only): %6.1f s  %9.0f resources/s\n" "$base" "$(echo "$n / $base" | bc -l)"
printf "veil view run parquet: %6.1f s  %9.0f resources/s  %9.0f rows/s  (%d rows, %d MB)\n" \
  "$veil" "$(echo "$n / $veil" | bc -l)" "$(echo "$rows / $veil" | bc -l)" "$rows" "$(( $(stat -c %s "$work/out.parquet") / 1000000 ))"
printf "ratio: veil view run takes %.2f x the time merely to parse its input\n" "$(echo "$veil / $base" | bc -l)"
