#!/usr/bin/env bash
# Times Bulk Data $export from `veil serve`, without and with de-identification
# (the built-in Safe Harbor policy, fixed keys), against the store's plain scan
# of the same resources (crates/store/examples/scan.rs), in the same run, on
# the Synthea sample replicated with fresh ids.
#
#   bench/export.sh [COPIES]    (default 26 copies ≈ 1M resources)
#
# Prints resources/s and MB/s for each, and the ratios. Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
copies=${1:-26}
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

cargo build --release -q -p veil-cli --bin veil
cargo build --release -q -p veil-store --example scan
veil=target/release/veil
python3 bench/synthea-ndjson.py "$work/ndjson" --copies "$copies"
db="sqlite:$work/veil.db"
start=$(date +%s.%N)
$veil load --db "$db" "$work"/ndjson/*.ndjson 2>&1 | tail -n 2
echo "load: $(echo "$(date +%s.%N) - $start" | bc -l | cut -c1-6) s"
rm -rf "$work/ndjson"

secs() { echo "$(date +%s.%N) - $1" | bc -l; }

# A first scan warms the operating system's cache of the database file, as
# the export that follows would find it; the second one is timed.
target/release/examples/scan "$db" >/dev/null 2>&1
start=$(date +%s.%N)
n=$(target/release/examples/scan "$db" 2>&1 >"$work/scan.ndjson" | tail -n 1)
scan_s=$(secs "$start")
mb=$(( $(stat -c %s "$work/scan.ndjson") / 1000000 ))
rm "$work/scan.ndjson"
printf "store scan:           %8d resources %6d MB in %6.1f s: %9.0f resources/s %6.1f MB/s\n" "$n" "$mb" "$scan_s" "$(echo "$n / $scan_s" | bc -l)" "$(echo "$mb / $scan_s" | bc -l)"

mkdir -p "$work/storage/anonymization"
python3 - "$work" <<'PY'
import json, sys
p = json.load(open("crates/deid/policies/safe-harbor.json", encoding="utf-8-sig"))
p["parameters"].update({"dateShiftKey": "bench-date", "cryptoHashKey": "bench-hash", "encryptKey": "0123456789abcdef0123456789abcdef"})
json.dump(p, open(sys.argv[1] + "/storage/anonymization/safe-harbor.json", "w"))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# As a registered client would: authorization stays on, so the timings include it.
$veil client keygen --out "$work/bench.pem" > "$work/bench.jwks.json" 2>/dev/null
client_id=$($veil client add --db "$db" --name bench --jwks "$work/bench.jwks.json" 2>/dev/null)
$veil serve --db "$db" --storage "$work/storage" --listen "127.0.0.1:$port" --workers 1 2>/dev/null &
server=$!
sleep 1

export_run() { # label query
  local start status
  local token; token=$($veil client token --fhir-url "http://127.0.0.1:$port" --client-id "$client_id" --key "$work/bench.pem" 2>/dev/null)
  start=$(date +%s.%N)
  status=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port/\$export$2" | tr -d '\r' | awk 'tolower($1)=="content-location:"{print $2}')
  while :; do
    sleep 0.5
    code=$(curl -s -o "$work/manifest.json" -w '%{http_code}' -H "Authorization: Bearer $token" "$status")
    [ "$code" = 200 ] && break
    [ "$code" = 202 ] || [ "$code" = 429 ] || { echo "export failed: $code"; cat "$work/manifest.json"; exit 1; }
  done
  local s; s=$(secs "$start")
  local dir; dir=$( (ls -d "$work"/storage/export-* "$work"/storage/research/* 2>/dev/null || true) | tail -n 1)
  local count; count=$(python3 -c 'import json,sys; print(sum(o["count"] for o in json.load(open(sys.argv[1]))["output"]))' "$work/manifest.json")
  local bytes; bytes=$(( $(du -sb "$dir" | cut -f1) / 1000000 ))
  printf "%-21s %8d resources %6d MB in %6.1f s: %9.0f resources/s %6.1f MB/s (%.2f x the scan)\n" "$1:" "$count" "$bytes" "$s" "$(echo "$count / $s" | bc -l)" "$(echo "$bytes / $s" | bc -l)" "$(echo "$scan_s / $s" | bc -l)"
  rm -rf "$dir"
}
export_run "export" ""
export_run "de-identified export" "?_anonymizationConfig=safe-harbor.json&_container=research"
