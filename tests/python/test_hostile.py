"""Veil tried as an attacker would: a registered client with narrow scopes,
a registered aggregator site, anonymous callers on loopback, against real
`veil serve` and `veil aggregator serve` processes, on SQLite and (where the
store matters) PostgreSQL. One test per class of hole (issue 18):

1. write scopes escalated through Bundles;
2. the aggregator's intake exhausted by a tiny upload (a Parquet
   compression bomb), with the aggregator's peak memory measured;
3. upload forms that outlive the site's credentials, or are used twice;
4. sharing an export that was never de-identified;
5. a client asking for more than its share (concurrent exports, storage,
   token guessing, the aggregator's keys and secrets);
6. smaller doors: spreadsheet formulas in CSV downloads, Snappy Parquet,
   versions that are not numbers, reserved container names, invalid
   primitives, invalid UTF-8 and a missing output folder in `veil deid`.
"""
import concurrent.futures
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import requests

from flu_export import VEIL, listen, veil

# The bound issue 18 states for one upload, however hostile.
AGGREGATOR_MEMORY_BOUND = 256 << 20


def postgres(schema):
    """The test PostgreSQL server with a schema of this test's own, or None."""
    url = os.environ.get("VEIL_TEST_POSTGRES")
    if not url:
        return None
    return url + ("&" if "?" in url else "?") + f"schema={schema}_{os.getpid()}"


def peak_rss(process):
    """A process's peak resident memory in bytes (Linux: VmHWM)."""
    with open(f"/proc/{process.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


class OneServer(unittest.TestCase):
    """A test class around one server process (`server`, its `log`) and a
    temporary folder (`tmp`), all removed at the end."""

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait()
        cls.log.close()
        shutil.rmtree(cls.tmp, True)


class Serve(OneServer):
    """`veil serve` with clients of narrow scopes."""
    db = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-hostile-serve-")
        cls.db = cls.db or "sqlite:" + os.path.join(cls.tmp, "veil.db")
        lines = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female", "birthDate": "1970-01-01",
                  "name": [{"family": f"Planted{i}"}]} for i in range(3)]
        data = os.path.join(cls.tmp, "data.ndjson")
        with open(data, "w") as f:
            f.write("\n".join(json.dumps(l) for l in lines) + "\n")
        veil("load", "--db", cls.db, data)
        cls.storage = os.path.join(cls.tmp, "storage")
        os.makedirs(os.path.join(cls.storage, "anonymization"))
        veil("export-preset", "flu", "--policy", os.path.join(cls.storage, "anonymization", "policy.json"))
        cls.log = open(os.path.join(cls.tmp, "serve.log"), "w+")
        cls.server, cls.base = listen("serve", "--db", cls.db, "--storage", cls.storage, log=cls.log)
        cls.tokens = {}
        for name, scope in [("bundle-only", "system/Bundle.c"), ("no-delete", "system/*.cru"), ("reader", "system/*.rs")]:
            cls.tokens[name] = cls.client(name, scope)

    @classmethod
    def client(cls, name, scope, base=None, db=None):
        """Registers a client with `scope` and gets a token for it."""
        key = os.path.join(cls.tmp, f"{name}.pem")
        jwks = os.path.join(cls.tmp, f"{name}.jwks.json")
        with open(jwks, "w") as f:
            subprocess.run([VEIL, "client", "keygen", "--out", key], stdout=f, check=True)
        client_id = veil("client", "add", "--db", db or cls.db, "--name", name, "--jwks", jwks, "--scope", scope).stdout.strip()
        return veil("client", "token", "--fhir-url", base or cls.base, "--client-id", client_id, "--key", key, "--scope", scope).stdout.strip()

    def call(self, method, path, token, body=None, base=None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            headers["Content-Type"] = "application/fhir+json"
            kw["data"] = json.dumps(body)
        return requests.request(method, (base or self.base) + path, headers=headers, timeout=60, **kw)

    def patient(self, id):
        r = self.call("GET", f"/Patient/{id}", self.tokens["reader"])
        return r.status_code, (r.json() if r.status_code == 200 else None)

    def wait_for(self, location, token, base=None):
        for _ in range(120):
            r = requests.get(location, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            if r.status_code != 202:
                self.assertEqual(r.status_code, 200, r.text)
                return location.rsplit("/", 1)[1]
            time.sleep(1.05)
        self.fail("the export did not finish")

    def test_1_bundles_cannot_escalate_write_scopes(self):
        before = {id: self.patient(id) for id in ("p0", "p1", "p2")}
        overwrite = {"resourceType": "Patient", "id": "p0", "name": [{"family": "Overwritten"}]}
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": overwrite, "request": {"method": "PUT", "url": "Patient/p0"}},
            {"request": {"method": "DELETE", "url": "Patient/p1"}}]}
        # A client that may only create Bundles: to /Bundle it is stored as a Bundle.
        r = self.call("POST", "/Bundle", self.tokens["bundle-only"], transaction)
        self.assertEqual(r.status_code, 201, r.text)
        self.assertEqual(r.json()["resourceType"], "Bundle")
        r = self.call("PUT", "/Bundle/b1", self.tokens["bundle-only"], dict(transaction, id="b1"))
        self.assertEqual(r.status_code, 403, "PUT needs update, which the scope does not give")
        # ... and at the base its entries need their own types' scopes.
        r = self.call("POST", "", self.tokens["bundle-only"], transaction)
        self.assertEqual(r.status_code, 403, r.text)
        self.assertIn("entry 0", r.text)
        # A client that may create, read and update anything, but not delete.
        r = self.call("POST", "", self.tokens["no-delete"], transaction)
        self.assertEqual(r.status_code, 403, r.text)
        self.assertIn("entry 1", r.text)
        self.assertIn("deleting", r.text)
        # A DELETE whose URL names no type is refused, never given a default one.
        r = self.call("POST", "", self.tokens["no-delete"], {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "DELETE", "url": "p2"}}]})
        self.assertIn(r.status_code, (400, 403), r.text)
        # A resource whose type differs from its entry's URL.
        r = self.call("POST", "", self.tokens["bundle-only"], {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Bundle", "type": "collection"}, "request": {"method": "PUT", "url": "Patient/p2"}}]})
        self.assertIn(r.status_code, (400, 403), r.text)
        # Nothing of any of it was written.
        self.assertEqual({id: self.patient(id) for id in ("p0", "p1", "p2")}, before)

    def test_4_an_export_not_de_identified_is_not_shared_without_saying_so(self):
        token = self.client("exporter", "system/*.rs")
        shares = []
        for query, identified in [("_type=Patient", True), ("_type=Patient&_anonymizationConfig=policy.json", False)]:
            r = requests.get(f"{self.base}/$export?{query}", headers={"Authorization": f"Bearer {token}", "Prefer": "respond-async"}, timeout=60)
            self.assertEqual(r.status_code, 202, r.text)
            job = self.wait_for(r.headers["Content-Location"], token)
            share = [VEIL, "share", "create", "--db", self.db, "--storage", self.storage, "--export", job]
            run = subprocess.run(share, capture_output=True, text=True)
            if identified:
                self.assertNotEqual(run.returncode, 0, "a plain export is not shared without --identified")
                self.assertIn("not de-identified", run.stderr)
                run = subprocess.run(share + ["--identified"], capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertIn("IDENTIFIED", run.stderr)
            else:
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertNotIn("IDENTIFIED", run.stderr)
            shares.append(re.search(r"sh_[0-9a-f]{16}", run.stderr).group(0))
        listing = veil("share", "list", "--db", self.db).stdout
        rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
        self.assertIn("IDENTIFIED", rows[shares[0]])
        self.assertIn("de-identified", rows[shares[1]])
        self.assertNotIn("IDENTIFIED", rows[shares[1]])

    def test_5_one_client_cannot_take_all_the_exports_storage_or_token_endpoint(self):
        # Enough patients that an export outlasts the burst of kick-offs.
        db = "sqlite:" + os.path.join(self.tmp, "many.db")
        data = os.path.join(self.tmp, "many.ndjson")
        with open(data, "w") as f:
            f.writelines(json.dumps({"resourceType": "Patient", "id": f"m{i}", "gender": "male"}) + "\n" for i in range(20000))
        veil("load", "--db", db, data)
        server, base = listen("serve", "--db", db, "--storage", os.path.join(self.tmp, "storage-many"), "--workers", "1",
                              "--max-exports-per-client", "2", "--min-free-gib", "0", log=self.log)
        try:
            token = self.client("greedy", "system/*.rs", base=base, db=db)

            def kickoff(_):
                return requests.get(f"{base}/$export?_type=Patient", timeout=60,
                                    headers={"Authorization": f"Bearer {token}", "Prefer": "respond-async"})
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(kickoff, range(40)))
            statuses = sorted(a.status_code for a in answers)
            self.assertLessEqual(statuses.count(202), 2, statuses)
            self.assertEqual(statuses.count(429), 40 - statuses.count(202), statuses)
            self.assertTrue(all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 429))
            self.assertTrue(all(a.headers["Content-Type"] == "application/fhir+json" for a in answers if a.status_code == 429))

            # /metadata is built once per start, not per request.
            first = requests.get(f"{base}/metadata", timeout=60).json()["date"]
            time.sleep(1.1)
            self.assertEqual(requests.get(f"{base}/metadata", timeout=60).json()["date"], first)

            # Guessing at the token endpoint: after a few refusals, 429 with Retry-After.
            form = {"grant_type": "client_credentials", "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": "not.a.jwt", "scope": "system/*.rs"}
            codes = [requests.post(f"{base}/auth/token", data=form, timeout=60).status_code for _ in range(12)]
            self.assertEqual(codes[:5], [400] * 5, codes)
            self.assertIn(429, codes)
            r = requests.post(f"{base}/auth/token", data=form, timeout=60)
            self.assertEqual(r.status_code, 429)
            self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)
        finally:
            server.terminate()
            server.wait()

        # A storage quota, retention, and a free-space floor: a store of its
        # own, so that no other server's workers take its jobs.
        storage = os.path.join(self.tmp, "storage-small")
        db = "sqlite:" + os.path.join(self.tmp, "small.db")
        veil("load", "--db", db, os.path.join(self.tmp, "data.ndjson"))
        server, base = listen("serve", "--db", db, "--storage", storage, "--client-quota-gib", "0.000000001",
                              "--retention-hours", "0.01", "--min-free-gib", "0", log=self.log)
        try:
            token = self.client("hoarder", "system/*.rs", base=base, db=db)
            auth = {"Authorization": f"Bearer {token}", "Prefer": "respond-async"}
            r = requests.get(f"{base}/$export?_type=Patient", headers=auth, timeout=60)
            self.assertEqual(r.status_code, 202, r.text)
            status = r.headers["Content-Location"]
            self.wait_for(status, token)
            r = requests.get(f"{base}/$export?_type=Patient", headers=auth, timeout=60)
            self.assertEqual(r.status_code, 429, "over its quota")
            self.assertIn("quota", r.text)
            # After the retention (36 s) the export and its files are gone, and the quota is free again.
            for _ in range(160):
                if requests.get(status, headers=auth, timeout=60).status_code == 404:
                    break
                time.sleep(0.5)
            self.assertEqual(requests.get(status, headers=auth, timeout=60).status_code, 404, "expired exports are deleted")
            self.assertEqual([d for d in os.listdir(storage) if d.startswith("export-")], [])
            self.assertEqual(requests.get(f"{base}/$export?_type=Patient", headers=auth, timeout=60).status_code, 202)
        finally:
            server.terminate()
            server.wait()
        server, base = listen("serve", "--db", db, "--storage", storage, "--min-free-gib", "1000000", log=self.log)
        try:
            token = self.client("late", "system/*.rs", base=base, db=db)
            r = requests.get(f"{base}/$export?_type=Patient", headers={"Authorization": f"Bearer {token}"}, timeout=60)
            self.assertEqual(r.status_code, 503, "the export disk is too full")
            self.assertIn("Retry-After", r.headers)
        finally:
            server.terminate()
            server.wait()

    def test_6_invalid_resources_and_reserved_containers_are_refused(self):
        token = self.tokens["no-delete"]
        r = self.call("POST", "/Patient", token, {"resourceType": "Patient", "birthDate": "not-a-date"})
        self.assertEqual(r.status_code, 422, r.text)
        self.assertEqual(r.json()["resourceType"], "OperationOutcome")
        self.assertIn("Patient.birthDate", r.text)
        self.assertNotIn("not-a-date", r.text, "no value in the error")
        r = self.call("PUT", "/Patient/p2", token, {"resourceType": "Patient", "id": "p2", "active": "yes"})
        self.assertEqual(r.status_code, 422, r.text)
        r = self.call("POST", "", token, {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p9", "gender": ["female"]}, "request": {"method": "PUT", "url": "Patient/p9"}}]})
        self.assertEqual(r.status_code, 422, r.text)
        self.assertEqual(self.patient("p9")[0], 404)
        reader = self.tokens["reader"]
        for container in ["Anonymization", "ANONYMIZATION", ".hidden", "export-x", "a", "Research"]:
            r = self.call("GET", f"/$export?_type=Patient&_container={container}", reader)
            self.assertEqual(r.status_code, 400, f"{container}: {r.text}")
        self.assertFalse(os.path.exists(os.path.join(self.storage, "Anonymization")))


@unittest.skipUnless(os.environ.get("VEIL_TEST_POSTGRES"), "needs VEIL_TEST_POSTGRES")
class ServeOnPostgres(Serve):
    db = postgres("hostile_serve")


def parquet_bytes(table, compression="zstd", row_group_size=None):
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression, row_group_size=row_group_size)
    return buf.getvalue()


def meta_members(version=1):
    return {
        "flu__meta_version.meta.parquet": parquet_bytes(pa.table({"data_package_version": pa.array([version], pa.int64())})),
        "flu__meta_date.meta.parquet": parquet_bytes(pa.table({"min_date": ["2020-01-01"], "max_date": ["2020-12-31"]})),
    }


def zipped(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def cube(rows, compression="zstd"):
    return parquet_bytes(pa.table({"cnt": pa.array([r[0] for r in rows], pa.int64()), "sex": pa.array([r[1] for r in rows], pa.string())}), compression)


class Aggregator(OneServer):
    """`veil aggregator serve` against a registered site that turned hostile."""
    db = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-hostile-aggregator-")
        cls.db = cls.db or os.path.join(cls.tmp, "aggregator.db")
        cls.secret = veil("aggregator", "site", "add", "site_a", "--user", "a-up", "--studies", "flu", "--db", cls.db).stdout.strip()
        cls.key = veil("aggregator", "key", "add", "--name", "tests", "--db", cls.db).stdout.strip()
        cls.log = open(os.path.join(cls.tmp, "serve.log"), "w+")
        cls.server, cls.url = listen("aggregator", "serve", "--db", cls.db, "--storage", os.path.join(cls.tmp, "archive"),
                                     "--network", "flu-net", log=cls.log)

    # The transaction of the site's last handshake: a handshake takes the
    # site's upload lock for ten minutes, and the site enters it again by
    # sending its transaction id, as Cumulus clients may.
    transaction = None

    def handshake(self, secret=None, version=1):
        headers = {"transaction-id": type(self).transaction} if type(self).transaction else {}
        r = requests.post(self.url + "/flu-net", json={"study": "flu", "data_package_version": version, "filename": "a.zip"},
                          auth=("a-up", secret or self.secret), headers=headers, timeout=60)
        if r.status_code == 200:
            type(self).transaction = r.headers["transaction-id"]
        return r

    def form(self):
        r = self.handshake()
        self.assertEqual(r.status_code, 200, r.text)
        return r.json()

    def post(self, form, body):
        return requests.post(form["url"], data=form["fields"], files={"file": ("a.zip", body)}, timeout=300)

    def total(self):
        r = requests.get(self.url + "/data-packages/flu__count_sex__001", headers={"x-api-key": self.key}, timeout=60)
        return r.json()["total"] if r.status_code == 200 else None

    def test_2_a_compression_bomb_is_refused_in_bounded_memory_and_frees_the_lock(self):
        # 20 million identical rows: a few KB of Parquet (dictionary + zstd).
        # (Parquet dictionary-encodes the text by itself; the Arrow type stays plain text.)
        chunk = pa.table({"cnt": pa.array([10] * 1_000_000, pa.int64()), "sex": pa.array(["female"] * 1_000_000)})
        buf = io.BytesIO()
        with pq.ParquetWriter(buf, chunk.schema, compression="zstd") as w:
            for _ in range(20):
                w.write_table(chunk)
        many_rows = zipped({"flu__count_sex.cube.parquet": buf.getvalue(), **meta_members()})
        # Under the row cap, but each row repeats one 4 KB text through the dictionary.
        wide = pa.table({"cnt": pa.array([10] * 900_000, pa.int64()), "sex": pa.array(["x" * 4000] * 900_000)})
        long_cells = zipped({"flu__count_sex.cube.parquet": parquet_bytes(wide), **meta_members()})
        for bomb, why in [(many_rows, "rows"), (long_cells, "MiB")]:
            self.assertLess(len(bomb), 1 << 20)
            r = self.post(self.form(), bomb)
            peak = peak_rss(self.server)
            print(f"aggregator peak RSS after a {len(bomb)}-byte bomb ({why}): {peak >> 20} MiB", flush=True)
            self.assertLess(peak, AGGREGATOR_MEMORY_BOUND, f"peak RSS {peak >> 20} MiB while refusing")
            self.assertEqual(r.status_code, 400, r.text[:300])
            self.assertIn(why, r.text)
            # The refusal freed the site's lock: it may ask again at once.
            self.assertEqual(self.handshake().status_code, 200)
        self.assertIsNone(self.server.poll(), "the aggregator is still up")

    def test_3_an_upload_form_is_good_once_and_dies_with_the_credentials(self):
        form = self.form()
        self.assertEqual(self.post(form, zipped({"flu__count_sex.cube.parquet": cube([(30, None)]), **meta_members()})).status_code, 204)
        self.assertEqual(self.total(), 30)
        # The same form again, with another zip.
        r = self.post(form, zipped({"flu__count_sex.cube.parquet": cube([(99, None)]), **meta_members()}))
        self.assertEqual(r.status_code, 403, r.text)
        self.assertIn("no longer valid", r.text)
        self.assertEqual(self.total(), 30, "nothing merged")
        # A form obtained before the site's secret was rotated.
        form = self.form()
        new_secret = veil("aggregator", "site", "rotate", "site_a", "--db", self.db).stdout.strip()
        r = self.post(form, zipped({"flu__count_sex.cube.parquet": cube([(77, None)]), **meta_members()}))
        self.assertEqual(r.status_code, 403, r.text)
        self.assertEqual(self.total(), 30, "nothing merged")
        type(self).secret = new_secret
        # A form obtained before the site was removed.
        form = self.form()
        veil("aggregator", "site", "remove", "site_a", "--db", self.db)
        try:
            r = self.post(form, zipped({"flu__count_sex.cube.parquet": cube([(55, None)]), **meta_members()}))
            self.assertEqual(r.status_code, 403, r.text)
            self.assertEqual(self.total(), 30, "nothing merged")
        finally:
            type(self).secret = veil("aggregator", "site", "add", "site_a", "--user", "a-up", "--studies", "flu", "--db", self.db).stdout.strip()

    def test_5_secrets_and_api_keys_cannot_be_guessed_at_speed(self):
        codes = [self.handshake(secret="wrong").status_code for _ in range(10)]
        self.assertEqual(codes[:5], [401] * 5, codes)
        self.assertIn(429, codes)
        r = self.handshake()
        self.assertEqual(r.status_code, 429, "the right secret waits too, from the guessing address")
        wait = int(r.headers["Retry-After"])
        self.assertGreaterEqual(wait, 1)
        time.sleep(wait + 0.1)
        self.assertEqual(self.handshake().status_code, 200, "a success after the wait is let in")
        codes = [requests.get(self.url + "/data-packages", headers={"x-api-key": "x.y"}, timeout=60).status_code for _ in range(10)]
        self.assertIn(429, codes)
        time.sleep(int(requests.get(self.url + "/data-packages", headers={"x-api-key": "x.y"}, timeout=60).headers.get("Retry-After", "1")) + 0.1)

    def test_6_csv_formulas_snappy_parquet_and_versions_that_are_not_numbers(self):
        # Snappy, as pandas and pyarrow write by default, with a formula in a stratum.
        body = zipped({"flu__count_sex.cube.parquet": cube([(40, "=HYPERLINK(\"http://x\")"), (50, "female")], compression="snappy"),
                       **meta_members()})
        r = self.post(self.form(), body)
        self.assertEqual(r.status_code, 204, r.text)
        r = requests.get(self.url + "/data-packages/flu__count_sex__001/download?type=csv", headers={"x-api-key": self.key}, timeout=60)
        self.assertEqual(r.status_code, 200)
        cells = [c for line in r.text.splitlines() for c in line.split(",")]
        self.assertFalse([c for c in cells if c.lstrip('"').startswith(("=", "+", "@"))], r.text)
        self.assertIn("'=HYPERLINK", r.text)
        for version in ["NaN", "-0.5", -0.5, "2.5"]:
            r = self.handshake(version=version)
            self.assertEqual(r.status_code, 400, f"{version!r}: {r.text}")
        meta = meta_members()
        meta["flu__meta_version.meta.parquet"] = parquet_bytes(pa.table({"data_package_version": pa.array([-0.5])}))
        r = self.post(self.form(), zipped({"flu__count_sex.cube.parquet": cube([(40, "female")]), **meta}))
        self.assertEqual(r.status_code, 400, r.text)
        self.assertIn("data_package_version", r.text)


@unittest.skipUnless(os.environ.get("VEIL_TEST_POSTGRES"), "needs VEIL_TEST_POSTGRES")
class AggregatorOnPostgres(Aggregator):
    db = postgres("hostile_aggregator")


class DeidInput(unittest.TestCase):
    """`veil deid` at the door: input that is not UTF-8, and `-o DIR/`."""

    def test_6_invalid_utf8_is_named_by_line_and_a_missing_output_folder_is_made(self):
        tmp = tempfile.mkdtemp(prefix="veil-hostile-deid-")
        try:
            good = json.dumps({"resourceType": "Patient", "id": "p1", "gender": "female"}).encode()
            path = os.path.join(tmp, "in.ndjson")
            with open(path, "wb") as f:
                f.write(good + b"\n" + b'{"resourceType": "Patient", "id": "p2", "gender": "fem\xffale"}\n' + good + b"\n")
            run = subprocess.run([VEIL, "deid", "-c", "safe-harbor", "-b", path, "-o", os.path.join(tmp, "out.ndjson")],
                                 capture_output=True, text=True)
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("line 2", run.stderr)
            self.assertIn("UTF-8", run.stderr)
            out = os.path.join(tmp, "missing", "folder") + os.sep
            ok = os.path.join(tmp, "ok.ndjson")
            with open(ok, "wb") as f:
                f.write(good + b"\n")
            run = subprocess.run([VEIL, "deid", "-c", "safe-harbor", "-b", ok, "-o", out], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertTrue(os.path.isfile(os.path.join(out, "ok.ndjson")))
        finally:
            shutil.rmtree(tmp, True)


if __name__ == "__main__":
    unittest.main()
