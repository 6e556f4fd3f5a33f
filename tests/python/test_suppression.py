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
the same by propagating bounds, on more cubes)."""
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

import numpy
from scipy.optimize import linprog
from scipy.sparse import lil_matrix

from flu_export import ROOT, veil

HARD_VIEW = {"resource": "Patient", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()"}, {"name": "sex", "path": "gender"},
    {"name": "state", "path": "address.state"}, {"name": "marital", "path": "maritalStatus.coding.code"}]}]}


def read_cube(path):
    """{(value or None per stratum): count}, and the strata's names."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    strata = rows[0][1:]
    return {tuple(v if v != "" else None for v in r[1:]): int(r[0]) for r in rows[1:]}, strata


def intervals(published, truth, additive):
    """For every cell that the truth holds (count > 0) and that is not
    published: (least, greatest) value consistent with what is."""
    d = len(additive)
    domains = [sorted({k[j] for k in truth if k[j] is not None}) for j in range(d)]
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
        prefix = [l for l in text.splitlines() if l.startswith("study_prefix")][0].split("=")[1].strip().strip("'\"")
        veil("study", "export", folder, "--build-dir", build, "--data-path", out)
        return read_cube(os.path.join(out, prefix, f"{prefix}__{table}.cube.csv"))[0]

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

    def test_a_cube_built_to_be_hard(self):
        rng = random.Random(42)
        data = os.path.join(self.tmp, "hard")
        os.makedirs(data)
        with open(os.path.join(data, "Patient.ndjson"), "w") as f:
            for i in range(400):
                state = "Z" if i < 3 else f"S{rng.randrange(6)}"
                f.write(json.dumps({"resourceType": "Patient", "id": f"p{i}", "gender": rng.choice(["female", "male"]),
                                    "address": [{"state": state}],
                                    "maritalStatus": {"coding": [{"code": rng.choice("MSDWU")}]}}) + "\n")
        toml = ("study_prefix = 'h'\n[views]\np = 'p.json'\n[[counts]]\nname = 'count_patients'\nfrom = 'p'\n"
                "strata = ['sex', 'state', 'marital']\ncount_distinct = 'id'\nmin_cell = 10\n")
        self.attack("hard", toml, {"p.json": json.dumps(HARD_VIEW)}, data, "count_patients", [True, True, True])

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
