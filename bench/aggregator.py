#!/usr/bin/env python3
"""`veil aggregator` as sites join, and `veil upload` against the real
`cumulus-library upload`, in one run.

    cargo build --release --bin veil && target/test-venv/bin/python bench/aggregator.py [--sites 40] [--runs 5] [--db URL]

(`target/test-venv` is the Python environment `scripts/test` makes; it has
`cumulus-library` and `requests`.)

Builds the `flu` study twice, from two disjoint halves of the Synthea
sample (each de-identified with the study's preset policy), starts `veil
aggregator serve` (release build; SQLite in a temporary folder unless
--db names a PostgreSQL database) and registers the sites.

1. Sites join one by one: each makes the handshake and posts its package,
   alternating the two halves. The answer comes only after the package
   has been checked and the whole data package merged again over every
   site so far, so the time per upload shows how the merge grows with the
   number of sites. Prints the time for the first, middle and last tenth.
2. One site uploads --runs times with each client, alternately, switching
   halves so that every upload is a real merge: `veil upload` and
   `cumulus-library upload`. Prints the median wall time of each (a whole
   command, start-up included, as a site runs it) and the ratio."""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
VEIL = os.environ.setdefault("VEIL", os.path.join(ROOT, "target", "release", "veil"))
# The tests' way of building site packages and starting a listening veil, on the binary named above.
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from flu_export import flu_sites, listen, veil  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--sites", type=int, default=40)
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--db", help="a postgres:// URL (default: SQLite in a temporary folder)")
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="veil-bench-aggregator-")
try:
    halves = list(flu_sites(tmp, ["north", "south"]).values())
    zips = []
    for data_path in halves:
        with open(os.path.join(data_path, "flu", "flu.zip"), "rb") as f:
            zips.append(f.read())
    db = args.db or os.path.join(tmp, "aggregator.db")
    names = [f"site_{i:03}" for i in range(args.sites)]
    secrets = {n: veil("aggregator", "site", "add", n, "--studies", "flu", "--db", db).stdout.strip() for n in names}
    server, url = listen("aggregator", "serve", "--db", db, "--storage", os.path.join(tmp, "archive"), log=subprocess.DEVNULL)
    try:
        body = {"study": "flu", "data_package_version": 1}
        times = []
        for i, name in enumerate(names):
            t = time.perf_counter()
            r = requests.post(url + "/", json=dict(body, filename=f"{name}_flu.zip"), auth=(name, secrets[name]))
            r.raise_for_status()
            form = r.json()
            r = requests.post(form["url"], data=form["fields"], files={"file": ("flu.zip", zips[i % 2])})
            assert r.status_code == 204 and r.headers["x-veil-outcome"] == "accepted", r.text
            times.append(time.perf_counter() - t)
        tenth = max(1, len(times) // 10)
        ms = lambda part: statistics.median(part) * 1000  # noqa: E731
        print(f"{args.sites} sites join, one upload each (handshake, post, check, merge over every site so far):")
        print(f"  first {tenth}: {ms(times[:tenth]):.0f} ms   middle {tenth}: {ms(times[len(times) // 2:][:tenth]):.0f} ms"
              f"   last {tenth}: {ms(times[-tenth:]):.0f} ms   (medians)")

        site = names[0]
        env = dict(os.environ, CUMULUS_AGGREGATOR_USER=site, CUMULUS_AGGREGATOR_ID=secrets[site], CUMULUS_AGGREGATOR_URL=url + "/")
        cumulus = os.path.join(os.path.dirname(sys.executable), "cumulus-library")
        clients = {
            "veil upload": lambda data_path: [VEIL, "upload", "flu", "--data-path", data_path],
            "cumulus-library upload": lambda data_path: [cumulus, "upload", "--target", "flu", data_path],
        }
        results = {name: [] for name in clients}
        turn = 1  # site_000 sent halves[0] above
        for _ in range(args.runs):
            for name, command in clients.items():
                t = time.perf_counter()
                subprocess.run(command(halves[turn % 2]), env=env, check=True, capture_output=True)
                results[name].append(time.perf_counter() - t)
                turn += 1
    finally:
        server.terminate()
        server.wait()
    v, c = (statistics.median(results[n]) for n in clients)
    print(f"One site's upload, whole command, median of {args.runs} runs:")
    print(f"  cumulus-library upload: {c:.3f} s")
    print(f"  veil upload:            {v:.3f} s")
    print(f"  ratio (cumulus-library / veil): {c / v:.1f}x")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
