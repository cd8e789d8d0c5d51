"""`python -m tests.personalize_standin --port 0 --port-file F`: serve until interrupted."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

from .server import StandIn, make_server


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.personalize_standin",
        description="Local Amazon Personalize stand-in (control plane, runtime, events) for tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default 0)")
    parser.add_argument("--port-file", help="write the bound port here once listening (atomically)")
    parser.add_argument("--account", default="123456789012", help="account id in the ARNs (default 123456789012)")
    parser.add_argument(
        "--pending-describes",
        type=int,
        default=2,
        help="Describe calls that see a job unfinished before it reaches its outcome (default 2)",
    )
    parser.add_argument(
        "--s3-endpoint",
        default=os.environ.get("MOTO_ENDPOINT"),
        help="S3 endpoint the import jobs read from (default: $MOTO_ENDPOINT)",
    )
    args = parser.parse_args(argv)
    if args.pending_describes < 0:
        parser.error("--pending-describes must be >= 0")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if len(args.account) != 12 or not args.account.isdigit():
        parser.error("--account must be 12 digits")
    return args


def write_port_file(path: str, port: int) -> None:
    # Written whole then renamed, so a reader polling the file never sees a partial number.
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as tmp:
        tmp.write(f"{port}\n")
    os.replace(tmp.name, path)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        server = make_server(args.host, args.port, StandIn(args.account, args.pending_describes, args.s3_endpoint))
    except (OSError, ValueError) as err:
        print(f"personalize-standin: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"personalize-standin listening on http://{args.host}:{port}", flush=True)
    # SIGTERM ends the process like Ctrl-C does, so test fixtures can stop it cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
