#!/usr/bin/env python3
"""`veil fetch` against curl over the same Veil share link, in one run.

    cargo build --release --bin veil && python3 bench/share-fetch.py [--runs 5]

Runs `veil demo` (its de-identified export: 19 NDJSON files, 52 MB),
starts `veil serve` on a free loopback port, makes a share of the export,
then times, alternately, curl downloading every file the share manifest
lists (no checks: the floor for moving the bytes over HTTP) and `veil
fetch` (the manifest, every file into NAME.part, size and SHA-256 checked,
renamed, and each download written to the server's audit log). Prints the
median of each and the ratio."""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
VEIL = os.environ.setdefault("VEIL", os.path.join(ROOT, "target", "release", "veil"))
# The tests' way of starting a listening veil, on the binary named above.
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from flu_export import listen  # noqa: E402
ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="veil-bench-share-")
try:
    demo = os.path.join(tmp, "demo")
    subprocess.run([VEIL, "demo", "--out", demo], cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    [export] = [os.path.join(demo, "storage", "research", d) for d in os.listdir(os.path.join(demo, "storage", "research"))]
    db = "sqlite:" + os.path.join(demo, "veil.db")
    server, base = listen("serve", "--db", db, "--storage", os.path.join(demo, "storage"), log=subprocess.DEVNULL)
    try:
        link = subprocess.run([VEIL, "share", "create", "--db", db, "--path", export, "--base-url", base],
                              check=True, capture_output=True, text=True).stdout.strip()
        files = json.load(urllib.request.urlopen(link))["files"]
        total = sum(f["size"] for f in files)
        curl_cmd = ["curl", "-sf"]
        for f in files:
            curl_cmd += ["-o", os.path.join(tmp, "curl", f["path"]), link + f["url"]]
        curl_times, veil_times = [], []
        for _ in range(args.runs):
            for d in ("curl", "veil"):
                shutil.rmtree(os.path.join(tmp, d), ignore_errors=True)
            os.makedirs(os.path.join(tmp, "curl"))
            t = time.perf_counter()
            subprocess.run(curl_cmd, check=True)
            curl_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([VEIL, "fetch", link, "-o", os.path.join(tmp, "veil")], check=True, stderr=subprocess.DEVNULL)
            veil_times.append(time.perf_counter() - t)
    finally:
        server.terminate()
        server.wait()
    c, v = statistics.median(curl_times), statistics.median(veil_times)
    print(f"{len(files)} files, {total / 1e6:.1f} MB, median of {args.runs} runs")
    print(f"curl (no checks): {c:.3f} s ({total / c / 1e6:.0f} MB/s)")
    print(f"veil fetch:       {v:.3f} s ({total / v / 1e6:.0f} MB/s)")
    print(f"ratio: {v / c:.2f}x")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
