"""SMART's bulk-data-client, the reference Bulk Data client, against a
listening `veil serve` with authorization on.

The client is vendored at a pinned commit of its public source
(tests/interop/bulk-data-client, with its licence; it is not on npm), and
scripts/test installs its dependencies from npm. It is configured as its
README suggests, with no token URL: it finds the token endpoint itself,
racing `.well-known/smart-configuration` against the CapabilityStatement's
`rest.security`, and signs its assertions with its own ES384 key. It
exports the Synthea sample at system, Patient and Group level, plain and
with Azure's `_anonymizationConfig`; the resources it downloads, counted
per type, must be what the store holds for that level, read from the
store's own tables with SQLite."""
import collections
import glob
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import unittest

from cryptography.hazmat.primitives.asymmetric import ec

from flu_export import ROOT, listen, veil
from test_hostile import OneServer
from test_smart import private_jwk, public_jwk


def client_dir():
    path = os.environ.get("VEIL_BULK_DATA_CLIENT", os.path.join(ROOT, "target", "tools", "bulk-data-client"))
    if not os.path.isdir(os.path.join(path, "node_modules")):
        raise unittest.SkipTest(f"bulk-data-client is not installed in {path}: scripts/test installs it")
    return path


class BulkDataClient(OneServer):
    @classmethod
    def setUpClass(cls):
        cls.client = client_dir()
        cls.tmp = tempfile.mkdtemp(prefix="veil-bulk-data-client-")
        cls.db_path = os.path.join(cls.tmp, "veil.db")
        db = f"sqlite:{cls.db_path}"
        veil("load", "--db", db, os.path.join(ROOT, "data", "synthea-r4-100.tar.gz"))
        key = ec.generate_private_key(ec.SECP384R1())
        jwks = os.path.join(cls.tmp, "client.jwks.json")
        with open(jwks, "w") as f:
            json.dump({"keys": [dict(public_jwk(key, "bdc-1"), alg="ES384")]}, f)
        client_id = veil("client", "add", "--db", db, "--name", "bulk-data-client", "--jwks", jwks,
                         "--scope", "system/*.rs").stdout.strip()
        storage = os.path.join(cls.tmp, "storage")
        os.makedirs(os.path.join(storage, "anonymization"))
        shutil.copy(os.path.join(ROOT, "crates", "deid", "policies", "safe-harbor.json"),
                    os.path.join(storage, "anonymization"))
        cls.log = open(os.path.join(cls.tmp, "serve.log"), "w+")
        cls.server, cls.url = listen("serve", "--db", db, "--storage", storage, log=cls.log)
        cls.config = os.path.join(cls.tmp, "config.js")
        with open(cls.config, "w") as f:
            # As the client's README has it: no tokenUrl, so that it finds the endpoint.
            f.write("module.exports = " + json.dumps({
                "fhirUrl": cls.url, "tokenUrl": "", "clientId": client_id,
                "privateKey": dict(private_jwk(key, "bdc-1"), alg="ES384"),
                "reporter": "text", "log": {"enabled": False},
            }) + ";\n")
        with sqlite3.connect(cls.db_path) as store:
            cls.group = store.execute("SELECT id FROM resources WHERE type = 'Group' AND body IS NOT NULL").fetchone()[0]

    def store_counts(self, patients_of_group=None, compartment=False):
        """Resources per type in the store: all of them, those in any
        patient's compartment, or those in the group's members'."""
        with sqlite3.connect(self.db_path) as store:
            if not compartment:
                rows = store.execute("SELECT type, count(*) FROM resources WHERE body IS NOT NULL GROUP BY type")
            else:
                members = "AND c.patient IN (SELECT patient FROM group_members WHERE group_id = ?)" if patients_of_group else ""
                rows = store.execute(
                    "SELECT r.type, count(DISTINCT r.id) FROM compartment c JOIN resources r ON r.type = c.type AND r.id = c.id"
                    f" WHERE r.body IS NOT NULL {members} GROUP BY r.type", (patients_of_group,) if patients_of_group else ())
            return dict(rows.fetchall())

    def export(self, *args):
        """Runs the client; the resources it downloaded, per type."""
        destination = tempfile.mkdtemp(dir=self.tmp)
        run = subprocess.run(["node", "built/app.js", "--config", self.config, "-d", destination, *args],
                             cwd=self.client, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, SHOW_ERRORS="y"))
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
        self.assertIn("Download completed", run.stdout)
        counts = collections.Counter()
        for path in glob.glob(os.path.join(destination, "*.ndjson")):
            match = re.fullmatch(r"\d+\.([A-Za-z]+)\.ndjson", os.path.basename(path))
            self.assertTrue(match, path)
            with open(path) as f:
                lines = [json.loads(l) for l in f if l.strip()]
            self.assertTrue(all(r["resourceType"] == match.group(1) for r in lines), path)
            counts[match.group(1)] += len(lines)
        return dict(counts), destination

    def test_discovery_finds_the_token_endpoint_both_ways(self):
        """Each of the client's two ways, alone: the smart-configuration and
        the CapabilityStatement's oauth-uris extension. (The client's
        cached fetch of the smart-configuration does not settle here, on
        Node 20, against Veil or a plain Python server alike; uncached it
        does. So its race is won by the CapabilityStatement, which before
        it named the endpoint gave an empty one: the 401s users saw.)"""
        script = ("const u = require('./built/lib/utils');"
                  "Promise.all([u.getWellKnownSmartConfig(process.argv[1], true).then(r => r.body.token_endpoint),"
                  " u.getTokenEndpointFromCapabilityStatement(process.argv[1])])"
                  ".then(r => console.log(JSON.stringify(r)), e => { console.error(String(e)); process.exit(1); })")
        run = subprocess.run(["node", "-e", script, self.url + "/"], cwd=self.client, capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout), [self.url + "/auth/token"] * 2)

    def test_system_level(self):
        counts, _ = self.export("--global")
        self.assertEqual(counts, self.store_counts())

    def test_patient_level(self):
        counts, _ = self.export()
        self.assertEqual(counts, self.store_counts(compartment=True))

    def test_group_level(self):
        counts, _ = self.export("--group", self.group)
        expected = self.store_counts(patients_of_group=self.group, compartment=True)
        self.assertGreater(expected.get("Patient", 0), 0)
        self.assertEqual(counts, expected)

    def test_each_level_de_identified(self):
        """With Azure's _anonymizationConfig, passed as a custom kick-off
        parameter: the same counts, and no resource keeps a name."""
        for args, expected in [
            (["--global"], self.store_counts()),
            ([], self.store_counts(compartment=True)),
            (["--group", self.group], self.store_counts(patients_of_group=self.group, compartment=True)),
        ]:
            counts, destination = self.export(*args, "--custom", "_anonymizationConfig=safe-harbor.json")
            self.assertEqual(counts, expected, args)
            with open(glob.glob(os.path.join(destination, "*.Patient.ndjson"))[0]) as f:
                patients = [json.loads(l) for l in f if l.strip()]
            self.assertTrue(patients and not any("name" in p for p in patients), args)


if __name__ == "__main__":
    unittest.main()
