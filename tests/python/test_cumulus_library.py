"""The real Cumulus client takes Veil's data package.

`cumulus-library` (from PyPI) reads the `manifest.toml` Veil exported with
its own manifest parser, and `cumulus-library upload` validates and sends
`flu.zip` — allowed members only, `flu__meta_date` present, the version read
from `flu__meta_version` with pandas — through the aggregator handshake to
an HTTP server on loopback that stands in for the aggregator: a JSON
prefetch with Basic auth answered by `{url, fields}`, then a multipart POST
of the fields and the file, answered 204. The bytes that arrive must be the
zip Veil wrote. (The aggregator itself is another issue.)
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

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Aggregator.received.append((self.path, dict(self.headers), body))
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

    def test_upload_validates_and_sends_the_zip(self):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Aggregator)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        Aggregator.received.clear()
        try:
            cli = os.path.join(os.path.dirname(sys.executable), "cumulus-library")
            run = subprocess.run(
                [cli, "upload", "--target", "flu", "--user", "site_a", "--id", "secret-site-id",
                 "--url", f"http://127.0.0.1:{server.server_port}/", "--network", "demo", self.flu.data_path],
                capture_output=True, text=True, timeout=300,
            )
        finally:
            server.shutdown()
            server.server_close()
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        (prefetch_path, prefetch_headers, prefetch_body), (upload_path, upload_headers, upload_body) = Aggregator.received
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
