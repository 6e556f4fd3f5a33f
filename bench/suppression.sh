#!/usr/bin/env bash
# The time complementary suppression takes, beside the build it protects:
# a study of synthetic patients counted by sex, state, marital status,
# language and birth year (a cube of well over 100,000 cells, most of them
# small), built with `suppression = "primary"` and with the default
# (complementary), in the same run. Prints cells and seconds for each, and
# the cells published before and after.
#
# Then the aggregator's shield: one site uploads each package in turn to a
# `veil aggregator` (release build, SQLite) and the script times each
# upload (its answer comes once the package is checked and merged). The
# complementary package needs nothing withheld, so its upload is the
# baseline; the primary-only one must be shielded. Prints the seconds and
# the site rows the aggregator publishes for each.
#
#   bench/suppression.sh [PATIENTS]     (default 200000)
#
# Needs python3.
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-200000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q -p veil-cli
veil=$PWD/target/release/veil

python3 - "$work/in/Patient.ndjson" "$patients" <<'PY'
import json, os, random, sys
path, n = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.dirname(path), exist_ok=True)
rng = random.Random(7)
states = [f"S{i:02d}" for i in range(50)]
languages = [f"L{i:02d}" for i in range(20)]
with open(path, "w") as f:
    for i in range(n):
        # Skewed, as real populations are: a few large states and languages, many small.
        state = states[min(int(rng.expovariate(0.12)), 49)]
        language = languages[min(int(rng.expovariate(0.5)), 19)]
        f.write(json.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": rng.choice(["female", "male"]),
            "birthDate": f"{rng.randint(1930, 2020)}-01-01", "address": [{"state": state}],
            "maritalStatus": {"coding": [{"code": rng.choice("MSDWU")}]},
            "communication": [{"language": {"coding": [{"code": language}]}}]}) + "\n")
PY
view='{"resource": "Patient", "select": [{"column": [{"name": "id", "path": "getResourceKey()"}, {"name": "sex", "path": "gender"}, {"name": "state", "path": "address.state"}, {"name": "marital", "path": "maritalStatus.coding.code"}, {"name": "language", "path": "communication.language.coding.code"}, {"name": "born", "path": "birthDate.toString().substring(0, 4)"}]}]}'
for mode in primary complementary; do
  mkdir -p "$work/$mode"
  echo "$view" > "$work/$mode/p.json"
  printf "study_prefix = 'b'\n[views]\np = 'p.json'\n[[counts]]\nname = 'count_patients'\nfrom = 'p'\nstrata = ['sex', 'state', 'marital', 'language', 'born']\ncount_distinct = 'id'\nsuppression = '%s'\n" "$mode" > "$work/$mode/study.toml"
  start=$(date +%s.%N)
  "$veil" study build "$work/$mode" --input "$work/in" --build-dir "$work/build-$mode" 2> "$work/$mode.log"
  end=$(date +%s.%N)
  printf "%-14s %6.1f s   %s\n" "$mode" "$(echo "$end - $start" | bc -l)" "$(grep count_patients "$work/$mode.log")"
done

# The aggregator's shield, on the same packages.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db=$work/aggregator.db
secret=$("$veil" aggregator site add bench --user bench --studies b --db "$db" 2>/dev/null)
key=$("$veil" aggregator key add --name bench --db "$db" 2>/dev/null)
"$veil" aggregator serve --db "$db" --storage "$work/archive" --listen "127.0.0.1:$port" 2> "$work/aggregator.log" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
for mode in complementary primary; do
  "$veil" study export "$work/$mode" --build-dir "$work/build-$mode" --data-path "$work/export-$mode" >/dev/null 2>&1
  start=$(date +%s.%N)
  CUMULUS_AGGREGATOR_USER=bench CUMULUS_AGGREGATOR_ID=$secret CUMULUS_AGGREGATOR_URL=http://127.0.0.1:$port/ \
    "$veil" upload b --data-path "$work/export-$mode" 2> "$work/upload-$mode.log"
  end=$(date +%s.%N)
  sent=$(($(wc -l < "$work/export-$mode/b/b__count_patients.cube.csv") - 1))
  id=$(curl -s -H "x-api-key: $key" "http://127.0.0.1:$port/data-packages" | jq -r '.[] | select(.name == "count_patients") | .id')
  published=$(curl -s -H "x-api-key: $key" "http://127.0.0.1:$port/data-packages/$id/download?type=json" \
    | jq '[.rows[] | select(.[-1] == "bench")] | length')
  printf "aggregator, %-14s upload %6.1f s   %s rows sent, %s published\n" "$mode:" "$(echo "$end - $start" | bc -l)" "$sent" "$published"
done
