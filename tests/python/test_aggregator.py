"""Three sites, one `veil aggregator`: the merge checked against the sites' own
Parquet files, read here with pyarrow.

Each site holds a disjoint third of the Synthea sample's patients
(`bench/synthea-ndjson.py --part K/3`), builds and exports the `flu` study
with Veil, and uploads it with its own credentials: two with `veil upload`,
the third with the real `cumulus-library upload` from PyPI, through the
network path (`--network`). The merged cubes the aggregator serves must be,
cell by cell, the sums of the sites' cubes (plus each site's own rows under
its name), and no merged cell may be under the minimum cell size.
"""
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

import pyarrow.parquet as pq

from flu_export import VEIL, flu_sites, listen, veil

SITES = ["site_a", "site_b", "site_c"]
MIN_CELL = 10


class ThreeSites(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-aggregator-tests-")
        cls.data_paths = flu_sites(cls.tmp, SITES)
        cls.db = os.path.join(cls.tmp, "aggregator.db")
        cls.secrets = {s: veil("aggregator", "site", "add", s, "--user", f"{s}-uploader", "--studies", "flu",
                               "--db", cls.db).stdout.strip() for s in SITES}
        cls.key = veil("aggregator", "key", "add", "--name", "tests", "--db", cls.db).stdout.strip()
        cls.log = open(os.path.join(cls.tmp, "serve.log"), "w+")
        cls.server, cls.url = listen("aggregator", "serve", "--db", cls.db, "--dir", os.path.join(cls.tmp, "archive"),
                                     "--network", "flu-net", "--min-cell", str(MIN_CELL), log=cls.log)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait()
        cls.log.close()
        shutil.rmtree(cls.tmp, True)

    def get(self, path, key=None):
        request = urllib.request.Request(self.url + path, headers={"x-api-key": key or self.key})
        with urllib.request.urlopen(request) as r:
            return json.load(r)

    def upload(self, site):
        env = dict(os.environ, CUMULUS_AGGREGATOR_USER=f"{site}-uploader", CUMULUS_AGGREGATOR_ID=self.secrets[site],
                   CUMULUS_AGGREGATOR_URL=self.url + "/", CUMULUS_AGGREGATOR_NETWORK="flu-net")
        if site == "site_c":
            # The real client, from PyPI.
            cli = os.path.join(os.path.dirname(sys.executable), "cumulus-library")
            command = [cli, "upload", "--target", "flu", self.data_paths[site]]
        else:
            command = [VEIL, "upload", "flu", "--data-path", self.data_paths[site]]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    def site_cube(self, site, table):
        """A site's cube as {strata tuple: cnt}, read from its own Parquet file."""
        rows = pq.read_table(os.path.join(self.data_paths[site], "flu", f"flu__{table}.cube.parquet")).to_pylist()
        strata = [c for c in rows[0] if c != "cnt"]
        return strata, {tuple(str(r[c]) if r[c] is not None else None for c in strata): r["cnt"] for r in rows}

    def test_1_each_site_uploads_and_the_merge_is_the_sum(self):
        for site in SITES:
            run = self.upload(site)
            self.assertEqual(run.returncode, 0, f"{site}: {run.stdout}{run.stderr}")
        uploads = {(u["site"], u["outcome"]) for u in self.get("/uploads")}
        self.assertEqual(uploads, {(s, "accepted") for s in SITES}, "cumulus-library's upload was accepted too")

        packages = {p["name"]: p for p in self.get("/data-packages")}
        self.assertEqual(set(packages), {"count_vaccinated", "count_doses"})
        for table, package in packages.items():
            with self.subTest(table=table):
                merged = self.get(f"/data-packages/{package['id']}/download?type=json")
                columns = merged["columns"]
                self.assertEqual(columns[0], "cnt")
                self.assertEqual(columns[-1], "site")
                expected = collections.Counter()
                for site in SITES:
                    strata, cube = self.site_cube(site, table)
                    self.assertEqual(strata, columns[1:-1])
                    for key, n in cube.items():
                        expected[key + (None,)] += n
                        expected[key + (site,)] += n
                got = {tuple(str(v) if v is not None else None for v in row[1:]): row[0] for row in merged["rows"]}
                self.assertEqual(got, dict(expected))
                self.assertGreaterEqual(min(got.values()), MIN_CELL, "no merged cell under the minimum")
                network_total = got[(None,) * (len(columns) - 1)]
                self.assertEqual(package["total"], network_total)

        # The chart API gives the same numbers: the yearly trend, by site.
        chart = self.get("/data-packages/flu__count_vaccinated__001/chart?column=year&stratifier=site")
        _, cubes = zip(*(self.site_cube(s, "count_vaccinated") for s in SITES))
        for series in chart["data"]:
            site = series["stratifier"]
            cube = cubes[SITES.index(site)]
            for year, n in series["rows"]:
                self.assertEqual(cube[(year, None, None, None, None)], n)
        self.assertEqual(chart["counts"], {s: cubes[i][(None,) * 5] for i, s in enumerate(SITES)})
        periods = self.get("/study-periods")
        self.assertEqual(set(periods), set(SITES))
        for site in SITES:
            dates = pq.read_table(os.path.join(self.data_paths[site], "flu", "flu__meta_date.meta.parquet")).to_pylist()[0]
            self.assertEqual(periods[site]["flu"]["001"]["earliest_date"], str(dates["min_date"]))

    def test_2_refusals_reach_the_site(self):
        # A site may not upload another study, nor with a wrong secret; the
        # query API wants a key; the log never shows a secret or the key.
        env = dict(os.environ, CUMULUS_AGGREGATOR_USER="site_a-uploader", CUMULUS_AGGREGATOR_ID="wrong")
        run = subprocess.run([VEIL, "upload", "flu", "--url", self.url + "/", "--data-path", self.data_paths["site_a"]],
                             env=env, capture_output=True, text=True)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("refused the credentials (401)", run.stderr)
        other = veil("aggregator", "site", "add", "site_d", "--studies", "covid", "--db", self.db).stdout.strip()
        env = dict(os.environ, CUMULUS_AGGREGATOR_USER="site_d", CUMULUS_AGGREGATOR_ID=other)
        run = subprocess.run([VEIL, "upload", "flu", "--url", self.url + "/", "--data-path", self.data_paths["site_a"]],
                             env=env, capture_output=True, text=True)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("not this upload (403): site site_d may not upload the study flu", run.stderr)
        with self.assertRaises(urllib.error.HTTPError) as refused:
            self.get("/data-packages", key="not-a-key")
        self.assertEqual(refused.exception.code, 401)
        self.log.flush()
        self.log.seek(0)
        log = self.log.read()
        self.assertIn("POST /{network} 200 site=site_c", log)  # route patterns, never paths or credentials
        self.assertIn("upload accepted site=site_c study=flu", log)
        for secret in [*self.secrets.values(), other, self.key, self.key.split(".")[1]]:
            self.assertNotIn(secret, log)


if __name__ == "__main__":
    unittest.main()
