"""The deployed stack, offline: `infra/template.yaml` (SAM-transformed) deployed onto moto and the
Personalize stand-in, each function run as Lambda runs it, every trigger wired as the template wires it.

What plays what:

* **CloudFormation**: `deploy` creates the template's tables (key schemas, point-in-time recovery), bucket, bus,
  queues, rules and Personalize resources (in the stand-in), with the names and ARNs `cfn.Stack` gives them.
* **Lambda**: `lambda_rt` runs each function's bootstrap behind the Runtime API with the template's
  `Environment`, `Timeout` and `MemorySize`; asynchronous invokes retry and go to the on-failure destination
  as the template's `EventInvokeConfig` says, that delivery being checked against the function's role as
  Lambda does it. Log delivery (`logs:CreateLogStream`, `logs:PutLogEvents` on the function's `LoggingConfig`
  group) is checked for every function that ran.
* **IAM**: every AWS request a function makes goes through `proxy.Proxy`, which checks it against the
  function's role from the template, and so does every action a service takes with a role of the stack
  (the scheduler invoking with `SchedulerRole`, Personalize reading the export with `PersonalizeImportRole`).
* **EventBridge**: the template's rules are put on the bus in moto with their patterns; their targets are
  SQS queues standing in for the Lambda targets (moto cannot invoke one), which `pump` drains into
  asynchronous invokes of the target function, once the `AWS::Lambda::Permission` for that rule is found.
* **API Gateway**: `api` turns an HTTP request into the REST proxy event of the template's stage, requires
  `x-api-key` exactly where the transformed template's OpenAPI body does, applies the stage's method
  throttles, checks the function's permission for API Gateway, and maps the function's answer back.
* **EventBridge Scheduler**: `fire` sends a schedule's `Input` to its target with its role.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from . import authz, cfn
from .lambda_rt import FunctionSpec, LambdaFunction, Lambdas
from .proxy import Caller, Ledger, Proxy, authorize

REGION, ACCOUNT = cfn.REGION, cfn.ACCOUNT
OBSERVER = "harness:observer"
# SES's event types (`eventType` of its records) and the detail-types EventBridge gives them.
SES_DETAIL_TYPES = {
    "Bounce": "Email Bounced",
    "Complaint": "Email Complaint Received",
    "Reject": "Email Rejected",
    "Delivery": "Email Delivered",
    "DeliveryDelay": "Email Delivery Delayed",
    "Send": "Email Sent",
    "Open": "Email Opened",
    "Click": "Email Clicked",
}
STANDIN_ACCESS_KEY = "standin"  # the key the stand-in's S3 reads are signed with (PersonalizeImportRole)


def boto(service: str, endpoint: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="stack-operator",
        aws_secret_access_key="stack-operator",
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 3, "mode": "standard"}),
    )


@dataclass
class Backends:
    moto: str  # DynamoDB, SES, EventBridge, SQS
    moto_s3: str
    standin: str
    # The functions' DynamoDB: tests/ddb_export_standin in front of `moto`, with table exports. Writes made
    # straight to `moto` count, for incremental exports, as made when the stand-in started.
    dynamodb: str


@dataclass
class Rule:
    logical_id: str
    arn: str
    queue_url: str
    target_arn: str


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    at: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        if self.tokens < 0:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class ApiResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Deployment:
    """One deployed stack and the means to poke it."""

    stack: cfn.Stack
    backends: Backends
    binaries: dict[str, Path]
    work: Path
    ledger: Ledger
    proxy: Proxy
    callers: dict[str, Caller]
    lambdas: Lambdas = field(default_factory=Lambdas)
    rules: list[Rule] = field(default_factory=list)
    queue_urls: dict[str, str] = field(default_factory=dict)
    alarms: list[dict] = field(default_factory=list)
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    throttles: dict[tuple[str, str], TokenBucket] = field(default_factory=dict)
    function_ids: dict[str, str] = field(default_factory=dict)  # function name -> logical id
    errors: list[str] = field(default_factory=list)
    # (caller, payload) of every Invoke a function made through the Lambda API.
    invoke_payloads: list[tuple[str, bytes]] = field(default_factory=list)
    # What training-export announced on the bus (an observer rule of the harness's own).
    observed_events: list[dict] = field(default_factory=list)
    # (rule logical id, event) of every event a rule delivered to a function, as EventBridge sent it.
    deliveries: list[tuple[str, dict]] = field(default_factory=list)
    # The template's SES event destinations (moto has none): configuration set -> [(bus ARN, event types)].
    ses_destinations: dict[str, list[tuple[str, set[str]]]] = field(default_factory=dict)
    _pumping: threading.Event = field(default_factory=threading.Event)
    _pump: threading.Thread | None = None
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- names -------------------------------------------------------------------------------------

    def name(self, logical_id: str) -> str:
        return self.stack.ref(logical_id)

    def arn(self, logical_id: str) -> str:
        return self.stack.getatt(logical_id, "Arn")

    def function(self, logical_id: str) -> LambdaFunction:
        return self.lambdas[self.stack.ref(logical_id)]

    # ---- triggers ----------------------------------------------------------------------------------

    def fire(self, schedule_logical_id: str) -> str:
        """EventBridge Scheduler sends the schedule's Input to its target, assuming the schedule's role."""
        target = self.stack.properties(schedule_logical_id)["Target"]
        role_id = _role_logical_id(self.stack, target["RoleArn"])
        caller = self.callers[f"role:{role_id}"]
        check = authz.Check(
            "lambda:InvokeFunction", target["Arn"], {}, f"Scheduler {schedule_logical_id} invokes its target"
        )
        record = authorize(self.ledger, caller, check.operation, [check])
        if record.denied:
            raise AssertionError(record.describe_denial())
        function = self.lambdas.resolve(target["Arn"])
        assert function is not None, f"{schedule_logical_id} targets {target['Arn']}, which is not deployed"
        return function.invoke_async(target["Input"].encode())

    def publish(self, events: list[dict]) -> None:
        """The platform's services put events on the bus (not our functions: no role of ours applies)."""
        bridge = boto("events", self.backends.moto)
        bus = self.name("EventBus")
        for start in range(0, len(events), 10):
            entries = [
                {
                    "Source": e["source"],
                    "DetailType": e["detail-type"],
                    "Detail": json.dumps(e["detail"], ensure_ascii=False),
                    "EventBusName": bus,
                }
                for e in events[start : start + 10]
            ]
            result = bridge.put_events(Entries=entries)
            assert result["FailedEntryCount"] == 0, result

    def publish_ses(self, event_type: str, record: dict, *, configuration_set: str | None = None) -> bool:
        """SES publishes one event record of a send made with `configuration_set` (the stack's by default).
        For the stack's set it goes where the template's event destination says (the bus of its
        EventBridge destination, if the destination is enabled for `event_type`); another set's events
        (another stack in the account) go to the default bus, as their own destination would send them.
        `record` is SES's record without `eventType` and the configuration-set tag, which are filled in.
        Returns whether the event was put on a bus."""
        if event_type not in SES_DETAIL_TYPES:
            raise ValueError(f"not an SES event type the harness knows: {event_type}")
        name = configuration_set or self.name("EmailConfigurationSet")
        detail = json.loads(json.dumps(record))
        detail["eventType"] = event_type
        mail = detail.setdefault("mail", {})
        mail.setdefault("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        mail.setdefault("messageId", str(uuid.uuid4()))
        mail.setdefault("source", self.stack.values["EmailSender"])
        mail.setdefault("destination", [])
        mail.setdefault("tags", {})["ses:configuration-set"] = [name]
        if name in self.ses_destinations:
            wanted = event_type.lower()
            buses = [bus for bus, types in self.ses_destinations[name] if wanted in types]
        else:
            buses = [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"]
        bridge = boto("events", self.backends.moto)
        for bus in buses:
            result = bridge.put_events(
                Entries=[
                    {
                        "Source": "aws.ses",
                        "DetailType": SES_DETAIL_TYPES[event_type],
                        "Detail": json.dumps(detail, ensure_ascii=False),
                        "EventBusName": bus.rsplit("/", 1)[1],
                        "Resources": [f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/{name}"],
                    }
                ]
            )
            assert result["FailedEntryCount"] == 0, result
        return bool(buses)

    def api(self, method: str, path: str, *, headers: dict[str, str] | None = None, key: bool = True) -> ApiResponse:
        """One HTTPS request to the stage's URL (`/<stage>/...`), as API Gateway handles it."""
        headers = dict(headers or {})
        if key:
            headers.setdefault("x-api-key", self.api_key)
        stage = self.stack.values["ApiStageName"]
        parsed = urllib.parse.urlsplit(path)
        if not parsed.path.startswith(f"/{stage}/"):
            return self._gateway(403, "Missing Authentication Token")
        resource_path = parsed.path[len(stage) + 1 :]
        body = self.stack.properties("RankingApi")["Body"]
        match = _match_route(body["paths"], resource_path)
        if match is None:
            return self._gateway(403, "Missing Authentication Token")
        template_path, params = match
        operation = body["paths"][template_path].get(method.lower())
        if operation is None:
            return self._gateway(403, "Missing Authentication Token")
        needs_key = any("api_key" in s for s in operation.get("security", []))
        if needs_key and headers.get("x-api-key") != self.api_key:
            return self._gateway(403, "Forbidden")
        bucket = self._throttle(template_path, method.upper())
        if bucket is not None and not bucket.take():
            return self._gateway(429, "Too Many Requests")
        uri = operation["x-amazon-apigateway-integration"]["uri"]
        function_arn = re.search(r"functions/(.+)/invocations", uri).group(1)
        source_arn = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{self.name('RankingApi')}/{stage}/{method.upper()}{resource_path}"
        self._check_permission(function_arn, "apigateway.amazonaws.com", source_arn)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        request_id = str(uuid.uuid4())
        event = {
            "resource": template_path,
            "path": resource_path,
            "httpMethod": method.upper(),
            "headers": headers or None,
            "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "abc123",
                "resourcePath": template_path,
                "httpMethod": method.upper(),
                "extendedRequestId": request_id,
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                "path": parsed.path,
                "accountId": ACCOUNT,
                "protocol": "HTTP/1.1",
                "stage": stage,
                "domainPrefix": self.name("RankingApi"),
                "requestTimeEpoch": int(time.time() * 1000),
                "requestId": request_id,
                "identity": {
                    "sourceIp": "127.0.0.1",
                    "userAgent": headers.get("user-agent", "stack-harness"),
                    "apiKey": headers.get("x-api-key") if needs_key else None,
                    "apiKeyId": "stackkey" if needs_key else None,
                },
                "domainName": f"{self.name('RankingApi')}.execute-api.{REGION}.amazonaws.com",
                "apiId": self.name("RankingApi"),
            },
            "body": None,
            "isBase64Encoded": False,
        }
        function = self.lambdas.resolve(function_arn)
        result = function.invoke(json.dumps(event).encode())
        if result.function_error:
            return self._gateway(502, "Internal server error")
        answer = json.loads(result.payload)
        out_headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
        for k, values in (answer.get("multiValueHeaders") or {}).items():
            out_headers[k.lower()] = ", ".join(values)
        payload = answer.get("body") or ""
        if answer.get("isBase64Encoded"):
            import base64

            raw = base64.b64decode(payload)
        else:
            raw = payload.encode()
        return ApiResponse(int(answer["statusCode"]), out_headers, raw)

    def _gateway(self, status: int, message: str) -> ApiResponse:
        """API Gateway's own answer (a gateway response: DEFAULT_4XX/5XX headers of the template)."""
        body = self.stack.properties("RankingApi")["Body"]
        kind = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
        params = body.get("x-amazon-apigateway-gateway-responses", {}).get(kind, {}).get("responseParameters", {})
        headers = {
            k.removeprefix("gatewayresponse.header.").lower(): v.strip("'") for k, v in params.items()
        }
        headers["content-type"] = "application/json"
        return ApiResponse(status, headers, json.dumps({"message": message}).encode())

    def _throttle(self, template_path: str, method: str) -> TokenBucket | None:
        encoded = template_path.replace("/", "~1")
        for setting in self.stack.properties("RankingApiStage").get("MethodSettings", []):
            if "ThrottlingRateLimit" not in setting:
                continue
            if setting["ResourcePath"] == f"/{encoded}" and setting["HttpMethod"] in (method, "*"):
                key = (template_path, method)
                if key not in self.throttles:
                    self.throttles[key] = TokenBucket(
                        float(setting["ThrottlingRateLimit"]), float(setting["ThrottlingBurstLimit"])
                    )
                return self.throttles[key]
        return None

    def _check_permission(self, function_arn: str, principal: str, source_arn: str) -> None:
        """A service may invoke a function only with an AWS::Lambda::Permission for it."""
        function = self.lambdas.resolve(function_arn)
        assert function is not None, f"{function_arn} is not deployed"
        for logical_id in self.stack.of_type("AWS::Lambda::Permission"):
            p = self.stack.properties(logical_id)
            if p["Principal"] != principal or p["Action"] != "lambda:InvokeFunction":
                continue
            if self.lambdas.resolve(p["FunctionName"]) is not function:
                continue
            if _arn_like(p.get("SourceArn", "*"), source_arn):
                return
        message = f"{principal} may not invoke {function.spec.name} for {source_arn}: no AWS::Lambda::Permission"
        self.errors.append(message)
        raise AssertionError(message)

    # ---- the bus -----------------------------------------------------------------------------------

    def start_pump(self) -> None:
        self._pumping.set()
        self._pump = threading.Thread(target=self._drain_rules, name="stack-bus", daemon=True)
        self._pump.start()

    def _drain_rules(self) -> None:
        sqs = boto("sqs", self.backends.moto)
        while self._pumping.is_set():
            for rule in self.rules:
                with self._lock:
                    self._in_flight += 1
                try:
                    messages = sqs.receive_message(QueueUrl=rule.queue_url, MaxNumberOfMessages=10).get("Messages", [])
                    for message in messages:
                        self._deliver(rule, message["Body"])
                        sqs.delete_message(QueueUrl=rule.queue_url, ReceiptHandle=message["ReceiptHandle"])
                except Exception as e:  # noqa: BLE001 - reported by the test
                    self.errors.append(f"bus pump, {rule.logical_id}: {e!r}")
                finally:
                    with self._lock:
                        self._in_flight -= 1
            time.sleep(0.05)

    def _deliver(self, rule: Rule, body: str) -> None:
        if rule.target_arn == OBSERVER:
            self.observed_events.append(json.loads(body))
            return
        if rule.target_arn.startswith("arn:aws:sns:"):
            self.alarms.append({"rule": rule.logical_id, "event": json.loads(body)})
            return
        self._check_permission(rule.target_arn, "events.amazonaws.com", rule.arn)
        with self._lock:
            self.deliveries.append((rule.logical_id, json.loads(body)))
        self.lambdas.resolve(rule.target_arn).invoke_async(body.encode())

    def redeliver(self, rule_logical_id: str, event: dict) -> None:
        """EventBridge delivers at least once: `event`, which the rule delivered already, once more as it was
        (same id), through the same target and permission."""
        rule = next((r for r in self.rules if r.logical_id == rule_logical_id), None)
        assert rule is not None, f"no rule {rule_logical_id} in the stack"
        self._deliver(rule, json.dumps(event, ensure_ascii=False))

    def settle(self, timeout: float = 120) -> None:
        """Until the bus's queues are empty and no function has an asynchronous invoke left."""
        sqs = boto("sqs", self.backends.moto)
        end = time.monotonic() + timeout
        quiet = 0
        while time.monotonic() < end:
            pending = 0
            for rule in self.rules:
                attrs = sqs.get_queue_attributes(
                    QueueUrl=rule.queue_url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                pending += int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            with self._lock:
                pending += self._in_flight
            for fn in self.lambdas:
                fn.wait_idle(max(1.0, end - time.monotonic()))
            quiet = quiet + 1 if pending == 0 else 0
            if quiet >= 3:
                return
            time.sleep(0.1)
        raise TimeoutError("the stack did not settle")

    def messages(self, queue_logical_id: str) -> list[dict]:
        """Everything waiting in one of the stack's queues (read, then deleted)."""
        sqs = boto("sqs", self.backends.moto)
        url = self.queue_urls[queue_logical_id]
        out = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return out
            for m in batch:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    # ---- functions ---------------------------------------------------------------------------------

    def start_functions(self) -> None:
        """(Re)deploys every function with the stack's current parameters: new instances, cold starts."""
        for fn in self.lambdas:
            fn.stop()
        self.lambdas = Lambdas()
        self.proxy.lambda_api = self._lambda_api
        for logical_id in self.stack.of_type("AWS::Lambda::Function"):
            props = self.stack.properties(logical_id)
            binary_name = self.stack.template["Resources"][logical_id]["Metadata"]["BuildProperties"]["Binary"]
            binary = self.binaries[binary_name]
            role_id = self.stack.function_role(logical_id)
            access_key = _access_key(logical_id)
            self.callers[access_key] = Caller(props["FunctionName"], role_id, self.stack.role_policies(role_id))
            env = {k: str(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
            env.update(
                {
                    "AWS_REGION": REGION,
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_ACCESS_KEY_ID": access_key,
                    "AWS_SECRET_ACCESS_KEY": "stack-secret",
                    "AWS_SESSION_TOKEN": f"session-{logical_id}",
                    "AWS_ENDPOINT_URL": self.proxy.url,
                    "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": str(self.work / "no-aws-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": str(self.work / "no-aws-credentials"),
                    "AWS_LAMBDA_LOG_FORMAT": props.get("LoggingConfig", {}).get("LogFormat", "Text"),
                    "AWS_LAMBDA_LOG_LEVEL": props.get("LoggingConfig", {}).get("ApplicationLogLevel", "INFO"),
                    "PATH": "/usr/bin:/bin",
                }
            )
            invoke_config = self._invoke_config(logical_id)
            on_failure = invoke_config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
            spec = FunctionSpec(
                props["FunctionName"],
                binary,
                env,
                float(props.get("Timeout", 3)),
                int(props.get("MemorySize", 128)),
                max_retries=int(invoke_config.get("MaximumRetryAttempts", 2)),
                max_event_age_s=int(invoke_config.get("MaximumEventAgeInSeconds", 21600)),
                on_failure=self._destination(logical_id, on_failure) if on_failure else None,
                log_dir=self.work / "logs",
                retry_delays=(0.2, 0.4),
            )
            self.lambdas.add(spec)
            self.function_ids[props["FunctionName"]] = logical_id

    def _lambda_api(self, target: str, headers: dict[str, str], body: bytes):
        key = authz.sigv4_access_key({k.lower(): v for k, v in headers.items()}) or ""
        caller = self.callers.get(key)
        self.invoke_payloads.append((caller.name if caller else key, body))
        return self.lambdas.handle_invoke(target, headers, body)

    def _invoke_config(self, function_logical_id: str) -> dict:
        for logical_id in self.stack.of_type("AWS::Lambda::EventInvokeConfig"):
            props = self.stack.properties(logical_id)
            if props["FunctionName"] == self.stack.ref(function_logical_id):
                return props
        return {}

    def _destination(self, function_logical_id: str, destination_arn: str):
        """Lambda sends an invocation that failed for good to its destination, with the function's role."""

        def send(record: dict) -> None:
            caller = self.callers[_access_key(function_logical_id)]
            check = authz.Check(
                "sqs:SendMessage", destination_arn, {}, f"Lambda on-failure destination of {caller.name}"
            )
            outcome = authorize(self.ledger, caller, check.operation, [check])
            if outcome.denied:
                self.errors.append(outcome.describe_denial())
                return
            queue = next(
                url for lid, url in self.queue_urls.items() if self.stack.getatt(lid, "Arn") == destination_arn
            )
            boto("sqs", self.backends.moto).send_message(QueueUrl=queue, MessageBody=json.dumps(record))

        return send

    def deliver_logs(self) -> None:
        """Lambda writes each function's output to its log group with the function's role."""
        for fn in self.lambdas:
            if not fn.invocations():
                continue
            logical_id = self.function_ids[fn.spec.name]
            caller = self.callers[_access_key(logical_id)]
            group = self.stack.properties(logical_id).get("LoggingConfig", {}).get("LogGroup", f"/aws/lambda/{fn.spec.name}")
            stream = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}:log-stream:2026/12/04/[$LATEST]0"
            checks = [
                authz.Check(action, stream, {}, f"Lambda delivers {fn.spec.name}'s logs ({action})")
                for action in ("logs:CreateLogStream", "logs:PutLogEvents")
            ]
            outcome = authorize(self.ledger, caller, checks[0].operation, checks)
            if outcome.denied:
                self.errors.append(outcome.describe_denial())

    def stop(self) -> None:
        self._pumping.clear()
        if self._pump is not None:
            self._pump.join(timeout=5)
        self.lambdas.stop()


def _access_key(logical_id: str) -> str:
    return f"ASIA{logical_id.upper()}"[:40]


def _role_logical_id(stack: cfn.Stack, role_arn: str) -> str:
    for logical_id in stack.of_type("AWS::IAM::Role"):
        if stack.getatt(logical_id, "Arn") == role_arn:
            return logical_id
    raise AssertionError(f"no role of the stack has the ARN {role_arn}")


def _match_route(paths: dict, resource_path: str) -> tuple[str, dict[str, str]] | None:
    for template_path in paths:
        pattern = "^" + re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template_path)) + "$"
        m = re.match(pattern, resource_path)
        if m:
            return template_path, {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
    return None


def _arn_like(pattern: str, arn: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), arn) is not None


# ---- deployment -------------------------------------------------------------------------------------


def deploy(
    template: Path, name: str, parameters: dict[str, str], backends: Backends, binaries: dict[str, Path], work: Path,
    ledger: Ledger, proxy: Proxy, callers: dict[str, Caller],
) -> Deployment:
    """Creates the stack's resources as CloudFormation would, then its functions (not yet started)."""
    stack = cfn.load(template, name, parameters)
    _create_personalize(stack, backends)
    dep = Deployment(stack, backends, binaries, work, ledger, proxy, callers)
    dynamodb = boto("dynamodb", backends.moto)
    for logical_id in stack.of_type("AWS::DynamoDB::Table"):
        p = stack.properties(logical_id)
        dynamodb.create_table(
            TableName=stack.ref(logical_id),
            KeySchema=p["KeySchema"],
            AttributeDefinitions=p["AttributeDefinitions"],
            BillingMode=p.get("BillingMode", "PAY_PER_REQUEST"),
        )
        # Exports need point-in-time recovery, as the template turns it on.
        if p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") in (True, "true"):
            dynamodb.update_continuous_backups(
                TableName=stack.ref(logical_id),
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
    s3 = boto("s3", backends.moto_s3)
    for logical_id in stack.of_type("AWS::S3::Bucket"):
        s3.create_bucket(Bucket=stack.ref(logical_id))
    bridge = boto("events", backends.moto)
    for logical_id in stack.of_type("AWS::Events::EventBus"):
        bridge.create_event_bus(Name=stack.ref(logical_id))
    sqs = boto("sqs", backends.moto)
    for logical_id in stack.of_type("AWS::SQS::Queue"):
        dep.queue_urls[logical_id] = sqs.create_queue(QueueName=stack.physical_name(logical_id))["QueueUrl"]
    # SES: the identities the stack sends as, verified (SesIdentity by the operator beforehand; EmailDomain's by
    # the stack, once its DNS records are published: infra/README.md).
    ses = boto("sesv2", backends.moto)
    identities = []
    if stack.values.get("SesIdentity"):
        identities.append(stack.values["SesIdentity"])
    for logical_id in stack.of_type("AWS::SES::EmailIdentity"):
        domain = stack.ref(logical_id)
        tokens = ses.create_email_identity(EmailIdentity=domain).get("DkimAttributes", {}).get("Tokens") or []
        stack.known[logical_id] = {
            **{f"DkimDNSTokenName{i + 1}": f"{tok}._domainkey.{domain}" for i, tok in enumerate(tokens[:3])},
            **{f"DkimDNSTokenValue{i + 1}": f"{tok}.dkim.amazonses.com" for i, tok in enumerate(tokens[:3])},
        }
        identities.append(domain)
    for identity in identities:
        if identity not in [stack.ref(lid) for lid in stack.of_type("AWS::SES::EmailIdentity")]:
            ses.create_email_identity(EmailIdentity=identity)
    # moto sends only as a verified address; SES itself sends as the verified domain, and IAM checks that.
    ses.create_email_identity(EmailIdentity=stack.values["EmailSender"])
    proxy.ses_identities = identities
    for logical_id in stack.of_type("AWS::SES::ConfigurationSet"):
        ses.create_configuration_set(ConfigurationSetName=stack.ref(logical_id))
    # moto has no event destinations: the deployment keeps them and `publish_ses` follows them.
    for logical_id in stack.of_type("AWS::SES::ConfigurationSetEventDestination"):
        p = stack.properties(logical_id)
        destination = p["EventDestination"]
        if not destination.get("Enabled", False) in (True, "true"):
            continue
        bridge_destination = destination.get("EventBridgeDestination")
        if bridge_destination is None:
            raise cfn.TemplateError(f"{logical_id}: only EventBridge destinations are modelled")
        types = {str(x).lower().replace("_", "") for x in destination["MatchingEventTypes"]}
        dep.ses_destinations.setdefault(p["ConfigurationSetName"], []).append((bridge_destination["EventBusArn"], types))
    for logical_id in stack.of_type("AWS::Events::Rule"):
        p = stack.properties(logical_id)
        rule_name = stack.physical_name(logical_id)
        bus = p.get("EventBusName", "default")
        bridge.put_rule(Name=rule_name, EventBusName=bus, EventPattern=json.dumps(p["EventPattern"]), State="ENABLED")
        for target in p["Targets"]:
            queue_name = f"{rule_name}-{target['Id']}"[:80]
            url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            bridge.put_targets(Rule=rule_name, EventBusName=bus, Targets=[{"Id": target["Id"], "Arn": queue_arn}])
            dep.rules.append(Rule(logical_id, stack.getatt(logical_id, "Arn"), url, target["Arn"]))
    # The harness's own rule: what training-export announces, to check it against the template's rules.
    observer = f"{name}-observer"
    bus = stack.ref("EventBus")
    bridge.put_rule(Name=observer, EventBusName=bus, EventPattern=json.dumps({"source": ["svc.training-export"]}))
    url = sqs.create_queue(QueueName=observer)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bridge.put_targets(Rule=observer, EventBusName=bus, Targets=[{"Id": "observer", "Arn": queue_arn}])
    dep.rules.append(Rule("observer", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{bus}/{observer}", url, OBSERVER))
    for logical_id in stack.of_type("AWS::IAM::Role"):
        if logical_id == "ApiGatewayCloudWatchRole":
            continue  # an AWS managed policy; API Gateway's logging is not part of the story
        callers[f"role:{logical_id}"] = Caller(f"role {logical_id}", logical_id, stack.role_policies(logical_id))
    callers[STANDIN_ACCESS_KEY] = Caller(
        "Personalize (import)", "PersonalizeImportRole", stack.role_policies("PersonalizeImportRole")
    )
    dep.start_functions()
    dep.start_pump()
    return dep


def _create_personalize(stack: cfn.Stack, backends: Backends) -> None:
    """CloudFormation's Personalize resources, created in the stand-in with the template's properties."""
    control = boto("personalize", backends.standin)

    def wait(describe, key):
        for _ in range(20):
            resource = describe()[key]
            if resource["status"] == "ACTIVE":
                return
        raise AssertionError(f"{key} never became ACTIVE")

    for logical_id in stack.of_type("AWS::Personalize::DatasetGroup"):
        arn = control.create_dataset_group(name=stack.properties(logical_id)["Name"])["datasetGroupArn"]
        wait(lambda: control.describe_dataset_group(datasetGroupArn=arn), "datasetGroup")
        stack.known[logical_id] = {"DatasetGroupArn": arn}
    for logical_id in stack.of_type("AWS::Personalize::Schema"):
        p = stack.properties(logical_id)
        stack.known[logical_id] = {"SchemaArn": control.create_schema(name=p["Name"], schema=p["Schema"])["schemaArn"]}
    for logical_id in stack.of_type("AWS::Personalize::Dataset"):
        p = stack.properties(logical_id)
        arn = control.create_dataset(
            name=p["Name"], datasetType=p["DatasetType"], datasetGroupArn=p["DatasetGroupArn"], schemaArn=p["SchemaArn"]
        )["datasetArn"]
        wait(lambda: control.describe_dataset(datasetArn=arn), "dataset")
        stack.known[logical_id] = {"DatasetArn": arn}
    for logical_id in stack.of_type("AWS::Personalize::Solution"):
        p = stack.properties(logical_id)
        arn = control.create_solution(
            name=p["Name"], datasetGroupArn=p["DatasetGroupArn"], recipeArn=p["RecipeArn"],
            performHPO=bool(p.get("PerformHPO", False)),
        )["solutionArn"]
        wait(lambda: control.describe_solution(solutionArn=arn), "solution")
        stack.known[logical_id] = {"SolutionArn": arn}


def update(dep: Deployment, parameters: dict[str, str]) -> None:
    """A stack update that changes parameters only: the functions get their new configuration (new
    instances), the roles their new statements; the data stays."""
    stack = cfn.Stack(dep.stack.name, dep.stack.template, {**dep.stack.parameters, **parameters}, dep.stack.known)
    dep.stack = stack
    for logical_id in stack.of_type("AWS::IAM::Role"):
        if logical_id == "ApiGatewayCloudWatchRole":
            continue
        dep.callers[f"role:{logical_id}"] = Caller(f"role {logical_id}", logical_id, stack.role_policies(logical_id))
    dep.start_functions()
