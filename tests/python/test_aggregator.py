"""Three sites, one `veil aggregator`: the merge checked against the sites' own
Parquet files, read here with pyarrow.

Each site holds a disjoint third of the Synthea sample's patients
(`bench/synthea-ndjson.py --part K/3`), de-identifies it with its own keys,
builds and exports the `flu` study with Veil, and uploads it with its own
credentials: two with `veil upload`, the third with the real
`cumulus-library upload` from PyPI, through the network path (`--network`).
The merged cubes the aggregator serves must be, cell by cell, the sums of
the sites' cubes (plus each site's own rows under its name), and no merged
cell may be under the minimum cell size.

`ThreeSitesOnS3` runs the same checks with the aggregator's storage in S3
(s3s-fs, which checks POST policies and signatures as S3 does; scripts/test
starts it): the handshake answers with an S3 presigned POST, the zips go
to the bucket, and the aggregator finds, checks and merges them there. It
adds what only S3 storage needs: the bucket takes nothing the policy does
not sign, a hostile zip posted there is refused and leaves nothing
visible, and an upload that arrives while the aggregator is down is merged
when it comes back.
"""
import collections
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
import time
import urllib.error
import urllib.request
import uuid
import zipfile

import pyarrow.parquet as pq
import requests

from flu_export import VEIL, flu_sites, listen, veil

SITES = ["site_a", "site_b", "site_c"]
MIN_CELL = 10


class ThreeSites(unittest.TestCase):
    env = None

    @classmethod
    def storage(cls):
        return os.path.join(cls.tmp, "archive")

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-aggregator-tests-")
        cls.data_paths = flu_sites(cls.tmp, SITES)
        cls.db = os.path.join(cls.tmp, "aggregator.db")
        cls.secrets = {s: veil("aggregator", "site", "add", s, "--user", f"{s}-uploader", "--studies", "flu",
                               "--db", cls.db).stdout.strip() for s in SITES}
        cls.key = veil("aggregator", "key", "add", "--name", "tests", "--db", cls.db).stdout.strip()
        cls.log = open(os.path.join(cls.tmp, "serve.log"), "w+")
        cls.start()

    @classmethod
    def start(cls):
        cls.server, cls.url = listen("aggregator", "serve", "--db", cls.db, "--storage", cls.storage(), "--poll-secs", "1",
                                     "--max-upload-mib", "1", "--network", "flu-net", "--min-cell", str(MIN_CELL),
                                     log=cls.log, env=cls.env)

    @classmethod
    def stop(cls):
        cls.server.terminate()
        cls.server.wait()

    @classmethod
    def tearDownClass(cls):
        cls.stop()
        cls.log.close()
        shutil.rmtree(cls.tmp, True)

    def settled(self, count):
        """The upload log once it holds `count` uploads (with S3 storage the
        aggregator checks them a moment after they reach the bucket)."""
        for _ in range(100):
            uploads = self.get("/uploads")
            if len(uploads) >= count:
                return uploads
            time.sleep(0.2)
        self.fail(f"only {len(uploads)} of {count} uploads were checked")

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

    def handshake(self, site, transaction=None):
        """A site's upload form, asked for by hand (with `transaction`, the
        lock that transaction holds is entered again): (url, fields,
        transaction)."""
        headers = {"transaction-id": transaction} if transaction else {}
        r = requests.post(self.url + "/flu-net", json={"study": "flu", "data_package_version": 1, "filename": f"{site}_flu.zip"},
                          auth=(f"{site}-uploader", self.secrets[site]), headers=headers)
        self.assertEqual(r.status_code, 200, r.text)
        answer = r.json()
        return answer["url"], answer["fields"], r.headers["transaction-id"]

    def post(self, url, fields, body):
        return requests.post(url, data=fields, files={"file": ("upload.zip", body)})

    def verdict(self, site, transaction):
        """What the aggregator says became of an upload, once it has checked it."""
        for _ in range(100):
            r = requests.get(f"{self.url}/upload/{transaction}", auth=(f"{site}-uploader", self.secrets[site]))
            self.assertEqual(r.status_code, 200, r.text)
            if r.json()["state"] != "waiting":
                return r.json()
            time.sleep(0.2)
        self.fail("the upload was never checked")

    def test_1_each_site_uploads_and_the_merge_is_the_sum(self):
        for site in SITES:
            run = self.upload(site)
            self.assertEqual(run.returncode, 0, f"{site}: {run.stdout}{run.stderr}")
            if site != "site_c":
                # veil upload reports the verdict: from the upload's answer,
                # or with S3 storage by asking the aggregator after S3's 204.
                self.assertIn("the aggregator checked it: accepted", run.stderr)
        uploads = {(u["site"], u["outcome"]) for u in self.settled(len(SITES))}
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
        self.assertNotIn("panicked", log)

    def settle(self):
        """Waits for uploads the aggregator has still to check (none here:
        a local upload is checked before its answer)."""

    def merged_contributions(self):
        """Every merged cube as {table: {site: {strata: cnt}}}, after checking
        that each cross-site cell is the sum of the sites' cells."""
        tables = {}
        for package in self.get("/data-packages"):
            merged = self.get(f"/data-packages/{package['id']}/download?type=json")
            by_site, summed = collections.defaultdict(dict), {}
            for row in merged["rows"]:
                strata = tuple(str(v) if v is not None else None for v in row[1:-1])
                if row[-1] is None:
                    summed[strata] = row[0]
                else:
                    by_site[row[-1]][strata] = row[0]
            expected = collections.Counter()
            for cells in by_site.values():
                expected.update(cells)
            self.assertEqual(summed, dict(expected), f"{package['name']}: every cross-site cell is the sum of the sites'")
            tables[package["name"]] = by_site
        return tables

    def test_6_a_killed_aggregator_leaves_each_upload_whole_or_absent(self):
        """SIGKILL at points spread over an upload's life (receiving, checking,
        merging, answering; with S3, the sweep): afterwards site_a's
        contribution is all of one package or all of the other, in every
        table at once, and every cross-site sum still holds."""
        packages = {}
        for source in ("site_a", "site_b"):
            with open(os.path.join(self.data_paths[source], "flu", "flu.zip"), "rb") as f:
                packages[source] = f.read()
        cubes = {source: {t: self.site_cube(source, t)[1] for t in ("count_vaccinated", "count_doses")} for source in packages}

        def contributed():
            """Which package site_a's merged rows are, in every table at once."""
            self.settle()
            found = {t: by_site["site_a"] for t, by_site in self.merged_contributions().items()}
            sources = [source for source, cube in cubes.items() if found == cube]
            self.assertEqual(len(sources), 1, "site_a's rows are one whole package")
            return sources[0]

        # One upload undisturbed (site_b's package, sent as site_a's), timed
        # from the post to the verdict.
        url, fields, transaction = self.handshake("site_a")
        started = time.monotonic()
        self.assertEqual(self.post(url, fields, packages["site_b"]).status_code, 204)
        self.assertEqual(self.verdict("site_a", transaction)["state"], "accepted")
        duration = time.monotonic() - started
        self.assertEqual(contributed(), "site_b")

        seen = collections.Counter()
        for step in range(12):
            source = ("site_a", "site_b")[step % 2]
            # The killed upload may still hold the lock: its transaction enters it again.
            url, fields, transaction = self.handshake("site_a", transaction)
            sender = threading.Thread(target=lambda: self.post_ignoring_errors(url, fields, packages[source]))
            sender.start()
            time.sleep(duration * step / 10)
            self.server.kill()
            self.server.wait()
            sender.join()
            type(self).start()
            seen[contributed() == source] += 1
        # Put site_a's own package back for whatever runs next.
        url, fields, transaction = self.handshake("site_a", transaction)
        self.assertEqual(self.post(url, fields, packages["site_a"]).status_code, 204)
        self.assertIn(self.verdict("site_a", transaction)["state"], ("accepted", "unchanged"))
        self.assertEqual(contributed(), "site_a")
        print(f"\n  killed 12 uploads: {seen[True]} merged whole, {seen[False]} left out whole", file=sys.stderr)

    def post_ignoring_errors(self, url, fields, body):
        try:
            self.post(url, fields, body)
        except requests.RequestException:
            pass  # the aggregator was killed under it


def need(name):
    value = os.environ.get(name)
    if not value:
        raise unittest.SkipTest(f"{name} is not set: scripts/test starts the emulators and sets it")
    return value


class ThreeSitesOnS3(ThreeSites):
    @classmethod
    def storage(cls):
        return f"s3://{cls.bucket}/aggregator"

    @classmethod
    def setUpClass(cls):
        access, secret = need("VEIL_TEST_S3_KEYS").split(":")
        # A bucket of this run's own, so that a reused emulator does not matter.
        cls.bucket = f"agg-{uuid.uuid4().hex[:8]}"
        cls.bucket_dir = os.path.join(need("VEIL_TEST_S3_ROOT"), cls.bucket)
        os.makedirs(cls.bucket_dir)
        cls.env = dict(os.environ, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1",
                       AWS_ENDPOINT=need("VEIL_TEST_S3"), AWS_ALLOW_HTTP="true")
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.bucket_dir, True)

    def objects(self, below):
        top = os.path.join(self.bucket_dir, "aggregator", below)
        return sorted(os.path.relpath(os.path.join(d, f), top) for d, _, files in os.walk(top) for f in files)

    def settle(self):
        self.staging_emptied("the sweep takes every upload in the bucket")

    def staging_emptied(self, why):
        """Waits for the staging area to empty. The aggregator records an
        upload's verdict before it deletes the staged object (so that a
        crash between the two repeats the check rather than losing the
        upload), so the object may outlive the verdict by a moment."""
        for _ in range(100):
            if not self.objects("upload_staging"):
                return
            time.sleep(0.2)
        self.assertEqual(self.objects("upload_staging"), [], why)

    # These run after test_1 (unittest orders them by name): each site has
    # uploaded its package once, and all three have been checked.

    def test_3_the_bucket_takes_only_what_the_policy_signs(self):
        url, fields, transaction = self.handshake("site_a")
        self.assertTrue(url.startswith(os.environ["VEIL_TEST_S3"]), "the zip goes to the bucket, not to the aggregator")
        self.assertTrue(fields["key"].startswith("aggregator/upload_staging/flu/site_a/001/"))
        with open(os.path.join(self.data_paths["site_a"], "flu", "flu.zip"), "rb") as f:
            package = f.read()
        other_site = dict(fields, key=fields["key"].replace("/site_a/", "/site_b/"))
        forged = dict(fields, **{"x-amz-signature": "0" * 64})
        # Another second than the one signed (never the same, whatever second it was).
        date = fields["x-amz-date"]
        longer = dict(fields, **{"x-amz-date": date[:-3] + ("01Z" if date.endswith("00Z") else "00Z")})
        # Each refused with S3's own error code (AWS and s3s name a policy mismatch differently).
        policy = {"AccessDenied", "InvalidPolicyDocument"}
        for name, form, body, codes in [("another site's key", other_site, package, policy),
                                        ("a forged signature", forged, package, {"SignatureDoesNotMatch"}),
                                        ("a changed date", longer, package, policy),
                                        ("over the size cap", fields, b"0" * ((1 << 20) + 1), {"EntityTooLarge"})]:
            with self.subTest(name):
                r = self.post(url, form, body)
                self.assertIn(r.status_code, (400, 403), r.text)
                self.assertIn(r.text.split("<Code>")[1].split("</Code>")[0], codes, r.text)
        self.assertEqual(self.objects("upload_staging"), [], "nothing was stored")
        # No upload arrived under the transaction: the lock is still held.
        r = requests.get(f"{self.url}/upload/{transaction}", auth=("site_a-uploader", self.secrets["site_a"]))
        self.assertEqual(r.json(), {"state": "waiting"})
        # Another site cannot ask after site_a's upload.
        r = requests.get(f"{self.url}/upload/{transaction}", auth=("site_b-uploader", self.secrets["site_b"]))
        self.assertEqual(r.status_code, 404)
        self.assertEqual(self.post(url, fields, package).status_code, 204)
        self.assertEqual(self.verdict("site_a", transaction)["state"], "unchanged", "the same package again changes nothing")

    def test_4_a_hostile_zip_in_the_bucket_is_refused_and_leaves_nothing(self):
        before = {p["id"]: p["last_data_update"] for p in self.get("/data-packages")}
        archived = self.objects("archive")
        for name, members in [("path traversal", {"../flu__count_vaccinated.cube.parquet": b"x"}),
                              ("not parquet", {"flu__count_vaccinated.cube.parquet": b"not parquet",
                                               "flu__meta_date.meta.parquet": b"x"})]:
            with self.subTest(name):
                url, fields, transaction = self.handshake("site_b")
                body = io.BytesIO()
                with zipfile.ZipFile(body, "w") as z:
                    for member, data in members.items():
                        z.writestr(member, data)
                self.assertEqual(self.post(url, fields, body.getvalue()).status_code, 204, "S3 takes it: the policy allows it")
                verdict = self.verdict("site_b", transaction)
                self.assertEqual(verdict["state"], "refused")
                self.assertTrue(verdict["message"], "the site is told why")
        # veil upload of a package its own checks let through (allowed names,
        # meta_date present) but the aggregator refuses: the site hears why.
        data_path = os.path.join(self.tmp, "bad-package")
        os.makedirs(os.path.join(data_path, "flu"))
        with zipfile.ZipFile(os.path.join(data_path, "flu", "flu.zip"), "w") as z:
            z.writestr("flu__count_vaccinated.cube.parquet", b"not parquet")
            z.writestr("flu__meta_date.meta.parquet", b"not parquet either")
        env = dict(os.environ, CUMULUS_AGGREGATOR_USER="site_b-uploader", CUMULUS_AGGREGATOR_ID=self.secrets["site_b"])
        run = subprocess.run([VEIL, "upload", "flu", "--url", self.url + "/", "--data-path", data_path],
                             env=env, capture_output=True, text=True, timeout=300)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("uploaded flu (204)", run.stderr, "S3 took it")
        self.assertIn("the aggregator refused the upload: ", run.stderr)
        self.staging_emptied("refused uploads are removed")
        self.assertEqual(self.objects("archive"), archived, "and never archived")
        self.assertEqual({p["id"]: p["last_data_update"] for p in self.get("/data-packages")}, before, "nothing changed")

    def test_5_an_upload_made_while_the_aggregator_is_down_is_merged_when_it_returns(self):
        url, fields, transaction = self.handshake("site_c")
        self.stop()
        try:
            with open(os.path.join(self.data_paths["site_c"], "flu", "flu.zip"), "rb") as f:
                self.assertEqual(self.post(url, fields, f.read()).status_code, 204)
            self.assertEqual(len(self.objects("upload_staging")), 1, "it waits in the bucket")
        finally:
            type(self).start()
        self.assertEqual(self.verdict("site_c", transaction)["state"], "unchanged")
        self.staging_emptied("a checked upload is removed from the bucket")


if __name__ == "__main__":
    unittest.main()
