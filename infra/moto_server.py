"""moto in server mode, serving one request at a time.

moto's TransactWriteItems backs up and restores whole tables without a lock, so concurrent
requests to a threaded moto_server can interleave a rollback with another request's writes
(seen: a cancelled start's counter increment surviving). DynamoDB itself isolates
transactions. Serving requests one at a time gives the emulator that isolation while the
tests' clients still race. Usage: python infra/moto_server.py HOST PORT
"""

import signal
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, use_reloader=False)


if __name__ == "__main__":
    main()
