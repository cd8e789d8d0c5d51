"""A local Amazon Personalize stand-in for end-to-end tests: `python -m tests.personalize_standin`.

It speaks the control plane (awsJson1_1), runtime and events (restJson1) wire protocols, checks every
request and its own responses against the service models of the installed botocore, and keeps state in
memory. See README.md beside this file.
"""

from .server import StandIn, make_server

__all__ = ["StandIn", "make_server", "start"]


def start(port: int = 0, *, account: str = "123456789012", pending_describes: int = 2, s3_endpoint: str | None = None):
    """Start a stand-in in a background thread; returns (server, base_url). Call server.shutdown() to stop."""
    import threading

    server = make_server("127.0.0.1", port, StandIn(account, pending_describes, s3_endpoint))
    threading.Thread(target=server.serve_forever, name="personalize-standin", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
