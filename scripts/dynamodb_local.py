"""moto_server for the local stack (DynamoDB and Secrets Manager), with each request applied
atomically and Secrets Manager's version stages kept as AWS keeps them.

DynamoDB applies every conditional write atomically; moto's server evaluates a condition and
writes the item in separate steps on concurrent threads, so two racing conditional updates can
both pass (seen here as 6 admissions with a limit of 5 when eight clients race on one key).
Serialising requests restores the guarantee the project relies on, so the concurrency tests
check this project's code rather than moto's races.

moto 5.2's UpdateSecretVersionStage moves the AWSCURRENT label but not the version that
GetSecretValue without a VersionStage returns, nor the one a later PutSecretValue demotes to
AWSPREVIOUS: after a rotation's finishSecret, a plain GetSecretValue still answered the old
value, and a put-secret-value left two versions labelled AWSCURRENT. The patch below moves
both with the label, as Secrets Manager does (scripts/test_local_secrets.py checks it).

moto keeps a reference to every model instance it ever created, for its dashboard and for
GET /moto-api/data.json, which is how the local SES's mailbox is read (scripts/mailbox.py, the
tests' mailbox helper, the fuzz hooks). Every DynamoDB write creates a new item instance, so
that list grows with every request: moto's memory grows without bound and each data.json read,
which serialises them all inside the lock below, stalled every table for seconds late in an
end-to-end run (store timeouts, 503s). DynamoDB items are therefore not tracked; data.json
still lists the tables, the secrets and every sent mail.
Usage: dynamodb_local.py HOST PORT
"""

import sys
import threading

from moto.dynamodb.models.dynamo_type import Item
from moto.secretsmanager.models import SecretsManagerBackend
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_lock = threading.Lock()
_app = DomainDispatcherApplication(create_backend_app)
_update_secret_version_stage = SecretsManagerBackend.update_secret_version_stage


def update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
    result = _update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
    if version_stage == "AWSCURRENT" and move_to_version_id:
        self.secrets[secret_id].set_default_version_id(move_to_version_id)
    return result


SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage


class _Untracked(list):
    """An instance list that keeps nothing."""

    def append(self, _instance):
        pass


Item.instances_tracked = _Untracked()


def serialised(environ, start_response):
    with _lock:
        # Consume the whole response inside the lock: moto builds it lazily.
        return list(_app(environ, start_response))


if __name__ == "__main__":
    run_simple(
        sys.argv[1],
        int(sys.argv[2]),
        serialised,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
