"""SMART Backend Services with keys Veil did not make: P-384 and RSA keys
made by Python's `cryptography`, assertions signed by PyJWT, sent to a
listening `veil serve`; and `veil client token` reading keys in the forms
`cryptography` writes (PKCS#8 and traditional PEM, private JWKs). Checks
that none of the tokens, assertions or keys reaches the server's log."""
import json
import os
import shutil
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from flu_export import listen, veil

CLIENT_ID = "python-client"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def public_jwk(private_key, kid):
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
    jwk["kid"] = kid
    return jwk


def private_jwk(private_key, kid):
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(private_key))
    jwk["kid"] = kid
    return jwk


def http(method, url, token=None, form=None):
    """(status, headers, body text), errors included."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if form is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


class SmartInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="veil-smart-")
        cls.db = "sqlite:" + os.path.join(cls.tmp, "veil.db")
        lines = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female"} for i in range(3)]
        lines += [{"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": f"Patient/p{i}"}} for i in range(3)]
        data = os.path.join(cls.tmp, "data.ndjson")
        with open(data, "w") as f:
            f.write("\n".join(json.dumps(l) for l in lines) + "\n")
        veil("load", "--db", cls.db, data)

        cls.ec_key = ec.generate_private_key(ec.SECP384R1())
        cls.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks = {"keys": [public_jwk(cls.ec_key, "py-ec"), public_jwk(cls.rsa_key, "py-rsa")]}
        jwks_file = os.path.join(cls.tmp, "jwks.json")
        with open(jwks_file, "w") as f:
            json.dump(jwks, f)
        veil("client", "add", "--db", cls.db, "--name", "Python", "--jwks", jwks_file, "--scope", "system/*.read", "--id", CLIENT_ID)

        cls.log_path = os.path.join(cls.tmp, "serve.log")
        cls.log = open(cls.log_path, "w")
        cls.server, cls.base = listen("serve", "--db", cls.db, "--storage", os.path.join(cls.tmp, "storage"), log=cls.log)
        cls.token_url = f"{cls.base}/auth/token"

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait()
        cls.log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def assertion(self, key, alg, kid, **claims):
        now = int(time.time())
        body = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": self.token_url, "exp": now + 240, "jti": str(uuid.uuid4())}
        body.update(claims)
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})

    def token_request(self, assertion, scope="system/*.read"):
        form = {"grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion, "scope": scope}
        status, headers, body = http("POST", self.token_url, form=form)
        return status, headers, json.loads(body)

    def export(self, token):
        """Kick-off, status and every file, with `token`; the manifest."""
        status, headers, _ = http("GET", f"{self.base}/$export?_type=Patient", token)
        self.assertEqual(status, 202)
        location = headers["Content-Location"]
        for _ in range(120):
            time.sleep(1.05)
            status, _, body = http("GET", location, token)
            if status == 200:
                manifest = json.loads(body)
                break
            self.assertEqual(status, 202)
        self.assertTrue(manifest["requiresAccessToken"])
        for item in manifest["output"]:
            status, _, text = http("GET", item["url"], token)
            self.assertEqual(status, 200)
            self.assertEqual(len(text.splitlines()), item["count"])
        return manifest

    def test_discovery_names_the_token_endpoint_and_algorithms(self):
        status, _, body = http("GET", f"{self.base}/.well-known/smart-configuration")
        self.assertEqual(status, 200)
        config = json.loads(body)
        self.assertEqual(config["token_endpoint"], self.token_url)
        self.assertIn("ES384", config["token_endpoint_auth_signing_alg_values_supported"])
        self.assertIn("RS384", config["token_endpoint_auth_signing_alg_values_supported"])

    def test_pyjwt_assertions_get_tokens_that_open_the_export(self):
        for key, alg, kid in [(self.ec_key, "ES384", "py-ec"), (self.rsa_key, "RS384", "py-rsa")]:
            with self.subTest(alg=alg):
                status, headers, body = self.token_request(self.assertion(key, alg, kid))
                self.assertEqual(status, 200, body)
                self.assertEqual(headers["Cache-Control"], "no-store")
                self.assertEqual(body["token_type"], "bearer")
                self.assertLessEqual(body["expires_in"], 300)
                self.assertEqual(body["scope"], "system/*.read")
                manifest = self.export(body["access_token"])
                self.assertEqual(sum(o["count"] for o in manifest["output"]), 3)

    def test_refusals_are_oauth_errors(self):
        replayed = self.assertion(self.ec_key, "ES384", "py-ec")
        self.assertEqual(self.token_request(replayed)[0], 200)
        stranger = ec.generate_private_key(ec.SECP384R1())
        cases = {
            "replayed jti": replayed,
            "a key the client did not register": self.assertion(stranger, "ES384", "py-ec"),
            "RS256": self.assertion(self.rsa_key, "RS256", "py-rsa"),
            "expired": self.assertion(self.ec_key, "ES384", "py-ec", exp=int(time.time()) - 120),
            "wrong audience": self.assertion(self.ec_key, "ES384", "py-ec", aud=self.base + "/token"),
        }
        for what, assertion in cases.items():
            with self.subTest(what):
                status, _, body = self.token_request(assertion)
                self.assertEqual(status, 400)
                self.assertEqual(body["error"], "invalid_client")
        status, _, body = self.token_request(self.assertion(self.ec_key, "ES384", "py-ec"), scope="patient/*.read")
        self.assertEqual((status, body["error"]), (400, "invalid_scope"))

    def test_veil_client_token_reads_keys_cryptography_wrote(self):
        none = serialization.NoEncryption()
        pem = serialization.Encoding.PEM
        forms = {
            "EC, PKCS#8 PEM": (self.ec_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none).decode(), "py-ec"),
            "EC, traditional PEM": (self.ec_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none).decode(), "py-ec"),
            "RSA, PKCS#8 PEM": (self.rsa_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none).decode(), "py-rsa"),
            "RSA, traditional PEM": (self.rsa_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none).decode(), "py-rsa"),
            "EC, private JWK": (json.dumps(private_jwk(self.ec_key, "py-ec")), None),
            "RSA, private JWK": (json.dumps(private_jwk(self.rsa_key, "py-rsa")), None),
        }
        for what, (text, kid) in forms.items():
            with self.subTest(what):
                path = os.path.join(self.tmp, "key-" + what.replace(" ", "").replace(",", "").replace("#", ""))
                with open(path, "w") as f:
                    f.write(text)
                args = ["client", "token", "--fhir-url", self.base, "--client-id", CLIENT_ID, "--key", path]
                if kid:
                    args += ["--kid", kid]
                token = veil(*args).stdout.strip()
                status, _, _ = http("GET", f"{self.base}/Patient?_count=1", token)
                self.assertEqual(status, 200)

    def test_the_log_holds_no_token_assertion_or_key(self):
        assertion = self.assertion(self.rsa_key, "RS384", "py-rsa")
        status, _, body = self.token_request(assertion)
        self.assertEqual(status, 200)
        token = body["access_token"]
        self.export(token)
        time.sleep(0.2)
        with open(self.log_path) as f:
            log = f.read()
        self.assertIn("POST /auth/token 200", log)
        self.assertIn("GET /_export/{job}/{file} 200 client=" + CLIENT_ID, log)
        key_pem = self.rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
        secrets = {
            "token": token, "token's signature": token.rsplit(".", 1)[1],
            "assertion": assertion, "assertion's signature": assertion.rsplit(".", 1)[1],
            "private key": key_pem.splitlines()[1],
        }
        for what, secret in secrets.items():
            self.assertNotIn(secret, log, what)


if __name__ == "__main__":
    unittest.main()
