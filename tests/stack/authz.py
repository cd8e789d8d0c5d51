"""The IAM authorization checks an AWS SDK HTTP request implies, for the stack harness.

The harness's recording proxy sees every request a function's Lambda binary sends (DynamoDB, S3, SES v2,
EventBridge, Lambda, Personalize and Personalize Runtime), attributes it to the function by the SigV4
access key id, and asks `iam.evaluate` whether the function's role, as infra/template.yaml deploys it,
allows each check listed here. moto and the Personalize stand-in enforce no IAM, so this is where a grant
missing from the template (or a call the code makes that nobody granted) shows up before a deployment.

`checks` follows the IAM Service Authorization Reference: which action an operation needs, on which
resource ARN, with which service condition keys. A request that implies several checks (a batch over two
tables, a copy that reads one object and writes another, a call that passes a role) yields several, and
IAM allows the request only if every one of them is allowed. Anything this module does not recognise
raises `UnknownRequest`: the harness must fail loudly rather than let an unchecked request through, so
an operation is only added here once its mapping is known.

Only the request is used (method, path, query, headers, body), never the response, and nothing outside
the standard library: the proxy imports this in its own process.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any
from urllib.parse import parse_qsl, unquote

__all__ = ["Check", "UnknownRequest", "checks", "sigv4_access_key", "sigv4_service"]


@dataclass(frozen=True)
class Check:
    """One authorization IAM makes for a request: `action` on `resource` with `context` as the request's
    (service-specific) condition keys. `operation` names the API call, for reports."""

    action: str
    resource: str
    context: dict[str, str | list[str]] = field(default_factory=dict)
    operation: str = ""

    def __hash__(self) -> int:  # the context is a dict: hash its canonical JSON, so checks go in sets
        return hash((self.action, self.resource, json.dumps(self.context, sort_keys=True), self.operation))


class UnknownRequest(ValueError):
    """A request this module cannot map to IAM checks. Never guess: an unmapped request is a gap in the
    harness, and letting it through unchecked would hide exactly the mistakes the harness looks for."""


# --- SigV4 -----------------------------------------------------------------------------------------

_CREDENTIAL = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[^/\s,]+)/"
    r"(?P<service>[^/\s,]+)/aws4_request\b"
)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Header lookup, case-insensitive (HTTP header names are; a plain dict is not)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _credential(headers: Mapping[str, str]) -> re.Match[str] | None:
    authorization = _header(headers, "Authorization")
    return _CREDENTIAL.match(authorization.strip()) if authorization else None


def sigv4_service(headers: Mapping[str, str]) -> str | None:
    """The signing service from `Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/region/service/...`
    ("dynamodb", "s3", "ses", "events", "lambda", "personalize"), or None for an unsigned request."""
    match = _credential(headers)
    return match["service"] if match else None


def sigv4_access_key(headers: Mapping[str, str]) -> str | None:
    """The access key id the request was signed with (the harness gives each function its own)."""
    match = _credential(headers)
    return match["key"] if match else None


# --- entry point -----------------------------------------------------------------------------------


def checks(
    service: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    region: str,
    account: str,
    ses_identities: Collection[str] | None = None,
) -> list[Check]:
    """The IAM checks the request implies, in a stable order; raises `UnknownRequest` when it is not one
    this module knows. `path` is the raw (percent-encoded) request path, `query` the raw query string
    without `?`, `service` the SigV4 signing service (see `sigv4_service`).

    `ses_identities` are the SES identities (addresses or domains) verified in the account. SES checks
    SendEmail against the identity it sends as: the address when the address itself is verified, else its
    domain (or a parent domain). Without the list the check is on the address identity."""
    handler = _SERVICES.get(service)
    if handler is None:
        raise UnknownRequest(f"no IAM mapping for signing service {service!r} ({method} {path})")
    request = _Request(service, method.upper(), path, query, headers, body, region, account, ses_identities)
    result = handler(request)
    if not result:
        raise UnknownRequest(f"{service}: {method} {path} maps to no check")
    return result


@dataclass(frozen=True)
class _Request:
    service: str
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    region: str
    account: str
    ses_identities: Collection[str] | None

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            document = json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as e:
            raise UnknownRequest(f"{self.service}: the body is not JSON: {e}") from e
        if not isinstance(document, dict):
            raise UnknownRequest(f"{self.service}: the body is not a JSON object")
        return document

    def target(self, prefix: str) -> str | None:
        """The operation named by `X-Amz-Target: <prefix>.<Operation>` (the JSON protocols)."""
        target = _header(self.headers, "X-Amz-Target")
        if target is None:
            return None
        if not target.startswith(prefix + "."):
            raise UnknownRequest(f"{self.service}: X-Amz-Target {target!r} is not a {prefix} operation")
        return target[len(prefix) + 1 :]

    def require_post_root(self, operation: str) -> None:
        if self.method != "POST" or self.path.split("?")[0] not in ("/", ""):
            raise UnknownRequest(f"{self.service}: {operation} arrives as POST /, not {self.method} {self.path}")


def _required(document: Mapping[str, Any], key: str, operation: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise UnknownRequest(f"{operation}: the request has no {key}")
    return value


# --- DynamoDB (awsJson1_0, X-Amz-Target: DynamoDB_20120810.<Op>) ------------------------------------

# Operations on one table, named by TableName; Query and Scan act on the index when they name one.
_DYNAMODB_TABLE_OPS = {
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable",
    "DescribeTimeToLive", "DescribeContinuousBackups", "CreateTable", "DeleteTable", "UpdateTable",
}  # fmt: skip

# TransactWriteItems is not an IAM action: each item is checked as the single-item call it stands for.
_DYNAMODB_TRANSACT_WRITE = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


def _dynamodb_table_arn(request: _Request, table: str) -> str:
    """TableName may be a name or (since 2024) the table's ARN."""
    return table if table.startswith("arn:") else request.arn("dynamodb", f"table/{table}")


def _dynamodb(request: _Request) -> list[Check]:
    operation = request.target("DynamoDB_20120810")
    if operation is None:
        raise UnknownRequest(f"dynamodb: {request.method} {request.path} has no X-Amz-Target")
    request.require_post_root(operation)
    body = request.json()
    name = f"DynamoDB {operation}"
    action = f"dynamodb:{operation}"

    if operation in _DYNAMODB_TABLE_OPS:
        arn = _dynamodb_table_arn(request, _required(body, "TableName", name))
        if operation in ("Query", "Scan") and body.get("IndexName"):
            arn = f"{arn}/index/{body['IndexName']}"
        return [Check(action, arn, {}, name)]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        tables = body.get("RequestItems")
        if not isinstance(tables, dict) or not tables:
            raise UnknownRequest(f"{name}: the request has no RequestItems")
        return [Check(action, _dynamodb_table_arn(request, t), {}, name) for t in tables]
    if operation in ("TransactWriteItems", "TransactGetItems"):
        items = body.get("TransactItems")
        if not isinstance(items, list) or not items:
            raise UnknownRequest(f"{name}: the request has no TransactItems")
        out: list[Check] = []
        for index, item in enumerate(items):
            kinds = {"Get": "GetItem"} if operation == "TransactGetItems" else _DYNAMODB_TRANSACT_WRITE
            if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in kinds:
                raise UnknownRequest(f"{name}: item #{index} is not one of {sorted(kinds)}: {item!r}")
            kind, detail = next(iter(item.items()))
            table = _required(detail if isinstance(detail, dict) else {}, "TableName", f"{name} {kind}")
            check = Check(f"dynamodb:{kinds[kind]}", _dynamodb_table_arn(request, table), {}, f"{name} ({kind})")
            if check not in out:
                out.append(check)
        return out
    if operation == "ExportTableToPointInTime":
        return _dynamodb_export(request, body, name)
    if operation == "DescribeExport":
        return [Check(action, _required(body, "ExportArn", name), {}, name)]
    if operation in ("ListTables", "ListExports", "DescribeLimits", "DescribeEndpoints"):
        # ListExports may name a table; IAM authorizes it on "*" all the same.
        return [Check(action, "*", {}, name)]
    raise UnknownRequest(f"dynamodb: no IAM mapping for {operation}")


# DynamoDB writes an export with the caller's permissions: the Developer Guide ("Requesting a table export
# in DynamoDB", Set up S3 permissions) asks for these three on the destination besides the export action.
_DYNAMODB_EXPORT_S3_ACTIONS = ("s3:AbortMultipartUpload", "s3:PutObject", "s3:PutObjectAcl")


def _dynamodb_export(request: _Request, body: Mapping[str, Any], name: str) -> list[Check]:
    """The export action on the table, and the S3 writes on what it writes: every object under
    `<S3Prefix>/AWSDynamoDB/` (the export id is not known yet, so the check's resource ends in a literal
    `*`, which a grant covers only if it covers every key there)."""
    table = _dynamodb_table_arn(request, _required(body, "TableArn", name))
    bucket = _required(body, "S3Bucket", name)
    prefix = body.get("S3Prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise UnknownRequest(f"{name}: S3Prefix is not a string")
    objects = _s3_arn(request, bucket, f"{prefix}/AWSDynamoDB/*" if prefix is not None else "AWSDynamoDB/*")
    out = [Check("dynamodb:ExportTableToPointInTime", table, {}, name)]
    out.extend(Check(action, objects, {}, f"{name} (writes the export)") for action in _DYNAMODB_EXPORT_S3_ACTIONS)
    return out


# --- S3 (REST, path-style /{bucket}/{key}) -----------------------------------------------------------

# Query parameters that select a bucket subresource or an object operation. Any other parameter must be
# one of the plain ones below, so that a subresource this module does not know (?acl, ?tagging, ...) on
# an otherwise familiar method is refused rather than read as GetObject or PutObject.
_S3_PLAIN = {
    "x-id", "versionId", "partNumber", "prefix", "delimiter", "max-keys", "continuation-token",
    "start-after", "fetch-owner", "encoding-type", "marker", "list-type", "max-parts", "part-number-marker",
    "max-uploads", "key-marker", "upload-id-marker",
}  # fmt: skip


def _s3_arn(request: _Request, bucket: str, key: str | None = None) -> str:
    resource = bucket if key is None else f"{bucket}/{key}"
    return f"arn:{request.partition}:s3:::{resource}"


def _s3_object_context(request: _Request) -> dict[str, str | list[str]]:
    """The request-header condition keys of object writes, for those headers the request carries."""
    context: dict[str, str | list[str]] = {}
    for header in ("x-amz-acl", "x-amz-server-side-encryption", "x-amz-storage-class"):
        value = _header(request.headers, header)
        if value is not None:
            context[f"s3:{header}"] = value
    return context


def _s3_copy_source(request: _Request, header: str, operation: str) -> Check:
    """`x-amz-copy-source: [/]bucket/key[?versionId=v]`, URL-encoded: the read side of a copy."""
    source, _, source_query = header.partition("?")
    bucket, _, key = unquote(source).lstrip("/").partition("/")
    if not bucket or not key:
        raise UnknownRequest(f"S3 {operation}: cannot read x-amz-copy-source {header!r}")
    version = dict(parse_qsl(source_query)).get("versionId")
    action = "s3:GetObjectVersion" if version else "s3:GetObject"
    return Check(action, _s3_arn(request, bucket, key), {}, f"S3 {operation} (source)")


def _s3_delete_objects(request: _Request, bucket: str) -> list[Check]:
    """DeleteObjects is authorized as s3:DeleteObject (or DeleteObjectVersion) on every key it names."""
    try:
        root = ElementTree.fromstring(request.body)
    except ElementTree.ParseError as e:
        raise UnknownRequest(f"S3 DeleteObjects: the body is not XML: {e}") from e
    out: list[Check] = []
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "Object":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in element}
        if not fields.get("Key"):
            raise UnknownRequest("S3 DeleteObjects: an <Object> without a <Key>")
        action = "s3:DeleteObjectVersion" if fields.get("VersionId") else "s3:DeleteObject"
        out.append(Check(action, _s3_arn(request, bucket, fields["Key"]), {}, "S3 DeleteObjects"))
    if not out:
        raise UnknownRequest("S3 DeleteObjects: the body names no object")
    return out


def _s3(request: _Request) -> list[Check]:
    path = request.path.split("?", 1)[0]
    bucket, _, raw_key = path.lstrip("/").partition("/")
    bucket, key = unquote(bucket), unquote(raw_key)
    params = dict(parse_qsl(request.query, keep_blank_values=True))
    subresources = {p for p in params if p not in _S3_PLAIN and not p.startswith("response-")}
    method = request.method
    checks_: list[Check]

    if not bucket:
        if method == "GET" and not subresources:
            checks_ = [Check("s3:ListAllMyBuckets", "*", {}, "S3 ListBuckets")]
        else:
            raise UnknownRequest(f"S3: no IAM mapping for {method} / ?{request.query}")
    elif not key:
        checks_ = _s3_bucket(request, bucket, params, subresources)
    else:
        checks_ = _s3_object(request, bucket, key, params, subresources)

    # The Rust SDK (and others) name the operation in x-id: a second opinion worth having.
    named = params.get("x-id")
    if named is not None and not any(c.operation.split(" (")[0] == f"S3 {named}" for c in checks_):
        raise UnknownRequest(f"S3: {method} {request.path}?{request.query} says x-id={named}, read as {checks_[0].operation}")
    return checks_


def _s3_bucket(request: _Request, bucket: str, params: dict[str, str], subresources: set[str]) -> list[Check]:
    arn, method = _s3_arn(request, bucket), request.method
    if method in ("GET", "HEAD") and not subresources:
        if method == "HEAD":
            return [Check("s3:ListBucket", arn, {}, "S3 HeadBucket")]
        context: dict[str, str | list[str]] = {
            f"s3:{name}": params[name] for name in ("prefix", "delimiter", "max-keys") if name in params
        }
        operation = "S3 ListObjectsV2" if params.get("list-type") == "2" else "S3 ListObjects"
        return [Check("s3:ListBucket", arn, context, operation)]
    if method == "GET" and subresources == {"location"}:
        return [Check("s3:GetBucketLocation", arn, {}, "S3 GetBucketLocation")]
    if method == "GET" and subresources == {"versions"}:
        return [Check("s3:ListBucketVersions", arn, {}, "S3 ListObjectVersions")]
    if method == "GET" and subresources == {"uploads"}:
        return [Check("s3:ListBucketMultipartUploads", arn, {}, "S3 ListMultipartUploads")]
    if method == "POST" and subresources == {"delete"}:
        return _s3_delete_objects(request, bucket)
    if method == "PUT" and not subresources:
        return [Check("s3:CreateBucket", arn, {}, "S3 CreateBucket")]
    if method == "DELETE" and not subresources:
        return [Check("s3:DeleteBucket", arn, {}, "S3 DeleteBucket")]
    raise UnknownRequest(f"S3: no IAM mapping for {method} /{bucket} ?{request.query}")


def _s3_object(
    request: _Request, bucket: str, key: str, params: dict[str, str], subresources: set[str]
) -> list[Check]:
    arn, method = _s3_arn(request, bucket, key), request.method
    versioned = bool(params.get("versionId"))
    copy_source = _header(request.headers, "x-amz-copy-source")
    upload_part = "uploadId" in subresources and "partNumber" in params

    if method in ("GET", "HEAD") and not subresources:
        action = "s3:GetObjectVersion" if versioned else "s3:GetObject"
        return [Check(action, arn, {}, "S3 GetObject" if method == "GET" else "S3 HeadObject")]
    if method == "GET" and subresources == {"uploadId"}:
        return [Check("s3:ListMultipartUploadParts", arn, {}, "S3 ListParts")]
    if method == "PUT" and (not subresources or (upload_part and subresources == {"uploadId"})):
        operation = "UploadPart" if upload_part else "PutObject"
        if copy_source is not None:
            operation = "UploadPartCopy" if upload_part else "CopyObject"
        context = {} if upload_part else _s3_object_context(request)
        out = [Check("s3:PutObject", arn, context, f"S3 {operation}")]
        if copy_source is not None:
            out.append(_s3_copy_source(request, copy_source, operation))
        return out
    if method == "POST" and subresources == {"uploads"}:
        return [Check("s3:PutObject", arn, _s3_object_context(request), "S3 CreateMultipartUpload")]
    if method == "POST" and subresources == {"uploadId"}:
        return [Check("s3:PutObject", arn, {}, "S3 CompleteMultipartUpload")]
    if method == "DELETE" and subresources == {"uploadId"}:
        return [Check("s3:AbortMultipartUpload", arn, {}, "S3 AbortMultipartUpload")]
    if method == "DELETE" and not subresources:
        action = "s3:DeleteObjectVersion" if versioned else "s3:DeleteObject"
        return [Check(action, arn, {}, "S3 DeleteObject")]
    raise UnknownRequest(f"S3: no IAM mapping for {method} /{bucket}/{key} ?{request.query}")


# --- SES v2 (REST) -----------------------------------------------------------------------------------


def _ses_sender(from_header: str) -> tuple[str, str | None]:
    """(`address`, display name or None) from `FromEmailAddress`, which may be `Name <address>`."""
    display, address = parseaddr(from_header)
    if not address or "@" not in address:
        raise UnknownRequest(f"SES SendEmail: cannot read the address in FromEmailAddress {from_header!r}")
    return address, (display or None)


def _ses_identity(address: str, identities: Collection[str] | None) -> str:
    """The identity SES sends `address` as: the address when it is verified itself, else the closest
    verified domain it belongs to. Matching is case-insensitive, as email domains are."""
    if identities is None:
        return address
    verified = {i.lower(): i for i in identities}
    if address.lower() in verified:
        return verified[address.lower()]
    domain = address.rpartition("@")[2].lower()
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        if candidate in verified:
            return verified[candidate]
    raise UnknownRequest(f"SES SendEmail: {address} belongs to none of the verified identities {sorted(identities)}")


def _ses(request: _Request) -> list[Check]:
    path = request.path.split("?", 1)[0].rstrip("/")
    if request.method == "PUT" and path == "/v2/email/suppression/addresses":
        # The account-level suppression list: the Service Authorization Reference gives
        # ses:PutSuppressedDestination no resource type, so IAM evaluates it on "*".
        body = request.json()
        if not body.get("EmailAddress") or body.get("Reason") not in ("BOUNCE", "COMPLAINT"):
            raise UnknownRequest(f"SES PutSuppressedDestination without an address or a valid Reason: {body}")
        if body.get("TenantName"):
            raise UnknownRequest("SES PutSuppressedDestination for a tenant's list is not mapped")
        return [Check("ses:PutSuppressedDestination", "*", {}, "SES PutSuppressedDestination")]
    if not (request.method == "POST" and path == "/v2/email/outbound-emails"):
        raise UnknownRequest(f"SES: no IAM mapping for {request.method} {request.path}")
    body = request.json()
    from_header = body.get("FromEmailAddress")
    if not isinstance(from_header, str) or not from_header:
        # A raw message's sender is in its MIME headers; our functions never send one.
        raise UnknownRequest("SES SendEmail without FromEmailAddress (a raw message?) is not mapped")
    address, display = _ses_sender(from_header)
    destination = body.get("Destination") or {}
    recipients = [
        a
        for kind in ("ToAddresses", "CcAddresses", "BccAddresses")
        for a in (destination.get(kind) or [])
    ]
    context: dict[str, str | list[str]] = {
        "ses:FromAddress": address,
        "ses:Recipients": [parseaddr(r)[1] or r for r in recipients],
        "ses:ApiVersion": "2",
    }
    if display is not None:
        context["ses:FromDisplayName"] = display
    if body.get("FeedbackForwardingEmailAddress"):
        context["ses:FeedbackAddress"] = parseaddr(body["FeedbackForwardingEmailAddress"])[1]
    identity_arn = body.get("FromEmailAddressIdentityArn") or request.arn(
        "ses", f"identity/{_ses_identity(address, request.ses_identities)}"
    )
    out = [Check("ses:SendEmail", identity_arn, context, "SES SendEmail")]
    if body.get("ConfigurationSetName"):
        configuration_set = request.arn("ses", f"configuration-set/{body['ConfigurationSetName']}")
        out.append(Check("ses:SendEmail", configuration_set, context, "SES SendEmail (configuration set)"))
    return out


# --- EventBridge (awsJson1_1, X-Amz-Target: AWSEvents.<Op>) -----------------------------------------


def _events(request: _Request) -> list[Check]:
    operation = request.target("AWSEvents")
    if operation != "PutEvents":
        raise UnknownRequest(f"events: no IAM mapping for {operation or request.method + ' ' + request.path}")
    request.require_post_root(operation)
    entries = request.json().get("Entries")
    if not isinstance(entries, list) or not entries:
        raise UnknownRequest("EventBridge PutEvents: the request has no Entries")
    out: list[Check] = []
    for entry in entries:
        bus = (entry.get("EventBusName") if isinstance(entry, dict) else None) or "default"
        arn = bus if bus.startswith("arn:") else request.arn("events", f"event-bus/{bus}")
        context: dict[str, str | list[str]] = {}
        if entry.get("Source") is not None:
            context["events:source"] = entry["Source"]
        if entry.get("DetailType") is not None:
            context["events:detail-type"] = entry["DetailType"]
        check = Check("events:PutEvents", arn, context, "EventBridge PutEvents")
        if check not in out:
            out.append(check)
    return out


# --- Lambda (REST) -----------------------------------------------------------------------------------

_LAMBDA_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_LAMBDA_FUNCTION_ARN = re.compile(
    r"^arn:(?P<partition>[^:]+):lambda:(?P<region>[^:]+):(?P<account>\d{12}):function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)


def _lambda_function_arn(request: _Request, name: str, qualifier: str | None) -> str:
    """FunctionName is a name, `name:qualifier`, `account:function:name[:qualifier]` or a full ARN; IAM
    authorizes the function's ARN, qualified when the invocation names a version or alias."""
    match = _LAMBDA_FUNCTION_ARN.match(name)
    if match:
        base = f"arn:{match['partition']}:lambda:{match['region']}:{match['account']}:function:{match['name']}"
        inline = match["qualifier"]
    else:
        parts = name.split(":")
        if len(parts) in (3, 4) and parts[1] == "function":  # account:function:name[:qualifier]
            base = f"arn:{request.partition}:lambda:{request.region}:{parts[0]}:function:{parts[2]}"
            inline = parts[3] if len(parts) == 4 else None
        elif len(parts) in (1, 2):
            base = request.arn("lambda", f"function:{parts[0]}")
            inline = parts[1] if len(parts) == 2 else None
        else:
            raise UnknownRequest(f"Lambda Invoke: cannot read FunctionName {name!r}")
    if inline and qualifier and inline != qualifier:
        raise UnknownRequest(f"Lambda Invoke: FunctionName {name!r} and Qualifier {qualifier!r} disagree")
    qualifier = qualifier or inline
    return f"{base}:{qualifier}" if qualifier else base


def _lambda(request: _Request) -> list[Check]:
    match = _LAMBDA_INVOKE.match(request.path.split("?", 1)[0])
    if request.method != "POST" or not match:
        raise UnknownRequest(f"lambda: no IAM mapping for {request.method} {request.path}")
    qualifier = dict(parse_qsl(request.query)).get("Qualifier")
    arn = _lambda_function_arn(request, unquote(match["name"]), qualifier)
    return [Check("lambda:InvokeFunction", arn, {}, "Lambda Invoke")]


# --- Personalize: control plane (awsJson1_1) and runtime (restJson1), both signed "personalize" ------

# Create operations that name what they create: the resource type in its ARN, and the body's name field.
_PERSONALIZE_CREATES = {
    "CreateDatasetImportJob": ("dataset-import-job", "jobName"),
    "CreateDatasetExportJob": ("dataset-export-job", "jobName"),
    "CreateBatchInferenceJob": ("batch-inference-job", "jobName"),
    "CreateCampaign": ("campaign", "name"),
    "CreateSolution": ("solution", "name"),
    "CreateDatasetGroup": ("dataset-group", "name"),
    "CreateFilter": ("filter", "name"),
    "CreateSchema": ("schema", "name"),
    "CreateEventTracker": ("event-tracker", "name"),
}

# Operations on one existing resource that the generic rule (Describe<X>/Delete<X> act on <x>Arn) does
# not name.
_PERSONALIZE_ON = {
    "CreateSolutionVersion": "solutionArn",
    "UpdateCampaign": "campaignArn",
    "UpdateSolution": "solutionArn",
    "GetSolutionMetrics": "solutionVersionArn",
    "StopSolutionVersionCreation": "solutionVersionArn",
}

_PERSONALIZE_RUNTIME = {
    "/recommendations": ("GetRecommendations", ("campaignArn", "recommenderArn")),
    "/personalize-ranking": ("GetPersonalizedRanking", ("campaignArn",)),
}

_PERSONALIZE_SERVICE = "personalize.amazonaws.com"


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def _personalize(request: _Request) -> list[Check]:
    if _header(request.headers, "X-Amz-Target") is not None:
        return _personalize_control(request)
    path = request.path.split("?", 1)[0].rstrip("/")
    if request.method == "POST" and path in _PERSONALIZE_RUNTIME:
        return _personalize_runtime(request, path)
    raise UnknownRequest(f"personalize: no IAM mapping for {request.method} {request.path} (and no X-Amz-Target)")


def _personalize_runtime(request: _Request, path: str) -> list[Check]:
    """GetRecommendations acts on the campaign (or recommender) and, when the request names one, on the
    filter: both are resource types of the action, and IAM wants every one of them allowed."""
    operation, targets = _PERSONALIZE_RUNTIME[path]
    body, name = request.json(), f"Personalize {operation}"
    arns = [body[t] for t in targets if isinstance(body.get(t), str) and body[t]]
    if len(arns) != 1:
        raise UnknownRequest(f"{name}: needs exactly one of {', '.join(targets)}")
    out = [Check(f"personalize:{operation}", arns[0], {}, name)]
    if body.get("filterArn"):
        out.append(Check(f"personalize:{operation}", body["filterArn"], {}, f"{name} (filter)"))
    return out


def _personalize_control(request: _Request) -> list[Check]:
    operation = request.target("AmazonPersonalize")
    assert operation is not None
    request.require_post_root(operation)
    body, name, action = request.json(), f"Personalize {operation}", f"personalize:{operation}"
    out: list[Check] = []

    if operation in _PERSONALIZE_CREATES:
        kind, name_field = _PERSONALIZE_CREATES[operation]
        out.append(Check(action, request.arn("personalize", f"{kind}/{_required(body, name_field, name)}"), {}, name))
        if operation == "CreateDatasetImportJob":
            # The job is created from the dataset: the template grants both, and requiring both keeps
            # the harness at least as strict as either reading of the reference.
            out.append(Check(action, _required(body, "datasetArn", name), {}, f"{name} (dataset)"))
    elif operation in _PERSONALIZE_ON:
        out.append(Check(action, _required(body, _PERSONALIZE_ON[operation], name), {}, name))
    elif operation.startswith(("Describe", "Delete")):
        noun = operation.removeprefix("Describe").removeprefix("Delete")
        out.append(Check(action, _required(body, _lower_first(noun) + "Arn", name), {}, name))
    elif operation.startswith("List"):
        # A list scoped to a parent (ListSolutionVersions by solutionArn, ...) acts on the parent;
        # otherwise on "*".
        parents = [v for k, v in body.items() if k.endswith("Arn") and isinstance(v, str) and v]
        if len(parents) > 1:
            raise UnknownRequest(f"{name}: more than one parent ARN: {parents}")
        out.append(Check(action, parents[0] if parents else "*", {}, name))
    else:
        raise UnknownRequest(f"personalize: no IAM mapping for {operation}")

    # Handing Personalize a role (an import's S3 reader, a dataset group's KMS role) is an iam:PassRole.
    if body.get("roleArn"):
        out.append(
            Check("iam:PassRole", body["roleArn"], {"iam:PassedToService": _PERSONALIZE_SERVICE}, f"{name} (pass role)")
        )
    return out


_SERVICES = {
    "dynamodb": _dynamodb,
    "s3": _s3,
    "ses": _ses,
    "events": _events,
    "lambda": _lambda,
    "personalize": _personalize,
}
