#!/usr/bin/env python3
"""A webhook receiver for the system tests.

Verifies every delivery with the `standardwebhooks` package (a third party's verifier, not
Switchboard's code), checks the payload against docs/events.schema.json, and prints one
JSON line per request on stdout: the event's id, type, session and sequence, whether its
signature verified, the schema's complaints, and the status it answered. The first line is
{"port": N}.

  --port N         listen on N (default: any free port)
  --fail-first N   answer 500 to the first N requests
  --delay S        wait S seconds before answering the first --delay-count requests
  --delay-count N  (default 1)
"""

import argparse
import json
import pathlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# Every payload is checked against the documented schema too.
SCHEMA = json.loads((pathlib.Path(__file__).resolve().parents[2] / "docs" / "events.schema.json").read_text())
schema = jsonschema.Draft202012Validator(SCHEMA)

parser = argparse.ArgumentParser()
parser.add_argument("--secret", required=True)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--delay-count", type=int, default=1)
args = parser.parse_args()

webhook = Webhook(args.secret)
lock = threading.Lock()
seen = 0


def emit(record):
    with lock:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        with lock:
            seen += 1
            n = seen
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if n <= args.delay_count and args.delay:
            time.sleep(args.delay)
        status = 500 if n <= args.fail_first else 200
        record = {"attempt": n, "status": status, "id": self.headers.get("webhook-id")}
        try:
            payload = webhook.verify(body, dict(self.headers))
            record.update(
                verified=True,
                type=payload["type"],
                session_id=payload["data"]["session_id"],
                sequence=payload["data"]["sequence"],
                end_reason=payload["data"].get("end_reason"),
                schema_errors=[e.message for e in schema.iter_errors(payload)],
            )
        except (WebhookVerificationError, KeyError, ValueError) as e:
            record.update(verified=False, error=str(e))
        emit(record)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
emit({"port": server.server_address[1]})
server.serve_forever()
