"""A tiny server that breaks the contract it publishes, to prove a schemathesis run can fail.

It serves the ranking API's own document (read from the file given) and answers every request to
/ranking/... according to `--fault`:
- `server-error`: a 500 with a JSON error body;
- `wrong-schema`: a 200 whose body lacks the required fields.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--document", required=True)
    parser.add_argument("--fault", choices=["server-error", "wrong-schema"], required=True)
    args = parser.parse_args()
    with open(args.document, "rb") as f:
        document = f.read()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/openapi.json":
                self._send(200, document)
            elif self.path == "/health":
                self._send(200, json.dumps({"status": "ok", "backend": None}).encode())
            elif args.fault == "server-error":
                self._send(500, json.dumps({"error": {"code": "boom", "message": "deliberate"}}).encode())
            else:
                self._send(200, json.dumps({"items": "not a list"}).encode())

        def log_message(self, *_args) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
