"""The risk report beside every de-identified folder, computed again without
Veil: DuckDB groups the patients that `veil deid` wrote by the
quasi-identifiers docs/deid.md defines, and every figure of veil-risk.json
must equal the one computed here, exactly. Then veil-risk.html in headless
Chromium must show the same figures (a screenshot goes to
target/ci-artifacts/)."""
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import duckdb

from flu_export import ROOT, veil
from test_dashboard import ARTIFACTS, browser, screenshot

# docs/deid.md, "Evidence": what is not a quasi-identifier, and where a
# resource's date is read from.
NOT_QUASI = {"resourceType", "id", "meta", "text", "identifier", "link"}
EVENT_DATE_KEYS = ["effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "period.start",
                   "occurrenceDateTime", "occurrencePeriod.start", "performedDateTime", "performedPeriod.start",
                   "onsetDateTime", "recordedDate", "authoredOn", "issued", "date", "created"]


def leaves(value, path, out):
    if isinstance(value, list):
        for v in value:
            leaves(v, path, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            leaves(v, f"{path}.{k}", out)
    elif value is None:
        pass
    elif isinstance(value, str):
        out.setdefault(path, []).append(value)
    else:
        out.setdefault(path, []).append(json.dumps(value))


def day_number(text):
    year = int(text[:4])
    month = int(text[5:7]) if len(text) >= 7 else 1
    day = int(text[8:10]) if len(text) >= 10 else 1
    return datetime.date(year, month, day).toordinal()


def event(resource):
    for key in ("subject", "patient", "beneficiary"):
        ref = (resource.get(key) or {}).get("reference") if isinstance(resource.get(key), dict) else None
        if ref:
            break
    else:
        return None
    patient = ref.replace(":", "/").rsplit("/", 1)[-1]
    day = None
    for key in EVENT_DATE_KEYS:
        v = resource
        for step in key.split("."):
            v = v.get(step) if isinstance(v, dict) else None
        if isinstance(v, str):
            try:
                day = day_number(v)
            except ValueError:
                continue
            break
    return patient, day


def independent(folder):
    """The risk figures of `folder`, from its NDJSON, with DuckDB."""
    patients, events = [], {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".ndjson") or name.startswith("veil-"):
            continue
        with open(os.path.join(folder, name)) as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                if r["resourceType"] == "Patient":
                    quasi = {}
                    for k, v in r.items():
                        if k not in NOT_QUASI:
                            leaves(v, k, quasi)
                    patients.append((r.get("id", ""), quasi))
                else:
                    e = event(r)
                    if e:
                        events.setdefault(e[0], []).append(e[1])
    paths = sorted({p for _, q in patients for p in q})
    con = duckdb.connect()
    con.execute("CREATE TABLE p (id VARCHAR, qi VARCHAR[], events INTEGER, intervals VARCHAR)")
    rows = []
    for pid, q in patients:
        evs = events.get(pid, [])
        days = sorted(d for d in evs if d is not None)
        intervals = json.dumps([b - a for a, b in zip(days, days[1:])])
        rows.append((pid, [json.dumps(q.get(p, [])) for p in paths], len(evs), intervals))
    con.executemany("INSERT INTO p VALUES (?, ?, ?, ?)", rows)
    con.execute("CREATE TABLE classes AS SELECT qi, count(*) AS k FROM p GROUP BY qi")
    n = con.execute("SELECT count(*) FROM p").fetchone()[0]
    classes, min_k, unique = con.execute(
        "SELECT count(*), min(k), count(*) FILTER (WHERE k = 1) FROM classes").fetchone()
    histogram = dict(con.execute("SELECT k, count(*) FROM classes GROUP BY k ORDER BY k").fetchall())
    at_risk = con.execute("SELECT coalesce(sum(k), 0) FROM classes WHERE 1.0 / k > 0.2").fetchone()[0]
    at_highest = con.execute("SELECT coalesce(sum(k), 0) FROM classes WHERE k = ?", [min_k]).fetchone()[0]
    alone = []
    for i, path in enumerate(paths):
        distinct, uniq = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE c = 1) FROM (SELECT qi[{i + 1}], count(*) AS c FROM p GROUP BY 1)"
        ).fetchone()
        alone.append({"path": path, "distinct": distinct, "unique_alone": uniq})
    unique_counts = con.execute(
        "SELECT count(*) FROM (SELECT events FROM p GROUP BY events HAVING count(*) = 1)").fetchone()[0]
    unique_sequences = con.execute(
        "SELECT count(*) FROM (SELECT intervals FROM p GROUP BY intervals HAVING count(*) = 1)").fetchone()[0]
    total_events = con.execute("SELECT sum(events) FROM p").fetchone()[0]
    return {
        "patients": n, "classes": classes, "min_k": min_k, "unique": unique,
        "k_histogram": {str(k): v for k, v in histogram.items()},
        "prosecutor": {"highest": 1.0 / min_k, "records_at_highest": at_highest, "average": classes / n,
                       "records_at_risk": at_risk},
        "marketer": classes / n,
        "quasi_identifiers": alone,
        "longitudinal": {"events": total_events, "unique_event_counts": unique_counts,
                         "unique_interval_sequences": unique_sequences},
    }


class Risk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-risk-tests-")
        cls.raw = os.path.join(cls.tmp, "raw")
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "synthea-ndjson.py"), cls.raw], check=True)
        cls.out = {}
        for policy in ["safe-harbor", "expert-shift", "limited-data-set"]:
            out = os.path.join(cls.tmp, policy)
            subprocess.run([os.environ.get("VEIL", os.path.join(ROOT, "target", "debug", "veil")), "deid", "-c",
                            policy, "-b", "-i", cls.raw, "-o", out], check=True, capture_output=True)
            cls.out[policy] = out

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_risk_figures_equal_an_independent_computation(self):
        for policy, folder in self.out.items():
            with self.subTest(policy=policy):
                with open(os.path.join(folder, "veil-risk.json")) as f:
                    risk = json.load(f)["risk"]
                expected = independent(folder)
                self.assertGreater(expected["patients"], 50)
                for key, value in expected.items():
                    if key == "quasi_identifiers":
                        self.assertEqual(risk[key], value, key)
                    elif key in ("prosecutor",):
                        self.assertEqual(risk[key], value, key)
                        self.assertEqual(risk["journalist"], value, "journalist = prosecutor")
                    else:
                        self.assertEqual(risk[key], value, key)

    def test_the_manifest_records_the_verdict_and_the_audit_command_agrees(self):
        folder = self.out["safe-harbor"]
        with open(os.path.join(folder, "veil-manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["deidentified"]["audit"]["standard"], "safe-harbor")
        self.assertTrue(manifest["deidentified"]["audit"]["passes"])
        self.assertIn("veil-risk.json", [e["path"] for e in manifest["files"]])
        # veil audit with the original data: nothing of the original survives.
        report = os.path.join(self.tmp, "audit.json")
        veil("audit", folder, "--original", self.raw, "--json", report)
        with open(report) as f:
            audit = json.load(f)
        self.assertTrue(audit["passes"])
        self.assertTrue(all(c["values"] == 0 for c in audit["categories"]), audit["failures"])
        # What veil deid saw as it wrote equals what veil audit reads back.
        with open(os.path.join(folder, "veil-risk.json")) as f:
            written = json.load(f)
        for key in ("resources", "unreadable", "categories", "risk", "passes"):
            self.assertEqual(written[key], audit[key], key)
        # A limit on uniqueness the sample cannot meet fails, with exit code 1.
        failed = subprocess.run([os.environ.get("VEIL", os.path.join(ROOT, "target", "debug", "veil")), "audit",
                                 folder, "--max-unique", "0.01"], capture_output=True, text=True)
        self.assertEqual(failed.returncode, 1, failed.stdout)
        self.assertIn("unique patients", failed.stdout)

    def test_the_page_shows_the_figures_of_the_json(self):
        folder = self.out["expert-shift"]
        with open(os.path.join(folder, "veil-risk.json")) as f:
            evidence = json.load(f)
        with open(os.path.join(folder, "veil-risk.html")) as f:
            page = f.read()
        self.assertNotIn("<script", page)
        self.assertIn("default-src 'none'", page)
        driver = browser()
        try:
            driver.get("file://" + os.path.join(folder, "veil-risk.html"))
            figure = lambda name: driver.find_element("css selector", f'[data-figure="{name}"]').text
            risk = evidence["risk"]
            self.assertEqual(figure("standard"), evidence["standard"])
            self.assertEqual(figure("verdict"), "meets" if evidence["passes"] else "does not meet")
            for name, value in [("patients", risk["patients"]), ("classes", risk["classes"]),
                                ("min-k", risk["min_k"]), ("unique", risk["unique"]),
                                ("records-at-risk", risk["prosecutor"]["records_at_risk"]),
                                ("events", risk["longitudinal"]["events"]),
                                ("unique-interval-sequences", risk["longitudinal"]["unique_interval_sequences"])]:
                self.assertEqual(figure(name), str(value), name)
            self.assertEqual(figure("prosecutor-average"), f"{risk['prosecutor']['average']:.4f}")
            for c in evidence["categories"]:
                self.assertEqual(figure("category-" + c["category"]), str(c["values"]), c["category"])
            # The chart's bars add up to every patient.
            bars = driver.find_elements("css selector", "rect.bar")
            self.assertEqual(sum(int(b.get_attribute("data-patients")) for b in bars), risk["patients"])
            os.makedirs(ARTIFACTS, exist_ok=True)
            screenshot(driver, os.path.join(ARTIFACTS, "veil-risk.png"))
        finally:
            driver.quit()


if __name__ == "__main__":
    unittest.main()
