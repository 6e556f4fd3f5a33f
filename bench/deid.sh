#!/usr/bin/env bash
# Times `veil deid -b` with the Safe Harbor policy against a baseline that only
# parses and re-serializes each line (crates/deid/examples/roundtrip.rs: same
# JSON library, settings, batching and thread pool), in the same run, on NDJSON
# made from the bundled Synthea sample replicated with fresh ids.
#
#   bench/deid.sh [COPIES]     (default 21 copies ≈ 1 GB)
#
# Prints throughput and the ratio for 1 and 2 threads, and peak memory for the
# 1× and 10× inputs. Needs python3 and GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-21}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p veil-cli -p veil-deid --example roundtrip
veil=target/release/veil
base=target/release/examples/roundtrip
python3 bench/synthea-ndjson.py "$work/big" --copies "$copies" --single all.ndjson
python3 bench/synthea-ndjson.py "$work/small" --copies "$(( (copies + 9) / 10 ))" --single all.ndjson
big="$work/big/all.ndjson"
small="$work/small/all.ndjson"
mb=$(( $(stat -c %s "$big") / 1000000 ))
echo "input: $mb MB, $(wc -l < "$big") resources ($(nproc) cores)"

# A key file, so that the run does not depend on random keys.
cat > "$work/policy.json" <<JSON
$(python3 - "$work" <<'PY'
import json, sys
p = json.load(open("crates/deid/policies/safe-harbor.json", encoding="utf-8-sig"))
p["parameters"].update({"dateShiftKey": "bench-date", "cryptoHashKey": "bench-hash", "encryptKey": "0123456789abcdef0123456789abcdef"})
print(json.dumps(p))
PY
)
JSON

run() { # label threads command...
  local label=$1 threads=$2; shift 2
  local start end
  start=$(date +%s.%N)
  RAYON_NUM_THREADS=$threads /usr/bin/time -f "%M" -o "$work/mem" "$@" < "$input" > "$work/out" 2>>"$work/log"
  end=$(date +%s.%N)
  local secs; secs=$(echo "$end - $start" | bc -l)
  local rate; rate=$(echo "$mb / $secs" | bc -l)
  printf "%-10s %d thread(s): %6.1f s  %7.1f MB/s  peak %6d MB\n" "$label" "$threads" "$secs" "$rate" "$(( $(cat "$work/mem") / 1024 ))" >&2
  echo "$rate"
}

input=$big
for t in 1 2; do
  b=$(run baseline "$t" "$base")
  v=$(run "veil deid" "$t" "$veil" deid -c "$work/policy.json")
  printf "ratio with %d thread(s): veil deid runs at %.2f x the baseline's throughput\n" "$t" "$(echo "$v / $b" | bc -l)"
done
input=$small
mb=$(( $(stat -c %s "$small") / 1000000 ))
run "veil 1/10" 2 "$veil" deid -c "$work/policy.json" > /dev/null
