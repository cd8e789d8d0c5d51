"""`python -m tests.ddb_export_standin --dynamodb-endpoint URL --s3-endpoint URL [--port 0]`: serve until
interrupted. The first line on stdout is `listening on http://127.0.0.1:PORT`, for harnesses to read."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from .server import StandIn, make_server


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.ddb_export_standin",
        description="DynamoDB in front of moto, with ExportTableToPointInTime/DescribeExport/ListExports.",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one (default 0)")
    parser.add_argument("--dynamodb-endpoint", required=True, help="the moto that plays DynamoDB")
    parser.add_argument("--s3-endpoint", required=True, help="the S3 (moto, path-style) exports are written to")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        server = make_server(args.port, StandIn(args.dynamodb_endpoint, args.s3_endpoint))
    except (OSError, ValueError) as err:
        print(f"ddb-export-standin: cannot start: {err}", file=sys.stderr)
        return 2
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    # SIGTERM ends it like Ctrl-C, so a fixture's terminate() stops it cleanly.
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
