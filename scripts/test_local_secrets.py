"""The local stack's Secrets Manager: moto_server as scripts/dynamodb_local.py serves it, and the
secrets scripts/create_secrets.py makes from template.yaml.

    .venv/bin/python -m unittest scripts/test_local_secrets.py        (from the repository root)

The functions and the key rotation function are tested against this server, so it must keep
version stages as Secrets Manager does through the four rotation steps (createSecret puts an
AWSPENDING version, finishSecret moves AWSCURRENT to it and AWSPREVIOUS to the old one) and
through a plain put-secret-value, which is how the Stripe and AI secrets are rotated.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_REGION": "us-east-1"}


class LocalSecretsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cls.endpoint = f"http://127.0.0.1:{port}"
        cls.server = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/dynamodb_local.py"), "127.0.0.1", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{cls.endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    cls.server.kill()
                    raise
                time.sleep(0.2)
        cls.sm = boto3.client(
            "secretsmanager", endpoint_url=cls.endpoint, region_name="us-east-1",
            aws_access_key_id="local", aws_secret_access_key="local",
        )

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(10)

    def stages(self, name):
        return {v: sorted(s) for v, s in self.sm.describe_secret(SecretId=name)["VersionIdsToStages"].items() if s}

    def value(self, name, stage=None):
        args = {"VersionStage": stage} if stage else {}
        return self.sm.get_secret_value(SecretId=name, **args)["SecretString"]

    def rotate(self, name, token, value):
        """createSecret then finishSecret, as a rotation function calls them."""
        current = next(v for v, s in self.stages(name).items() if "AWSCURRENT" in s)
        self.sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString=value, VersionStages=["AWSPENDING"])
        self.assertEqual(self.value(name, "AWSPENDING"), value)
        self.assertNotEqual(self.value(name, "AWSCURRENT"), value, "a pending key must not sign before finishSecret")
        self.sm.update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current)

    def test_rotation_steps_move_current_and_previous_as_secrets_manager_does(self):
        name = "flowbotz/test/rotated-key"
        self.sm.create_secret(Name=name, SecretString="key-1")
        with self.assertRaises(self.sm.exceptions.ResourceNotFoundException):
            self.value(name, "AWSPREVIOUS")
        self.rotate(name, "2" * 36, "key-2")
        self.assertEqual((self.value(name), self.value(name, "AWSCURRENT"), self.value(name, "AWSPREVIOUS")), ("key-2", "key-2", "key-1"))
        self.rotate(name, "3" * 36, "key-3")
        self.assertEqual((self.value(name), self.value(name, "AWSPREVIOUS")), ("key-3", "key-2"))
        labelled = {self.sm.get_secret_value(SecretId=name, VersionId=v)["SecretString"] for v in self.stages(name)}
        self.assertNotIn("key-1", labelled, "a key two rotations old keeps no stage, so it verifies nothing")

    def test_put_secret_value_after_a_rotation_leaves_one_current(self):
        name = "flowbotz/test/put-after-rotation"
        self.sm.create_secret(Name=name, SecretString="key-1")
        self.rotate(name, "4" * 36, "key-2")
        self.sm.put_secret_value(SecretId=name, SecretString="key-3")
        current = [v for v, s in self.stages(name).items() if "AWSCURRENT" in s]
        self.assertEqual(len(current), 1, self.stages(name))
        self.assertEqual((self.value(name), self.value(name, "AWSCURRENT"), self.value(name, "AWSPREVIOUS")), ("key-3", "key-3", "key-2"))

    def test_random_keys_like_the_templates(self):
        key = self.sm.get_random_password(PasswordLength=64, ExcludePunctuation=True)["RandomPassword"]
        self.assertEqual(len(key), 64)
        self.assertTrue(key.isalnum(), key)

    def test_create_secrets_makes_the_templates_secrets_from_local_values(self):
        with tempfile.TemporaryDirectory() as tmp:
            values = Path(tmp) / "values.env"
            values.write_text("# comment\nJWT_SECRET_KEY=dev-only-jwt\nCSRF_SECRET_KEY=dev-only-csrf\nSTRIPE_WEBHOOK_SECRET=whsec_a,whsec_b\n")
            stripe = Path(tmp) / "stripe.env"
            stripe.write_text("STRIPE_SECRET_KEY=sk_test_local_standin\n")
            env = dict(os.environ, **CREDENTIALS, ENVIRONMENT="unittest", AWS_ENDPOINT_URL_SECRETS_MANAGER=self.endpoint)

            def run():
                out = subprocess.run(
                    [sys.executable, str(ROOT / "scripts/create_secrets.py"), str(ROOT / "template.yaml"), str(values), str(stripe)],
                    env=env, capture_output=True, text=True, check=True,
                )
                return dict(line.split("=", 1) for line in out.stdout.splitlines())

            ids = run()
            self.assertEqual(ids, {
                "JWT_SECRET_KEY_ID": "flowbotz/unittest/jwt-secret-key",
                "CSRF_SECRET_KEY_ID": "flowbotz/unittest/csrf-secret-key",
                "STRIPE_SECRET_KEY_ID": "flowbotz/unittest/stripe-secret-key",
                "STRIPE_WEBHOOK_SECRET_ID": "flowbotz/unittest/stripe-webhook-secret",
            }, "every *_ID of the template with a local value, and no AI key")
            self.assertEqual(self.value(ids["JWT_SECRET_KEY_ID"]), "dev-only-jwt")
            self.assertEqual(self.value(ids["STRIPE_WEBHOOK_SECRET_ID"]), "whsec_a,whsec_b")
            self.assertEqual(self.value(ids["STRIPE_SECRET_KEY_ID"]), "sk_test_local_standin")
            with self.assertRaises(self.sm.exceptions.ResourceNotFoundException):
                self.value("flowbotz/unittest/ai-api-key")
            values.write_text("JWT_SECRET_KEY=dev-only-jwt-2\nCSRF_SECRET_KEY=dev-only-csrf\nSTRIPE_WEBHOOK_SECRET=whsec_a\n")
            self.assertEqual(run(), ids)
            self.assertEqual((self.value(ids["JWT_SECRET_KEY_ID"]), self.value(ids["JWT_SECRET_KEY_ID"], "AWSPREVIOUS")), ("dev-only-jwt-2", "dev-only-jwt"))


if __name__ == "__main__":
    unittest.main()
