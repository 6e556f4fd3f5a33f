"""The real Cumulus client takes Veil's data package.

`cumulus-library` (from PyPI) reads the `manifest.toml` Veil exported with
its own manifest parser, and `cumulus-library upload` validates and sends
`flu.zip` — allowed members only, `flu__meta_date` present, the version read
from `flu__meta_version` with pandas — through the aggregator handshake to
an HTTP server on loopback that stands in for the aggregator: a JSON
prefetch with Basic auth answered by `{url, fields}`, then a multipart POST
of the fields and the file, answered 204. The bytes that arrive must be the
zip Veil wrote. `veil upload` is held to the same stand-in: it must send
what the real client sends, retry a transient failure, and explain a
refusal or a lasting failure without printing the site's id. (The
aggregator itself is another issue.)
"""
import base64
import email.parser
import http.server
import json
import os
import subprocess
import sys
import threading
import pathlib
import unittest

from cumulus_library import study_manifest

import flu_export


class Aggregator(http.server.BaseHTTPRequestHandler):
    received = []
    # Answers to the next prefetches, then 200 for the rest.
    refusals = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        # The headers as a Message: names compared without case, as HTTP does.
        Aggregator.received.append((self.path, self.headers, body))
        if self.path != "/upload" and Aggregator.refusals:
            self.send_response(Aggregator.refusals.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/upload":
            self.send_response(204)
            self.end_headers()
            return
        reply = json.dumps({"url": f"http://127.0.0.1:{self.server.server_port}/upload",
                            "fields": {"key": "site_upload/flu/test.zip", "policy": "e30="}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("transaction-id", "0f0e0d0c")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class CumulusLibrary(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.flu = flu_export.build()

    def test_its_manifest_parser_reads_the_exported_manifest(self):
        manifest = study_manifest.StudyManifest(pathlib.Path(self.flu.folder))
        self.assertEqual(manifest.get_study_prefix(), "flu")
        exports = {(e.name, e.export_type) for e in manifest.get_export_table_list()}
        shape = json.loads(flu_export.veil("study", "show", "flu").stdout)
        self.assertEqual(exports, {(t["name"], t["kind"]) for t in shape["tables"]})

    def send(self, command, refusals=()):
        """Runs `command(url)` against the stand-in; (the run, what arrived)."""
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Aggregator)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        Aggregator.received.clear()
        Aggregator.refusals = list(refusals)
        try:
            run = subprocess.run(command(f"http://127.0.0.1:{server.server_port}/"), capture_output=True, text=True, timeout=300)
        finally:
            server.shutdown()
            server.server_close()
        return run, list(Aggregator.received)

    def cumulus_library(self, url):
        cli = os.path.join(os.path.dirname(sys.executable), "cumulus-library")
        return [cli, "upload", "--target", "flu", "--user", "site_a", "--id", "secret-site-id",
                "--url", url, "--network", "demo", self.flu.data_path]

    def veil_upload(self, url):
        return [flu_export.VEIL, "upload", "flu", "--user", "site_a", "--id", "secret-site-id",
                "--url", url, "--network", "demo", "--data-path", self.flu.data_path]

    def test_upload_validates_and_sends_the_zip(self):
        run, received = self.send(self.cumulus_library)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.check_handshake(received)

    def test_veil_upload_sends_what_cumulus_library_sends(self):
        _, theirs = self.send(self.cumulus_library)
        run, ours = self.send(self.veil_upload)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.check_handshake(ours)
        self.assertEqual(json.loads(ours[0][2]), json.loads(theirs[0][2]), "the same prefetch body")
        self.assertEqual(ours[0][1]["Authorization"], theirs[0][1]["Authorization"])

    def test_veil_upload_retries_and_explains(self):
        run, received = self.send(self.veil_upload, refusals=[503])
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertIn("answered 503; trying again", run.stderr)
        self.check_handshake(received[1:])
        for status, words in [(401, "refused the credentials"), (412, "still processing")]:
            with self.subTest(status=status):
                run, received = self.send(self.veil_upload, refusals=[status])
                self.assertNotEqual(run.returncode, 0)
                self.assertIn(words, run.stderr)
                self.assertEqual(len(received), 1, "no upload after a refusal")
                self.assertNotIn("secret-site-id", run.stdout + run.stderr)
        # An aggregator that keeps failing: three tries, then plain words.
        run, received = self.send(self.veil_upload, refusals=[500, 502, 503])
        self.assertNotEqual(run.returncode, 0)
        self.assertEqual(len(received), 3, "three tries, no upload")
        self.assertIn("the aggregator kept failing (503): try again later", run.stderr)
        # A preview contacts nobody and shows no secret.
        run, received = self.send(lambda url: self.veil_upload(url) + ["--preview"])
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(received, [])
        self.assertIn('"filename":"site_a_flu.zip"', run.stdout)
        self.assertNotIn("secret-site-id", run.stdout + run.stderr)

    def check_handshake(self, received):
        (prefetch_path, prefetch_headers, prefetch_body), (upload_path, upload_headers, upload_body) = received
        self.assertEqual(prefetch_path, "/demo")
        self.assertEqual(prefetch_headers["Authorization"], "Basic " + base64.b64encode(b"site_a:secret-site-id").decode())
        shape = json.loads(flu_export.veil("study", "show", "flu").stdout)
        self.assertEqual(json.loads(prefetch_body),
                         {"study": "flu", "data_package_version": shape["data_package_version"], "filename": "site_a_flu.zip"})
        self.assertEqual(upload_path, "/upload")
        form = email.parser.BytesParser().parsebytes(
            f"Content-Type: {upload_headers['Content-Type']}\r\n\r\n".encode() + upload_body)
        parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True) for p in form.get_payload()}
        self.assertEqual(parts["key"], b"site_upload/flu/test.zip")
        with open(os.path.join(self.flu.folder, "flu.zip"), "rb") as f:
            self.assertEqual(parts["file"], f.read())


if __name__ == "__main__":
    unittest.main()
