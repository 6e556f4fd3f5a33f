"""Share links in cloud storage, against emulators that check signatures as
the clouds do (scripts/test starts both): Azurite for Azure Blob Storage
($VEIL_TEST_AZURITE) and s3s-fs for S3 ($VEIL_TEST_S3, serving the folder
$VEIL_TEST_S3_ROOT, keys $VEIL_TEST_S3_KEYS).

`veil deid -o` writes a de-identified export to the cloud, `veil share
create` makes the link, and then the research team's side is played by
Azure's own Python client (azure-storage-blob), by plain HTTP, and by
`veil fetch`. Each link must open exactly the shared export, write
nothing, and stop working at expiry. `veil export -o s3://…` (pulling from
a `veil serve` on loopback) must land a de-identified, checksummed export
in the bucket."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient

from flu_export import ROOT, VEIL, listen

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def need(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the tests with scripts/test, which starts the storage emulators")
    return value


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def http_get(url, method="GET", data=None, headers=None):
    """(status, body) of a request, errors included."""
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# The audit's evidence, beside every de-identified export's files.
EVIDENCE = ["veil-risk.html", "veil-risk.json", "veil-risk.txt"]


class CloudShares(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-share-tests-")
        # Two inputs: a quarter of the sample's patients and conditions,
        # de-identified with Safe Harbor; and every Observation (12 MB, so
        # that it goes up in parts) under a policy with no rules, which is
        # quick in a debug build (these tests are about storage).
        make = os.path.join(ROOT, "bench", "synthea-ndjson.py")
        cls.small, cls.large = os.path.join(cls.tmp, "small"), os.path.join(cls.tmp, "large")
        subprocess.run([sys.executable, make, cls.small, "--types", "Patient,Condition", "--part", "1/4"], check=True)
        subprocess.run([sys.executable, make, cls.large, "--types", "Observation"], check=True)
        cls.no_rules = os.path.join(cls.tmp, "no-rules.json")
        with open(cls.no_rules, "w") as f:
            json.dump({"fhirVersion": "R4", "fhirPathRules": [], "parameters": {"encryptKey": "0123456789abcdef0123456789abcdef"}}, f)
        cls.db = "sqlite:" + os.path.join(cls.tmp, "veil.db")
        azurite = need("VEIL_TEST_AZURITE")
        access, secret = need("VEIL_TEST_S3_KEYS").split(":")
        cls.env = dict(
            os.environ,
            AZURE_STORAGE_USE_EMULATOR="true",
            AZURITE_BLOB_STORAGE_URL=azurite,
            AWS_ACCESS_KEY_ID=access,
            AWS_SECRET_ACCESS_KEY=secret,
            AWS_REGION="us-east-1",
            AWS_ENDPOINT=need("VEIL_TEST_S3"),
            AWS_ALLOW_HTTP="true",
        )
        # Names of this run's own, so that a reused emulator does not matter.
        cls.tag = uuid.uuid4().hex[:8]
        cls.azure = BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={azurite}/devstoreaccount1;"
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def veil(self, *args, check=True):
        r = subprocess.run([VEIL, *args], capture_output=True, text=True, env=self.env)
        if check and r.returncode != 0:
            self.fail(f"veil {args[0]} failed ({r.returncode}): {r.stderr}")
        return r

    def export_to(self, destination, large=False):
        """De-identifies an input into `destination`; the manifest written there."""
        if large:
            self.veil("deid", "-c", self.no_rules, "-b", "-i", self.large, "-o", destination)
        else:
            self.veil("deid", "-c", "safe-harbor", "-b", "-i", self.small, "-o", destination)

    def share(self, destination, expires="1h", *extra):
        r = self.veil("share", "create", "--db", self.db, "--path", destination, "--expires", expires, *extra)
        link = r.stdout.strip()
        self.assertEqual(len(r.stdout.strip().splitlines()), 1, "stdout holds the link alone")
        self.assertNotIn(link.split("?")[-1], r.stderr, "the signature is not echoed to stderr")
        return link

    def fetch(self, link, out):
        return self.veil("fetch", link, "-o", out, check=False)

    def assert_fetched(self, out, manifest):
        for f in manifest["files"]:
            with open(os.path.join(out, f["path"]), "rb") as h:
                data = h.read()
            self.assertEqual((len(data), sha256(data)), (f["size"], f["sha256"]), f["path"])

    # --- Azure -------------------------------------------------------------

    def test_azure_container_sas_lists_and_reads_only_that_container(self):
        exported, other = f"export-a-{self.tag}", f"other-study-{self.tag}"
        for name in (exported, other):
            self.azure.create_container(name)
        self.azure.get_container_client(other).upload_blob("secret.ndjson", b'{"resourceType":"Patient","id":"not-shared"}\n')
        self.export_to(f"az://{exported}", large=True)
        manifest = json.loads(self.azure.get_container_client(exported).download_blob("veil-manifest.json").readall())
        self.assertEqual([f["path"] for f in manifest["files"]], ["Observation.ndjson", *EVIDENCE])
        big = max(f["size"] for f in manifest["files"])
        self.assertGreater(big, 8 * 1024 * 1024, "one file went up in parts")

        # No rules: the audit fails, and the operator shares all the same.
        link = self.share(f"az://{exported}", "1h", "--recipient", "Team A", "--despite-audit")
        self.assertIn("sr=c", link)
        self.assertIn("si=sh_", link, "the SAS names the share's stored access policy")

        # Azure's own client, with nothing but the link.
        team = ContainerClient.from_container_url(link)
        names = sorted(b.name for b in team.list_blobs())
        self.assertEqual(names, sorted([f["path"] for f in manifest["files"]] + ["veil-manifest.json"]))
        for f in manifest["files"]:
            data = team.download_blob(f["path"]).readall()
            self.assertEqual(sha256(data), f["sha256"], f["path"])
        # A blob URL made from the container link reads that blob too.
        one = BlobClient.from_blob_url(link.replace(f"/{exported}?", f"/{exported}/Observation.ndjson?"))
        self.assertEqual(sha256(one.download_blob().readall()), manifest["files"][0]["sha256"])

        # Nothing else in the account, and no writing.
        elsewhere = ContainerClient.from_container_url(link.replace(f"/{exported}?", f"/{other}?"))
        with self.assertRaises(HttpResponseError) as e:
            list(elsewhere.list_blobs())
        self.assertEqual(e.exception.status_code, 403)
        with self.assertRaises(HttpResponseError) as e:
            elsewhere.download_blob("secret.ndjson").readall()
        self.assertEqual(e.exception.status_code, 403)
        for write in (lambda: team.upload_blob("planted.ndjson", b"x"), lambda: team.delete_blob("Observation.ndjson"),
                      lambda: team.upload_blob("Observation.ndjson", b"x", overwrite=True)):
            with self.assertRaises(HttpResponseError) as e:
                write()
            self.assertEqual(e.exception.status_code, 403)
        self.assertEqual(sorted(b.name for b in team.list_blobs()), names, "nothing was written")

        # An address range becomes the SAS's signed sip. Azurite does not
        # enforce sip, so this checks only that the signature covers it.
        near = self.share(f"az://{exported}", "1h", "--ip", "127.0.0.1", "--despite-audit")
        self.assertIn("sip=127.0.0.1&", near)
        self.assertEqual(sorted(b.name for b in ContainerClient.from_container_url(near).list_blobs()), names)
        with self.assertRaises(HttpResponseError) as e:
            list(ContainerClient.from_container_url(near.replace("sip=127.0.0.1", "sip=127.0.0.2")).list_blobs())
        self.assertEqual(e.exception.status_code, 403)

        # A container that does not exist is named before any work is done.
        r = self.veil("deid", "-c", "safe-harbor", "-b", "-i", self.small, "-o", f"az://missing-{self.tag}", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"az://missing-{self.tag}: the bucket or container does not exist", r.stderr)
        self.assertNotIn("resources in", r.stderr, "nothing was de-identified for nowhere")

        # veil fetch: every file, checked.
        out = os.path.join(self.tmp, "fetched-azure")
        r = self.fetch(link, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(out, manifest)
        listed = self.veil("share", "list", "--db", self.db).stdout
        self.assertIn("azure-sas", listed)
        self.assertIn("Team A", listed)

        # Revoked: the share's stored access policy goes, and with it this
        # share's SAS; another share of the same container still works.
        share_id = [line.split()[0] for line in listed.splitlines() if "Team A" in line][0]
        r = self.veil("share", "revoke", "--db", self.db, share_id)
        self.assertIn("stored access policy was deleted", r.stdout)
        with self.assertRaises(HttpResponseError) as e:
            list(team.list_blobs())
        self.assertEqual(e.exception.status_code, 403)
        self.assertEqual(sorted(b.name for b in ContainerClient.from_container_url(near).list_blobs()), names)
        r = self.fetch(link, os.path.join(self.tmp, "fetched-revoked"))
        self.assertEqual(r.returncode, 1)

    def test_azure_sas_stops_at_expiry(self):
        container = f"export-expiring-{self.tag}"
        self.azure.create_container(container)
        self.export_to(f"az://{container}")
        # Expiry is signed in whole seconds, and the link is used once
        # before it: a few seconds of margin for a loaded machine.
        link = self.share(f"az://{container}", "6s")
        team = ContainerClient.from_container_url(link)
        self.assertTrue(list(team.list_blobs()))
        time.sleep(8)
        with self.assertRaises(HttpResponseError) as e:
            list(team.list_blobs())
        self.assertEqual(e.exception.status_code, 403)
        r = self.fetch(link, os.path.join(self.tmp, "fetched-expired"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("expired", r.stderr)
        self.assertNotIn("sig=", r.stderr, "no message carries the link")
        # Longer than Azure allows is refused before anything is signed.
        r = self.veil("share", "create", "--db", self.db, "--path", f"az://{container}", "--expires", "8d", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("7 days", r.stderr)

    def test_azure_prefix_gets_a_read_only_sas_per_file(self):
        container = f"exports-{self.tag}"
        self.azure.create_container(container)
        self.azure.get_container_client(container).upload_blob("2026/other-run/secret.ndjson", b'{"resourceType":"Patient"}\n')
        self.export_to(f"az://{container}/2026/run-1")
        link = self.share(f"az://{container}/2026/run-1")
        status, body = http_get(link)
        self.assertEqual(status, 200)
        share = json.loads(body)
        self.assertEqual({f["path"] for f in share["files"]}, {"Patient.ndjson", "Condition.ndjson", *EVIDENCE})
        for f in share["files"]:
            self.assertIn("sr=b", f["url"])
        url = next(f["url"] for f in share["files"] if f["path"] == "Patient.ndjson")
        self.assertIn("si=sh_", url)
        self.assertEqual(http_get(url)[0], 200)
        self.assertEqual(http_get(url.replace("2026/run-1/Patient.ndjson", "2026/other-run/secret.ndjson"))[0], 403)
        self.assertEqual(http_get(url, method="PUT", data=b"x", headers={"x-ms-blob-type": "BlockBlob"})[0], 403)
        out = os.path.join(self.tmp, "fetched-prefix")
        r = self.fetch(link, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(out, share)

    # --- S3 -----------------------------------------------------------------

    def test_s3_presigned_urls_read_the_shared_files_only_and_expire(self):
        root = need("VEIL_TEST_S3_ROOT")
        bucket = f"lake-{self.tag}"
        os.makedirs(os.path.join(root, bucket, "private"), exist_ok=True)
        with open(os.path.join(root, bucket, "private", "secret.ndjson"), "w") as f:
            f.write('{"resourceType":"Patient","id":"not-shared"}\n')
        self.export_to(f"s3://{bucket}/exports/run-1", large=True)
        with open(os.path.join(root, bucket, "exports", "run-1", "veil-manifest.json")) as f:
            manifest = json.load(f)
        self.assertGreater(max(f["size"] for f in manifest["files"]), 8 * 1024 * 1024, "one file went up in parts")

        # The Observations went through a policy with no rules: their audit
        # fails, and the operator says to share them all the same.
        link = self.share(f"s3://{bucket}/exports/run-1", "1h", "--recipient", "Team B", "--despite-audit")
        self.assertIn("X-Amz-Signature=", link)
        status, body = http_get(link)
        self.assertEqual(status, 200)
        share = json.loads(body)
        self.assertEqual([(f["path"], f["sha256"]) for f in share["files"]], [(f["path"], f["sha256"]) for f in manifest["files"]])
        for f in share["files"]:
            status, data = http_get(f["url"])
            self.assertEqual((status, sha256(data)), (200, f["sha256"]), f["path"])
        url = share["files"][0]["url"]
        key = "exports/run-1/" + share["files"][0]["path"]
        for elsewhere in ("private/secret.ndjson", "exports/run-1/veil-manifest.json"):
            self.assertEqual(http_get(url.replace(key, elsewhere))[0], 403, elsewhere)
        self.assertEqual(http_get(url.split("?")[0])[0], 403, "not without the signature")
        self.assertEqual(http_get(url, method="PUT", data=b"x")[0], 403, "a GET URL writes nothing")

        out = os.path.join(self.tmp, "fetched-s3")
        r = self.fetch(link, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(out, manifest)

        # X-Amz-Date is in whole seconds and the share manifest is uploaded
        # after signing: a few seconds of margin before the first use.
        short = self.share(f"s3://{bucket}/exports/run-1", "5s", "--despite-audit")
        first = json.loads(http_get(short)[1])["files"][0]["url"]
        time.sleep(7)
        self.assertEqual(http_get(short)[0], 403)
        self.assertEqual(http_get(first)[0], 403)
        r = self.fetch(short, os.path.join(self.tmp, "fetched-s3-expired"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("expired", r.stderr)
        self.assertNotIn("X-Amz-Signature", r.stderr)

        # S3 cannot withdraw a presigned URL: revoke says so, and what to do.
        share_id = [line.split()[0] for line in self.veil("share", "list", "--db", self.db).stdout.splitlines() if "Team B" in line][0]
        r = self.veil("share", "revoke", "--db", self.db, share_id, check=False)
        self.assertEqual(r.returncode, 3)
        self.assertIn("access key", r.stdout)
        self.assertEqual(http_get(link)[0], 200, "as revoke said: the link still works until it expires")

    def test_serve_exports_to_s3_and_shares_the_job(self):
        root = need("VEIL_TEST_S3_ROOT")
        bucket = f"veil-{self.tag}"
        policies = os.path.join(root, bucket, "veil", "anonymization")
        os.makedirs(policies)
        shutil.copy(os.path.join(ROOT, "crates", "deid", "policies", "safe-harbor.json"), policies)
        db = "sqlite:" + os.path.join(self.tmp, "serve.db")
        self.veil("load", "--db", db, os.path.join(self.small, "Patient.ndjson"), os.path.join(self.small, "Condition.ndjson"))
        work = os.path.join(self.tmp, "serve-work")
        storage = f"s3://{bucket}/veil"
        with open(os.path.join(self.tmp, "serve.log"), "w") as log:
            server, base = listen("serve", "--db", db, "--storage", storage, "--work-dir", work, "--insecure-no-auth", log=log, env=self.env)
        try:
            request = urllib.request.Request(f"{base}/$export?_type=Patient,Condition&_anonymizationConfig=safe-harbor.json&_container=research",
                                             headers={"Prefer": "respond-async"})
            with urllib.request.urlopen(request) as r:
                self.assertEqual(r.status, 202)
                status = r.headers["Content-Location"]
            for _ in range(300):
                code, body = http_get(status)
                if code == 200:
                    break
                self.assertIn(code, (202, 429), body)
                time.sleep(0.2)
            self.assertEqual(code, 200)
            output = json.loads(body)["output"]
        finally:
            server.terminate()
            server.wait()
        job = status.rsplit("/", 1)[1]
        research = os.path.join(root, bucket, "veil", "research")
        [folder] = [d for d in os.listdir(research) if d.endswith(job)]
        with open(os.path.join(research, folder, "veil-manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(sorted(f["path"] for f in manifest["files"]), sorted([o["url"].rsplit("/", 1)[1] for o in output] + EVIDENCE))
        for f in manifest["files"]:
            with open(os.path.join(research, folder, f["path"]), "rb") as h:
                self.assertEqual(sha256(h.read()), f["sha256"])

        link = self.share_export(db, job, storage, work)
        out = os.path.join(self.tmp, "fetched-serve")
        r = self.fetch(link, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_fetched(out, manifest)

        # Deleting the export (Bulk Data's DELETE on its status URL) deletes
        # the cloud copy too.
        with open(os.path.join(self.tmp, "serve.log"), "a") as log:
            server, base = listen("serve", "--db", db, "--storage", storage, "--work-dir", work, "--insecure-no-auth", log=log, env=self.env)
        try:
            status = base + "/_export-status/" + job
            self.assertEqual(http_get(status, method="DELETE")[0], 202)
        finally:
            server.terminate()
            server.wait()
        self.assertFalse(os.listdir(os.path.join(research, folder)), "the job's objects are gone")
        self.assertNotIn(job, " ".join(os.listdir(work) + os.listdir(os.path.join(work, "research"))))

    def test_export_pulls_from_a_bulk_server_into_s3(self):
        root = need("VEIL_TEST_S3_ROOT")
        bucket = f"pull-{self.tag}"
        os.makedirs(os.path.join(root, bucket))
        db = "sqlite:" + os.path.join(self.tmp, "ehr.db")
        patients = os.path.join(self.small, "Patient.ndjson")
        self.veil("load", "--db", db, patients, os.path.join(self.small, "Condition.ndjson"))
        work = os.path.join(self.tmp, "pull-work")
        with open(os.path.join(self.tmp, "ehr.log"), "w") as log:
            server, base = listen("serve", "--db", db, "--storage", os.path.join(self.tmp, "ehr-storage"), "--insecure-no-auth", log=log)
        try:
            # A missing bucket is found before anything is asked of the server.
            r = self.veil("export", "--from", base, "--deid", "safe-harbor", "-o", f"s3://missing-{self.tag}/x", "--work-dir", work, check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("does not exist", r.stderr)
            self.assertFalse(os.path.exists(work))
            r = self.veil("export", "--from", base, "--type", "Patient,Condition", "--deid", "safe-harbor",
                          "-o", f"s3://{bucket}/cohort-1", "--work-dir", work)
        finally:
            server.terminate()
            server.wait()
        self.assertIn(f"s3://{bucket}/cohort-1", r.stdout)
        self.assertFalse(os.path.exists(work), "the work folder is removed once uploaded")
        folder = os.path.join(root, bucket, "cohort-1")
        with open(os.path.join(folder, "veil-manifest.json")) as f:
            manifest = json.load(f)
        names = sorted(f["path"] for f in manifest["files"])
        self.assertIn("veil-export-manifest.json", names)
        self.assertTrue(any(n.startswith("Patient.") for n in names) and any(n.startswith("Condition.") for n in names), names)
        exported = b""
        for f in manifest["files"]:
            with open(os.path.join(folder, f["path"]), "rb") as h:
                data = h.read()
            self.assertEqual(sha256(data), f["sha256"], f["path"])
            exported += data
        # De-identified on the way in: no patient's family name reached the bucket.
        with open(patients) as f:
            families = {n["family"] for line in f for n in json.loads(line).get("name", []) if "family" in n}
        self.assertTrue(families)
        self.assertFalse([n for n in families if n.encode() in exported])

    def share_export(self, db, job, storage, work):
        r = self.veil("share", "create", "--db", db, "--export", job, "--storage", storage, "--work-dir", work)
        self.assertIn("s3-presigned", r.stderr)
        return r.stdout.strip()


if __name__ == "__main__":
    unittest.main()
