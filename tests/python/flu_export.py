"""The `flu` data package made once per test run, shared by the test modules:
the Synthea sample as NDJSON, de-identified by `veil deid` with the policy
`veil export-preset flu --policy` writes, then `veil study build` and
`veil study export`; and the helpers the test modules share for running
`veil`."""
import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VEIL = os.environ.get("VEIL", os.path.join(ROOT, "target", "debug", "veil"))


def veil(*args, **kw):
    return subprocess.run([VEIL, *args], check=True, capture_output=True, text=True, **kw)


def listen(*args, log, env=None):
    """Starts `veil ARGS --listen 127.0.0.1:PORT` on a free port, its stderr
    to `log` (and its environment `env`, if given); (the process, its base
    URL) once it accepts connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([VEIL, *args, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log, env=env)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}"


@functools.cache
def build():
    # Kept for the whole run, removed when it ends.
    t = tempfile.mkdtemp(prefix="veil-python-tests-")
    atexit.register(shutil.rmtree, t, True)
    raw, deid = os.path.join(t, "raw"), os.path.join(t, "deid")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "synthea-ndjson.py"), raw], check=True)
    policy = os.path.join(t, "flu-policy.json")
    veil("export-preset", "flu", "--policy", policy)
    veil("deid", "-c", policy, "-b", "-i", raw, "-o", deid)
    veil("study", "build", "flu", "--input", deid, "--build-dir", os.path.join(t, "build"))
    data_path = os.path.join(t, "data_export")
    veil("study", "export", "flu", "--build-dir", os.path.join(t, "build"), "--data-path", data_path)
    return SimpleNamespace(deid=deid, data_path=data_path, folder=os.path.join(data_path, "flu"))


def flu_sites(tmp, sites):
    """One `flu` data package per site, each from the K-th of len(sites)
    disjoint sets of the sample's patients (`bench/synthea-ndjson.py --part`),
    de-identified by `veil deid` with the study's preset policy and the
    site's own keys, as each hospital would; {site: its data path}."""
    preset = os.path.join(tmp, "flu-policy.json")
    veil("export-preset", "flu", "--policy", preset)
    with open(preset) as f:
        policy = json.load(f)
    data_paths = {}
    for k, site in enumerate(sites, start=1):
        raw, deid = os.path.join(tmp, site, "raw"), os.path.join(tmp, site, "deid")
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "synthea-ndjson.py"), raw,
                        "--part", f"{k}/{len(sites)}", "--types", "Patient,Immunization"], check=True)
        policy["parameters"].update(dateShiftKey=f"{site}-date-shift-key", cryptoHashKey=f"{site}-crypto-hash-key")
        site_policy = os.path.join(tmp, site, "policy.json")
        with open(site_policy, "w") as f:
            json.dump(policy, f)
        veil("deid", "-c", site_policy, "-b", "-i", raw, "-o", deid)
        build = os.path.join(tmp, site, "build")
        veil("study", "build", "flu", "--input", deid, "--build-dir", build)
        data_paths[site] = os.path.join(tmp, site, "data_export")
        veil("study", "export", "flu", "--build-dir", build, "--data-path", data_paths[site])
    return data_paths
