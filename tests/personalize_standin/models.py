"""The official Personalize service models, read from the installed botocore, and a strict validator.

Nothing here is copied from the models: operations, routes, shapes and declared errors all come from
`botocore/data/personalize*/*/service-2.json` of whatever botocore is installed, so a newer botocore
brings newer rules with it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.validate import ParamValidator, ValidationErrors

# The three Personalize APIs, by botocore service name.
CONTROL_PLANE = "personalize"
RUNTIME = "personalize-runtime"
EVENTS = "personalize-events"
SERVICES = (CONTROL_PLANE, RUNTIME, EVENTS)

# Java regex classes that Python's `re` lacks. The models use them only in tag and token patterns; the
# Python forms below are a little more permissive (e.g. `\w` also admits `_`, which those classes list
# anyway).
_JAVA_CLASS_TRANSLATIONS = {
    r"\p{ASCII}": r"\x00-\x7F",
    r"\p{L}": r"\w",
    r"\p{N}": r"\d",
    r"\p{Z}": r"\s",
}


def _python_pattern(java_pattern: str) -> re.Pattern[str]:
    out = []
    in_class = False
    i = 0
    while i < len(java_pattern):
        for java, python in _JAVA_CLASS_TRANSLATIONS.items():
            if java_pattern.startswith(java, i):
                # Inside [...] the class's content joins it; outside it needs brackets of its own.
                out.append(python if in_class else f"[{python}]")
                i += len(java)
                break
        else:
            char = java_pattern[i]
            if char == "\\":
                out.append(java_pattern[i : i + 2])
                i += 2
                continue
            if char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            out.append(char)
            i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class Violation:
    """One way a message broke the model: where, what rule, and a Coral-style message."""

    path: str
    rule: str
    message: str

    def as_dict(self) -> dict:
        return {"path": self.path, "rule": self.rule, "message": self.message}


class StrictValidator(ParamValidator):
    """botocore's ParamValidator plus what botocore leaves to the service.

    botocore checks types, required and unknown members and `min`; it does not check `max`, `enum` or
    `pattern` (the service does). A stand-in must, or a client that breaks them would pass here and fail
    in AWS. It also checks values as they are on the JSON wire: timestamps are epoch-second numbers,
    blobs are base64 text, and a JSON `true` is not an integer.

    `check_patterns=False` is used for responses: the models' output patterns are not honoured by the
    real service (e.g. `DatasetImportJob.roleArn` carries an IAM role ARN although its shape `Arn` has
    the `...:personalize:...` pattern), so checking them would reject faithful answers.
    """

    def __init__(self, check_patterns: bool = True):
        super().__init__()
        self._check_patterns = check_patterns
        self._patterns: dict[str, re.Pattern[str]] = {}

    def _pattern(self, pattern: str) -> re.Pattern[str]:
        compiled = self._patterns.get(pattern)
        if compiled is None:
            compiled = self._patterns[pattern] = _python_pattern(pattern)
        return compiled

    @staticmethod
    def _max_check(name, value, shape, rule, errors):
        max_allowed = shape.metadata.get("max")
        if max_allowed is not None and value > max_allowed:
            errors.report(name, rule, param=value, max_allowed=max_allowed)

    def _validate_string(self, param, shape, errors, name):
        if not isinstance(param, str):
            errors.report(name, "invalid type", param=param, valid_types=[str(str)])
            return
        super()._validate_string(param, shape, errors, name)
        self._max_check(name, len(param), shape, "too long", errors)
        if shape.enum and param not in shape.enum:
            errors.report(name, "not in enum", param=param, enum=list(shape.enum))
        pattern = shape.metadata.get("pattern")
        if self._check_patterns and pattern and not self._pattern(pattern).search(param):
            # Smithy patterns are not implicitly anchored: the models add ^ and $ where they mean it.
            errors.report(name, "pattern mismatch", param=param, pattern=pattern)

    def _validate_list(self, param, shape, errors, name):
        if not isinstance(param, list):
            errors.report(name, "invalid type", param=param, valid_types=[str(list)])
            return
        from botocore.validate import range_check

        range_check(name, len(param), shape, "invalid length", errors)
        self._max_check(name, len(param), shape, "too many", errors)
        # botocore only type-checks members without min/required; we check every member fully.
        for i, item in enumerate(param):
            self._validate(item, shape.member, errors, f"{name}[{i}]")

    def _validate_map(self, param, shape, errors, name):
        if not isinstance(param, dict):
            errors.report(name, "invalid type", param=param, valid_types=[str(dict)])
            return
        from botocore.validate import range_check

        range_check(name, len(param), shape, "invalid length", errors)
        self._max_check(name, len(param), shape, "too many", errors)
        super()._validate_map(param, shape, errors, name)

    def _numeric(self, param, shape, errors, name, types):
        # JSON true/false parse to bool, which Python counts as int: the wire says otherwise.
        if isinstance(param, bool) or not isinstance(param, types):
            errors.report(name, "invalid type", param=param, valid_types=[str(t) for t in types])
            return
        from botocore.validate import range_check

        range_check(name, param, shape, "invalid range", errors)
        self._max_check(name, param, shape, "above max", errors)

    def _validate_integer(self, param, shape, errors, name):
        self._numeric(param, shape, errors, name, (int,))

    def _validate_long(self, param, shape, errors, name):
        self._numeric(param, shape, errors, name, (int,))

    def _validate_double(self, param, shape, errors, name):
        self._numeric(param, shape, errors, name, (int, float))

    _validate_float = _validate_double

    def _validate_boolean(self, param, shape, errors, name):
        if not isinstance(param, bool):
            errors.report(name, "invalid type", param=param, valid_types=[str(bool)])

    def _validate_timestamp(self, param, shape, errors, name):
        # awsJson1_1 and restJson1 bodies carry timestamps as epoch seconds (a JSON number).
        if isinstance(param, bool) or not isinstance(param, (int, float)):
            errors.report(name, "invalid type", param=param, valid_types=["epoch-seconds number"])

    def _validate_blob(self, param, shape, errors, name):
        if not isinstance(param, str):
            errors.report(name, "invalid type", param=param, valid_types=["base64 string"])
            return
        try:
            base64.b64decode(param, validate=True)
        except (binascii.Error, ValueError):
            errors.report(name, "invalid type", param=param, valid_types=["base64 string"])

    def violations(self, params, shape: Shape | None) -> list[Violation]:
        if shape is None:
            if params:
                return [Violation("", "unknown field", "the operation takes no input")]
            return []
        errors = ValidationErrors()
        self._validate(params, shape, errors, name="")
        return [_describe(err) for err in errors._errors]


def _path(name: str) -> str:
    return name[1:] if name.startswith(".") else (name or "input")


_PYTHON_TO_WIRE = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "dict": "object",
    "list": "array",
    "Decimal": "number",
}


def _type_name(python_type: str) -> str:
    match = re.match(r"<class '(?:\w+\.)*(\w+)'>", python_type)
    return _PYTHON_TO_WIRE.get(match[1], match[1]) if match else python_type


def _describe(error) -> Violation:
    """A Coral-style message, as the real service words its validation errors."""
    rule, name, extra = error
    path = _path(name)
    value = extra.get("param")
    shown = value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "..."
    if rule == "missing required field":
        required = extra["required_name"]
        full = f"{path}.{required}" if name else required
        return Violation(full, rule, f"Value null at '{full}' failed to satisfy constraint: Member must not be null")
    if rule == "unknown field":
        unknown = extra["unknown_param"]
        full = f"{path}.{unknown}" if name else unknown
        return Violation(
            full,
            rule,
            f"Unknown member '{full}'; the model allows: {', '.join(extra['valid_names'])}",
        )
    if rule == "invalid type":
        return Violation(
            path,
            rule,
            f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must be of type "
            f"{' or '.join(_type_name(t) for t in extra['valid_types'])}",
        )
    if rule == "invalid length":
        return Violation(
            path,
            rule,
            f"Value at '{path}' failed to satisfy constraint: Member must have length greater than or "
            f"equal to {extra['min_allowed']}",
        )
    if rule in ("too long", "too many"):
        return Violation(
            path,
            rule,
            f"Value at '{path}' failed to satisfy constraint: Member must have length less than or "
            f"equal to {extra['max_allowed']}",
        )
    if rule == "invalid range":
        return Violation(
            path,
            rule,
            f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must have value greater "
            f"than or equal to {extra['min_allowed']}",
        )
    if rule == "above max":
        return Violation(
            path,
            rule,
            f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must have value less "
            f"than or equal to {extra['max_allowed']}",
        )
    if rule == "not in enum":
        return Violation(
            path,
            rule,
            f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy enum value "
            f"set: [{', '.join(extra['enum'])}]",
        )
    if rule == "pattern mismatch":
        return Violation(
            path,
            rule,
            f"Value '{shown}' at '{path}' failed to satisfy constraint: Member must satisfy regular "
            f"expression pattern: {extra['pattern']}",
        )
    return Violation(path, rule, f"{rule} at '{path}': {extra}")


def coral_message(violations: list[Violation]) -> str:
    count = len(violations)
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun} detected: " + "; ".join(v.message for v in violations)


@dataclass
class Route:
    service: str
    operation: OperationModel


@dataclass
class Catalog:
    """Every operation of the three APIs, found by `X-Amz-Target` or by REST route."""

    models: dict[str, ServiceModel]
    by_target: dict[str, OperationModel] = field(default_factory=dict)
    by_route: dict[tuple[str, str], Route] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Catalog:
        session = botocore.session.get_session()
        models = {name: session.get_service_model(name) for name in SERVICES}
        catalog = cls(models)
        control = models[CONTROL_PLANE]
        prefix = control.metadata["targetPrefix"]
        for name in control.operation_names:
            catalog.by_target[f"{prefix}.{name}"] = control.operation_model(name)
        for service in (RUNTIME, EVENTS):
            model = models[service]
            for name in model.operation_names:
                op = model.operation_model(name)
                method = op.http["method"].upper()
                uri = op.http["requestUri"]
                if "{" in uri or "?" in uri:
                    # None of the Personalize REST operations binds members to the path or query;
                    # refuse to guess if a future model does.
                    raise RuntimeError(f"{service}.{name}: route {uri} has labels; not supported")
                catalog.by_route[(method, uri)] = Route(service, op)
        return catalog

    def protocol(self, service: str) -> str:
        return self.models[service].metadata["protocol"]

    def target_prefix(self) -> str:
        return self.models[CONTROL_PLANE].metadata["targetPrefix"]

    def error_shape(self, service: str, code: str) -> Shape | None:
        try:
            shape = self.models[service].shape_for(code)
        except Exception:  # botocore raises NoShapeFoundError
            return None
        return shape if shape.metadata.get("exception") else None

    def error_status(self, service: str, code: str, default: int = 400) -> int:
        shape = self.error_shape(service, code)
        if shape is None:
            return default
        return shape.metadata.get("error", {}).get("httpStatusCode", default)
