#!/usr/bin/env python3
"""Turns the bundled Synthea sample into NDJSON, one file per resource type,
as a Bulk Data export would deliver it (references rewritten from
urn:uuid:X to Type/X). With --copies N, writes N copies with fresh ids, to
make inputs of any size.

    python3 bench/synthea-ndjson.py OUT_DIR [--copies N] [--single FILE] [--types T,…] [--part K/N]

With --part K/N, only the K-th of N disjoint sets of patients (every N-th
patient's bundle, from the K-th; K counts from 1), as one of N sites would
hold them; the shared organisation and practitioner files go to every part.
"""
import argparse, json, os, re, tarfile, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--copies", type=int, default=1)
ap.add_argument("--single", help="write everything into this one file name instead of one file per type")
ap.add_argument("--types", help="only these resource types (comma-separated)")
ap.add_argument("--part", help="K/N: only the K-th of N disjoint sets of patients")
args = ap.parse_args()
part, parts = (int(x) for x in args.part.split("/")) if args.part else (1, 1)
if not 1 <= part <= parts:
    ap.error("--part K/N needs 1 <= K <= N")

resources = []
with tarfile.open(os.path.join(HERE, "..", "data", "synthea-r4-100.tar.gz")) as tar:
    patients = 0
    for m in tar.getmembers():
        if not m.name.endswith(".json"):
            continue
        if "Information" not in m.name:
            patients += 1
            if (patients - 1) % parts != part - 1:
                continue
        doc = json.load(tar.extractfile(m))
        entries = doc.get("entry", []) if doc.get("resourceType") == "Bundle" else [{"resource": doc}]
        for e in entries:
            resources.append(e["resource"])
types = {r["id"]: r["resourceType"] for r in resources if "id" in r}
os.makedirs(args.out, exist_ok=True)
files = {}
def out(rt):
    name = args.single or f"{rt}.ndjson"
    if name not in files:
        files[name] = open(os.path.join(args.out, name), "w", encoding="utf-8")
    return files[name]
uuid_re = re.compile(r'"urn:uuid:([0-9a-f-]{36})"')
wanted = set(args.types.split(",")) if args.types else None
for copy in range(args.copies):
    suffix = "" if copy == 0 else f"-{copy}"
    for r in resources:
        if wanted and r["resourceType"] not in wanted:
            continue
        text = json.dumps(r, ensure_ascii=False, separators=(",", ":"))
        text = uuid_re.sub(lambda m: f'"{types.get(m.group(1), "Patient")}/{m.group(1)}{suffix}"', text)
        if suffix:
            text = text.replace(f'"id":"{r.get("id")}"', f'"id":"{r.get("id")}{suffix}"', 1)
        out(r["resourceType"]).write(text + "\n")
for f in files.values():
    f.close()
