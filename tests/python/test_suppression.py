"""The attack on suppressed cells, by linear programming, outside Veil.

Given only what a study publishes (each count table's CSV), a reader sets
up every cell of the cube that is not published as an unknown at least
zero, with the cube's relations: along an additive stratum a marginal is
the sum of its cells; along the others it is at least each cell and at
most their sum. For every suppressed cell, scipy's HiGHS gives the least
and the greatest value it can take; a cell whose interval is one value is
recovered. The reader is given every stratum's full set of values (more
than a real one would know).

With Cumulus' primary suppression the attack recovers cells; with Veil's
default, complementary suppression, none (crates/study/tests/attack.rs does
the same by propagating bounds, on more cubes).

`Suppression.test_three_sites_at_the_aggregator` makes the attack on what
`veil aggregator` publishes for three sites that dropped only their small
cells (as Cumulus sites do): each site's rows in the merged table, after
checking that every sum over sites is the sum of the site rows published
beside it (so the sums, and the "≥ n" lower bounds that follow from which
site rows are there, tell a reader nothing more)."""
import collections
import csv
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

import numpy
from scipy.optimize import linprog
from scipy.sparse import lil_matrix

from flu_export import ROOT, listen, veil

HARD_TOML = ("study_prefix = 'h'\n[views]\np = 'p.json'\n[[counts]]\nname = 'count_patients'\nfrom = 'p'\n"
             "strata = ['sex', 'state', 'marital']\ncount_distinct = 'id'\nmin_cell = 10\n")
HARD_VIEW = {"resource": "Patient", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()"}, {"name": "sex", "path": "gender"},
    {"name": "state", "path": "address.state"}, {"name": "marital", "path": "maritalStatus.coding.code"}]}]}


def read_cube(path):
    """{(value or None per stratum): count}, and the strata's names."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    strata = rows[0][1:]
    return {tuple(v if v != "" else None for v in r[1:]): int(r[0]) for r in rows[1:]}, strata


def intervals(published, truth, additive, domains=None):
    """For every cell that the truth holds (count > 0) and that is not
    published: (least, greatest) value consistent with what is. The
    strata's values are the truth's unless `domains` gives them."""
    d = len(additive)
    domains = domains or [sorted({k[j] for k in truth if k[j] is not None}) for j in range(d)]
    lattice = list(itertools.product(*[[None] + dom for dom in domains]))
    unknown = [k for k in lattice if k not in published]
    index = {k: i for i, k in enumerate(unknown)}
    eq_rows, eq_rhs, ub_rows, ub_rhs = [], [], [], []

    def term(key, sign, coefficients):
        """Adds `sign * key` to a row (a dict of unknowns), or returns the
        constant it contributes when the key is published."""
        if key in index:
            coefficients[index[key]] = coefficients.get(index[key], 0) + sign
            return 0
        return sign * published[key]

    for key in lattice:
        for j in range(d):
            if key[j] is not None:
                continue
            children = [key[:j] + (v,) + key[j + 1:] for v in domains[j]]
            row = {}
            constant = term(key, 1, row) + sum(term(c, -1, row) for c in children)
            if additive[j]:
                eq_rows.append(row)
                eq_rhs.append(-constant)
            else:
                ub_rows.append(row)  # parent - sum(children) <= 0
                ub_rhs.append(-constant)
                for c in children:  # child - parent <= 0
                    row = {}
                    constant = term(c, 1, row) + term(key, -1, row)
                    ub_rows.append(row)
                    ub_rhs.append(-constant)

    def matrix(rows):
        m = lil_matrix((max(len(rows), 1), len(unknown)))
        for i, row in enumerate(rows):
            for j, v in row.items():
                m[i, j] = v
        return m.tocsr()

    a_eq, a_ub = matrix(eq_rows), matrix(ub_rows)
    b_eq = numpy.array(eq_rhs or [0.0])
    b_ub = numpy.array(ub_rhs or [0.0])
    found = {}
    for key, actual in truth.items():
        if key in published or actual == 0:
            continue
        c = numpy.zeros(len(unknown))
        c[index[key]] = 1
        bounds = []
        for sign in (1, -1):
            r = linprog(sign * c, A_ub=a_ub if ub_rows else None, b_ub=b_ub if ub_rows else None,
                        A_eq=a_eq if eq_rows else None, b_eq=b_eq if eq_rows else None, bounds=(0, None), method="highs")
            bounds.append(sign * r.fun if r.status == 0 else (None if r.status == 3 else float("nan")))
        found[key] = (actual, bounds[0], bounds[1])
    return found


class Suppression(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-suppression-tests-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def build(self, name, toml, views, data, table, suppression, min_cell):
        """The table's published CSV, for one way of suppressing."""
        out = self.export(name, toml, views, data, suppression, min_cell)
        prefix = [l for l in toml.splitlines() if l.startswith("study_prefix")][0].split("=")[1].strip().strip("'\"")
        return read_cube(os.path.join(out, prefix, f"{prefix}__{table}.cube.csv"))[0]

    def export(self, name, toml, views, data, suppression, min_cell):
        """The study built and exported: its data path."""
        folder = os.path.join(self.tmp, f"{name}-{suppression}-{min_cell}")
        os.makedirs(folder)
        for file, text in views.items():
            with open(os.path.join(folder, file), "w") as f:
                f.write(text)
        text = toml.replace("min_cell = 10", f"min_cell = {min_cell}\nsuppression = '{suppression}'")
        with open(os.path.join(folder, "study.toml"), "w") as f:
            f.write(text)
        build, out = os.path.join(folder, "build"), os.path.join(folder, "out")
        veil("study", "build", folder, "--input", data, "--build-dir", build)
        veil("study", "export", folder, "--build-dir", build, "--data-path", out)
        return out

    def attack(self, name, toml, views, data, table, additive, leaks_before=True):
        truth = self.build(name, toml, views, data, table, "primary", 1)
        results = {}
        for suppression in ("primary", "complementary"):
            published = self.build(name, toml, views, data, table, suppression, 10)
            found = intervals(published, truth, additive)
            for key, (actual, least, greatest) in found.items():
                # The attack is sound: the truth lies within its interval.
                self.assertTrue(least is not None and least - 1e-6 <= actual, (key, actual, least, greatest))
                self.assertTrue(greatest is None or actual <= greatest + 1e-6, (key, actual, least, greatest))
            recovered = [k for k, (a, lo, hi) in found.items() if hi is not None and abs(hi - lo) < 1e-6]
            results[suppression] = (len(found), recovered)
        print(f"\n{name}: {results['primary'][0]} suppressed cells, {len(results['primary'][1])} recovered with primary "
              f"suppression; {results['complementary'][0]} suppressed, {len(results['complementary'][1])} recovered "
              f"with complementary", file=sys.stderr)
        if leaks_before:
            self.assertGreater(len(results["primary"][1]), 0, "the attack works on primary suppression alone")
        self.assertEqual(results["complementary"][1], [], "no suppressed cell is a single value")

    def hard_patients(self, name, seed, count):
        """A folder of patients whose cube has many small cells, and a state
        with three patients: the single suppressed child of its margins."""
        rng = random.Random(seed)
        data = os.path.join(self.tmp, name)
        os.makedirs(data)
        with open(os.path.join(data, "Patient.ndjson"), "w") as f:
            for i in range(count):
                state = "Z" if i < 3 else f"S{rng.randrange(6)}"
                f.write(json.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": rng.choice(["female", "male"]),
                                    "address": [{"state": state}],
                                    "maritalStatus": {"coding": [{"code": rng.choice("MSDWU")}]}}) + "\n")
        return data

    def test_a_cube_built_to_be_hard(self):
        data = self.hard_patients("hard", 42, 400)
        self.attack("hard", HARD_TOML, {"p.json": json.dumps(HARD_VIEW)}, data, "count_patients", [True, True, True])

    def test_three_sites_at_the_aggregator(self):
        sites = {"site_a": 300, "site_b": 220, "site_c": 400}
        db = os.path.join(self.tmp, "aggregator.db")
        secrets = {s: veil("aggregator", "site", "add", s, "--user", s, "--studies", "h", "--db", db).stdout.strip()
                   for s in sites}
        key = veil("aggregator", "key", "add", "--name", "attack", "--db", db).stdout.strip()
        truths, packages = {}, {}
        for seed, (site, count) in enumerate(sites.items()):
            data = self.hard_patients(site, seed, count)
            views = {"p.json": json.dumps(HARD_VIEW)}
            truths[site] = self.build(f"{site}-truth", HARD_TOML, views, data, "count_patients", "primary", 1)
            packages[site] = self.export(site, HARD_TOML, views, data, "primary", 10)
        with open(os.path.join(self.tmp, "aggregator.log"), "w+") as log:
            server, url = listen("aggregator", "serve", "--db", db, "--storage", os.path.join(self.tmp, "archive"),
                                 "--min-cell", "10", log=log)
            try:
                for site in sites:
                    env = dict(os.environ, CUMULUS_AGGREGATOR_USER=site, CUMULUS_AGGREGATOR_ID=secrets[site],
                               CUMULUS_AGGREGATOR_URL=url + "/")
                    veil("upload", "h", "--data-path", packages[site], env=env)
                headers = {"x-api-key": key}
                listing = json.load(urllib.request.urlopen(urllib.request.Request(url + "/data-packages", headers=headers)))
                [package] = [p for p in listing if p["name"] == "count_patients"]
                merged = json.load(urllib.request.urlopen(urllib.request.Request(
                    f"{url}/data-packages/{package['id']}/download?type=json", headers=headers)))
            finally:
                server.terminate()
                server.wait()
        columns = merged["columns"]
        strata = [columns.index(c) for c in ("sex", "state", "marital")]
        site_column = columns.index("site")
        sums, by_site = collections.Counter(), collections.Counter()
        for row in merged["rows"]:
            key_ = tuple(row[i] for i in strata)
            (sums if row[site_column] is None else by_site)[key_] += row[0]
        self.assertEqual(sums, by_site, "every sum over sites is the sum of the site rows published with it")
        domains = [sorted({k[j] for t in truths.values() for k in t if k[j] is not None}) for j in range(3)]
        recovered = {}
        for site, truth in truths.items():
            published = {tuple(row[i] for i in strata): row[0] for row in merged["rows"] if row[site_column] == site}
            self.assertTrue(published, f"{site}: something is still published")
            found = intervals(published, truth, [True, True, True], domains)
            for k, (actual, least, greatest) in found.items():
                self.assertTrue(least is not None and least - 1e-6 <= actual, (site, k, actual, least, greatest))
                self.assertTrue(greatest is None or actual <= greatest + 1e-6, (site, k, actual, least, greatest))
            # The site's suppressed cells: those it dropped, under the minimum (cells the
            # aggregator withheld to protect them count at least that, as the site sent them).
            recovered[site] = [k for k, (a, lo, hi) in found.items() if a < 10 and hi is not None and abs(hi - lo) < 1e-6]
            print(f"\naggregator, {site}: {len(truth)} cells, {len(published)} published, "
                  f"{len(found)} hidden, {len(recovered[site])} recovered", file=sys.stderr)
        self.assertEqual(recovered, {s: [] for s in sites}, "no site's hidden cell is a single value")

    def test_the_flu_study_on_a_sites_own_data(self):
        """The flu study's vaccinated patients by year, age band, sex and vaccine (its
        five-strata cube is too large for an LP per cell in a test run;
        crates/study/tests/attack.rs attacks that one by propagation), and
        its doses by year, month and vaccine."""
        data = os.path.join(self.tmp, "flu-data")
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "synthea-ndjson.py"), data,
                        "--types", "Patient,Immunization"], check=True)
        flu = os.path.join(ROOT, "crates", "study", "studies", "flu")
        views = {}
        for file in ("patient.json", "vaccination.json"):
            with open(os.path.join(flu, file)) as f:
                views[file] = f.read()
        with open(os.path.join(flu, "study.toml")) as f:
            toml = f.read()
        toml = toml.replace('strata = ["year", "month", "age_band", "sex", "vaccine_code"]', 'strata = ["year", "age_band", "sex", "vaccine_code"]')
        toml = toml.replace('count_distinct = "patient_ref"', 'count_distinct = "patient_ref"\nmin_cell = 10')
        # A patient counts in every year and vaccine of theirs: only sex is additive.
        self.attack("flu vaccinated", toml, views, data, "count_vaccinated", [False, False, True, False])
        # Doses: one year, month and vaccine each, so every stratum is additive.
        doses = toml.replace("min_cell = 10", "").replace('count_distinct = "immunization_ref"', 'count_distinct = "immunization_ref"\nmin_cell = 10')
        self.attack("flu doses", doses, views, data, "count_doses", [True, True, True], leaks_before=False)


if __name__ == "__main__":
    unittest.main()
