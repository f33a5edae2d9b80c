"""A webhook receiver for the webhooks tests: verifies every delivery with the PyPI
`standardwebhooks` library (a verifier nobody in this project wrote), records what came,
and answers as the test tells it.

    webhook-python webhook_receiver.py --port P --control control.json --record got.jsonl

control.json maps a path to {"secret": "whsec_...", "mode": "ok" | "fail" | "hang"}; it is
read again for every request, so a test may change it while the receiver runs (write it to a
temporary file and rename it over). Each request appends one JSON line to the record:
path, webhook id, whether the signature verified (and why not), the body's type and data.
"""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

LOCK = threading.Lock()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            try:
                with open(args.control) as f:
                    control = json.load(f).get(self.path, {})
            except (OSError, ValueError):
                control = {}
            entry = {
                "path": self.path,
                "webhook_id": self.headers.get("webhook-id"),
                "at": time.time(),
                "verified": False,
            }
            secret = control.get("secret")
            if secret:
                try:
                    payload = Webhook(secret).verify(body, dict(self.headers.items()))
                    entry["verified"] = True
                    entry["type"] = payload.get("type")
                    entry["data"] = payload.get("data")
                except Exception as e:  # the reason goes in the record, for the test's message
                    entry["error"] = f"{type(e).__name__}: {e}"
            else:
                entry["error"] = "no secret for this path"
            with LOCK:
                with open(args.record, "a") as f:
                    f.write(json.dumps(entry) + "\n")
            mode = control.get("mode", "ok")
            if mode == "hang":
                time.sleep(3600)
                return
            if mode == "fail" or not entry["verified"]:
                self.send_response(500)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"failing on purpose")
                return
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
