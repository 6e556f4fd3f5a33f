#!/usr/bin/env bash
# What the audit and risk report add to `veil deid`: in the same run, on
# NDJSON made from the bundled Synthea sample replicated with fresh ids,
#   1. `veil deid -c POLICY -b -i DIR -o DIR --no-audit` (a folder and its manifest, no audit)
#   2. `veil deid -c POLICY -b -i DIR -o DIR`            (the same, audited as written, evidence beside)
#   3. `veil audit DIR`                                  (the audit alone, reading the folder again)
# and prints how much longer 2 and 3 take than 1.
#
#   bench/audit.sh [COPIES] [POLICY]     (default 21 copies ≈ 1 GB, safe-harbor)
#
# Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-21}
policy_name=${2:-safe-harbor}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release -q -p veil-cli
veil=target/release/veil
python3 bench/synthea-ndjson.py "$work/in" --copies "$copies" --single all.ndjson
input="$work/in/all.ndjson"
mb=$(( $(stat -c %s "$input") / 1000000 ))
echo "input: $mb MB, $(wc -l < "$input") resources ($(nproc) cores), policy $policy_name"

# Fixed keys, so that the runs do the same work.
python3 - "$policy_name" > "$work/policy.json" <<'PY'
import json, sys
p = json.load(open(f"crates/deid/policies/{sys.argv[1]}.json", encoding="utf-8-sig"))
p["parameters"].update({"dateShiftKey": "bench-date", "cryptoHashKey": "bench-hash", "encryptKey": "0123456789abcdef0123456789abcdef"})
print(json.dumps(p))
PY

seconds() { # command... ; prints the wall time in seconds
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null 2>>"$work/log"
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

plain=$(seconds "$veil" deid -c "$work/policy.json" -b -i "$work/in" -o "$work/plain" --no-audit)
rm -rf "$work/plain"
folder=$(seconds "$veil" deid -c "$work/policy.json" -b -i "$work/in" -o "$work/out")
audit=$(seconds sh -c "$veil audit '$work/out' || true")
out_mb=$(( $(stat -c %s "$work/out/all.ndjson") / 1000000 ))
printf "veil deid -o DIR --no-audit:  %6.1f s  %6.1f MB/s\n" "$plain" "$(echo "$mb / $plain" | bc -l)"
printf "veil deid -o DIR (audited):   %6.1f s  %6.1f MB/s\n" "$folder" "$(echo "$mb / $folder" | bc -l)"
printf "veil audit DIR alone:         %6.1f s  (%d MB of output read again)\n" "$audit" "$out_mb"
printf "the audit adds %.1f %% to veil deid -o DIR; read again, it would add %.1f %%\n" \
  "$(echo "100 * ($folder - $plain) / $plain" | bc -l)" "$(echo "100 * $audit / $plain" | bc -l)"
