"""moto_server for the local stack, with each request applied atomically.

DynamoDB applies every conditional write atomically; moto's server evaluates a condition and
writes the item in separate steps on concurrent threads, so two racing conditional updates can
both pass (seen here as 6 admissions with a limit of 5 when eight clients race on one key).
Serialising requests restores the guarantee the project relies on, so the concurrency tests
check this project's code rather than moto's races. Usage: dynamodb_local.py HOST PORT
"""

import sys
import threading

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_lock = threading.Lock()
_app = DomainDispatcherApplication(create_backend_app)


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
