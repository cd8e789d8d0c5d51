"""Reading an import job's CSV from S3 (moto), with the checks Personalize makes before it imports."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass, field

from .recommender import Event

HEADERS = (
    ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE"],
    ["USER_ID", "ITEM_ID", "TIMESTAMP", "EVENT_TYPE", "EVENT_VALUE"],
)
MIN_RECORDS_PER_IMPORT = 1000
MAX_ID_LENGTH = 256
# Each failure reason quotes at most this many bad rows; the count says how many there were.
QUOTED_BAD_ROWS = 3


class ImportFailed(Exception):
    """The import job ends in CREATE FAILED with this message as its failureReason."""


@dataclass
class ImportedData:
    events: list[Event] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def parse_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ImportFailed(f"Invalid S3 location {url!r}: it must start with s3://")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise ImportFailed(f"Invalid S3 location {url!r}: no bucket name")
    return bucket, key


def s3_client(endpoint: str | None, region: str):
    if not endpoint:
        raise ImportFailed(
            "The Personalize stand-in has no S3 endpoint: start it with MOTO_ENDPOINT (or --s3-endpoint) set"
        )
    return _cached_s3_client(endpoint, region)


@functools.lru_cache(maxsize=8)
def _cached_s3_client(endpoint: str, region: str):
    # Making a boto3 client costs ~100 ms; clients are thread-safe, so one per endpoint is reused.
    if not endpoint:
        raise ImportFailed(
            "The Personalize stand-in has no S3 endpoint: start it with MOTO_ENDPOINT (or --s3-endpoint) set"
        )
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="standin",
        aws_secret_access_key="standin",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def read_import(data_location: str, endpoint: str | None, region: str) -> ImportedData:
    """All records at `data_location` (one object, or every .csv under a prefix), or ImportFailed."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_url(data_location)
    client = s3_client(endpoint, region)
    try:
        keys = _object_keys(client, bucket, key)
        if not keys:
            raise ImportFailed(f"Input data not found: no CSV file at {data_location}")
        imported = ImportedData()
        for object_key in keys:
            body = client.get_object(Bucket=bucket, Key=object_key)["Body"].read()
            location = f"s3://{bucket}/{object_key}"
            imported.events.extend(parse_csv(body, location))
            imported.files.append(location)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "Unknown")
        raise ImportFailed(f"Failed to read {data_location}: {code}: {err}") from err
    except BotoCoreError as err:
        raise ImportFailed(f"Failed to read {data_location}: {err}") from err
    if len(imported.events) < MIN_RECORDS_PER_IMPORT:
        raise ImportFailed(
            f"Insufficient data: the import has {len(imported.events)} interaction records; a dataset "
            f"import job needs at least {MIN_RECORDS_PER_IMPORT}."
        )
    return imported


def _object_keys(client, bucket: str, key: str) -> list[str]:
    from botocore.exceptions import ClientError

    if key and not key.endswith("/"):
        try:
            client.head_object(Bucket=bucket, Key=key)
            return [key]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        keys.extend(obj["Key"] for obj in page.get("Contents", []) if obj["Key"].endswith(".csv"))
    return sorted(keys)


def parse_csv(body: bytes, location: str) -> list[Event]:
    """Personalize's bulk CSV: UTF-8, a header of the schema's columns, one record per line."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ImportFailed(f"{location} is not valid UTF-8 (byte offset {err.start})") from err
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFailed(f"{location} is empty: the first row must be the header") from None
    except csv.Error as err:
        raise ImportFailed(f"{location} line 1: malformed CSV header: {err}") from err
    if header not in HEADERS:
        raise ImportFailed(
            f"{location}: the header {','.join(header)!r} does not match the dataset schema; expected "
            f"'USER_ID,ITEM_ID,TIMESTAMP,EVENT_TYPE' optionally followed by ',EVENT_VALUE'"
        )
    width = len(header)
    events: list[Event] = []
    bad: list[str] = []
    bad_count = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ImportFailed(f"{location} line {reader.line_num}: malformed CSV: {err}") from err
        if not row:
            continue  # a blank line, as a trailing newline leaves
        problem = _row_problem(row, width)
        if problem:
            bad_count += 1
            if len(bad) < QUOTED_BAD_ROWS:
                bad.append(f"line {reader.line_num}: {problem}")
            continue
        events.append(Event(row[0], row[1], int(row[2]), row[3]))
    if bad_count:
        raise ImportFailed(f"{location}: {bad_count} invalid record(s), e.g. " + "; ".join(bad))
    return events


def _row_problem(row: list[str], width: int) -> str | None:
    if len(row) != width:
        return f"{len(row)} fields, the header has {width}"
    user_id, item_id, timestamp, event_type = row[:4]
    for name, value in (("USER_ID", user_id), ("ITEM_ID", item_id)):
        if not value:
            return f"{name} is empty"
        if len(value) > MAX_ID_LENGTH:
            return f"{name} is {len(value)} characters long; the maximum is {MAX_ID_LENGTH}"
    if not timestamp.isdigit():
        return f"TIMESTAMP {timestamp!r} is not a Unix epoch time in seconds"
    if len(timestamp) > 11:
        # Epoch milliseconds look like seconds in the year 50000: the usual mistake, named as such.
        return f"TIMESTAMP {timestamp} is not in seconds (milliseconds?)"
    if not event_type:
        return "EVENT_TYPE is empty"
    if width == 5 and row[4]:
        try:
            float(row[4])
        except ValueError:
            return f"EVENT_VALUE {row[4]!r} is not a number"
    return None
