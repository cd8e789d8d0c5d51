"""A small evaluator of IAM identity policies, for the stack harness.

The harness records every AWS request a function makes and asks, for each authorization check the request
implies (see `authz.py`), whether that function's role, as infra/template.yaml deploys it, would allow it.
moto does not enforce IAM for us, so without this a missing grant only shows up in a real deployment.

What it covers is what our templates and the requests of our functions need, following the IAM reference
(policy evaluation logic, condition operators) rather than anything looser:

* Effect Allow/Deny; an explicit Deny beats any Allow; nothing allowing means an implicit deny.
* Action / NotAction: case-insensitive, with `*` and `?` wildcards.
* Resource / NotResource: case-sensitive wildcards. ARNs are compared component by component (partition,
  service, region, account, resource), as IAM does: a wildcard in the region never spans a `:`, while in
  the resource part `*` runs across `/` and `:` (so `arn:aws:logs:r:a:log-group:g:*` covers the group's
  streams, and `table/T` does not cover `table/T/index/I`).
* Condition: the String*, Arn*, Numeric*, Bool, IpAddress and Null operators, the `...IfExists` suffix and
  the `ForAnyValue:` / `ForAllValues:` set operators. Keys in a block AND, values for a key OR; context
  keys are case-insensitive, values are not (except in the IgnoreCase operators).
* A key missing from the request context makes the condition false, except (as the IAM reference says):
  `...IfExists` and `ForAllValues:` are true, a negated operator (StringNotEquals, ArnNotLike, ...) is
  true, and Null tests exactly that.

No policy variables, no resource policies, boundaries or SCPs: our functions only use identity policies.
What it cannot read it refuses with `PolicyError` rather than guess: an unresolved intrinsic or `${...}`
(a policy variable, or a Fn::Sub left over), an ARN pattern of fewer than six components, an unknown
condition operator, two policies of one name or two statements of one Sid.

Policies are given as a list of either `{"PolicyName": ..., "PolicyDocument": {...}}` (the shape of an
AWS::IAM::Role's `Policies`, after intrinsics are resolved) or bare documents (named `#0`, `#1`, ... by
their position). A statement is addressed as `policy/Sid`, or `policy/#index` when it has no Sid, and,
with the role's name in front, `Role/policy/Sid`: that is how `statements` and `without` name them, so a
canary can take one grant away and check that the request it covers is then refused.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

ContextValue = str | Sequence[str]
Context = Mapping[str, ContextValue]
Reason = Literal["explicit deny", "allowed", "implicit deny"]


class PolicyError(ValueError):
    """A policy the evaluator cannot read: better to stop than to guess what IAM would do with it."""


@dataclass(frozen=True)
class StatementRef:
    """One statement and where it lives: `policy` is the policy's name, `label` its Sid or `#index`."""

    policy: str
    label: str
    statement: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.policy}/{self.label}"

    @property
    def effect(self) -> str:
        return str(self.statement.get("Effect", ""))

    def __str__(self) -> str:
        return f"{self.id} ({self.effect})"


@dataclass(frozen=True)
class Decision:
    """The outcome of `evaluate`.

    `matched` holds the statements that decided: the Deny statements that apply when the reason is an
    explicit deny, otherwise the Allow statements that apply (none for an implicit deny). `consulted` holds
    every statement that was looked at, so a report can show what was there when nothing matched."""

    allowed: bool
    reason: Reason
    matched: tuple[StatementRef, ...]
    consulted: tuple[StatementRef, ...]

    def describe(self) -> str:
        if self.matched:
            return f"{self.reason} by {', '.join(ref.id for ref in self.matched)}"
        return f"{self.reason}: none of {len(self.consulted)} statements applies"


def evaluate(policies: Sequence[Mapping[str, Any]], action: str, resource: str, context: Context) -> Decision:
    """Would a principal with these identity policies be allowed `action` on `resource`, with `context`
    as the request context? Explicit deny > allow > implicit deny, as IAM's evaluation logic."""
    ctx = _normalise_context(context)
    consulted: list[StatementRef] = []
    allows: list[StatementRef] = []
    denies: list[StatementRef] = []
    for ref in _refs(policies):
        consulted.append(ref)
        if _applies(ref, action, resource, ctx):
            (denies if ref.effect == "Deny" else allows).append(ref)
    if denies:
        return Decision(False, "explicit deny", tuple(denies), tuple(consulted))
    if allows:
        return Decision(True, "allowed", tuple(allows), tuple(consulted))
    return Decision(False, "implicit deny", (), tuple(consulted))


def statements(role_name: str, policies: Sequence[Mapping[str, Any]]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every statement of a role as (`Role/policy/Sid`, statement): the units a canary can remove."""
    for ref in _refs(policies):
        yield f"{role_name}/{ref.id}", ref.statement


def without(policies: Sequence[Mapping[str, Any]], statement_id: str) -> list[dict[str, Any]]:
    """A deep copy of `policies` with exactly one statement removed, named `policy/Sid` (or `policy/#i`),
    optionally with the role's name in front as `statements` gives it. An id that names nothing is an
    error: a canary that removes nothing would pass for the wrong reason."""
    parts = statement_id.split("/")
    if len(parts) not in (2, 3):
        raise KeyError(f"not a statement id (Role/policy/Sid or policy/Sid): {statement_id!r}")
    wanted = "/".join(parts[-2:])
    result = [copy.deepcopy(dict(p)) for p in policies]
    for name, document in _documents(result):
        for index, (label, _) in enumerate(_labelled(name, document)):
            if f"{name}/{label}" == wanted:
                document["Statement"] = [s for i, s in enumerate(_as_list(document["Statement"])) if i != index]
                return result
    raise KeyError(f"no statement {wanted!r} in policies {[name for name, _ in _documents(result)]}")


# --- statements ------------------------------------------------------------------------------------


def _documents(policies: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, document) for each policy, whichever of the two accepted shapes it has; two policies of
    one name would make statement ids ambiguous (IAM refuses them on a role too)."""
    out = []
    for index, policy in enumerate(policies):
        if "PolicyDocument" in policy:
            out.append((str(policy.get("PolicyName", f"#{index}")), policy["PolicyDocument"]))
        elif "Statement" in policy:
            out.append((f"#{index}", policy))  # type: ignore[arg-type]
        else:
            raise PolicyError(f"policy #{index} has neither PolicyDocument nor Statement: {sorted(policy)}")
    names = [name for name, _ in out]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PolicyError(f"two policies are named {duplicates[0]!r}")
    return out


def _labelled(policy_name: str, document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(Sid or #index, statement) for one document; duplicate Sids would make ids ambiguous."""
    labelled = []
    seen: set[str] = set()
    for index, statement in enumerate(_as_list(document.get("Statement"))):
        if not isinstance(statement, Mapping):
            raise PolicyError(f"{policy_name}: statement #{index} is not an object: {statement!r}")
        label = str(statement["Sid"]) if statement.get("Sid") else f"#{index}"
        if label in seen:
            raise PolicyError(f"{policy_name}: two statements are named {label!r}")
        seen.add(label)
        labelled.append((label, statement))
    return labelled


def _refs(policies: Sequence[Mapping[str, Any]]) -> list[StatementRef]:
    return [
        StatementRef(name, label, statement)
        for name, document in _documents(policies)
        for label, statement in _labelled(name, document)
    ]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _applies(ref: StatementRef, action: str, resource: str, ctx: dict[str, list[str]]) -> bool:
    statement = ref.statement
    if ref.effect not in ("Allow", "Deny"):
        raise PolicyError(f"{ref.id}: Effect must be Allow or Deny, not {ref.effect!r}")
    if "Principal" in statement or "NotPrincipal" in statement:
        raise PolicyError(f"{ref.id}: a Principal belongs in a resource or trust policy, not an identity policy")
    return (
        _element_matches(ref, statement, "Action", action, _action_matches)
        and _element_matches(ref, statement, "Resource", resource, resource_matches)
        and _conditions_hold(ref, statement.get("Condition"), ctx)
    )


def _element_matches(ref: StatementRef, statement: Mapping[str, Any], element: str, value: str, match) -> bool:
    """`Action`/`NotAction` (or `Resource`/`NotResource`): exactly one of the pair, matched or not."""
    positive, negative = statement.get(element), statement.get(f"Not{element}")
    if (positive is None) == (negative is None):
        raise PolicyError(f"{ref.id}: needs exactly one of {element} and Not{element}")
    patterns = _as_list(positive if positive is not None else negative)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise PolicyError(f"{ref.id}: {element} entries must be strings (unresolved intrinsic?): {pattern!r}")
        _no_variables(ref, pattern)
    hit = any(match(pattern, value) for pattern in patterns)
    return hit if positive is not None else not hit


def _no_variables(ref: StatementRef, value: str) -> None:
    """`${...}` is a policy variable (or a Fn::Sub left unresolved): neither is something to match literally."""
    if "${" in value:
        raise PolicyError(f"{ref.id}: policy variables are not supported (unresolved Fn::Sub?): {value!r}")


# --- wildcards -------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: `*` any run of characters (including none), `?` exactly one; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def like(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Does `value` match `pattern` with IAM wildcards?"""
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


def _action_matches(pattern: str, action: str) -> bool:
    return like(pattern, action, ignore_case=True)


def resource_matches(pattern: str, arn: str) -> bool:
    """IAM's ARN matching: the six `:`-separated components one by one (the last, the resource, keeps any
    further colons), each with wildcards; a pattern that is not an ARN (`*`) is matched as a string.

    A pattern that starts like an ARN but has fewer than six components (`arn:aws:dynamodb:us-*`) is an
    error: matched as a string its `*` would run across components, which IAM never does."""
    if pattern == "*":
        return True
    pattern_parts, arn_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(pattern_parts) != 6 and pattern.startswith("arn:"):
        raise PolicyError(f"not a whole ARN (IAM compares ARNs component by component): {pattern!r}")
    if len(pattern_parts) != 6 or len(arn_parts) != 6:
        return like(pattern, arn)
    return all(like(p, a) for p, a in zip(pattern_parts, arn_parts))


# --- conditions ------------------------------------------------------------------------------------


def _normalise_context(context: Context) -> dict[str, list[str]]:
    """Keys lower-cased (IAM condition keys are case-insensitive), every value a list of strings; a key
    whose value is None is left out, as absent from the request."""
    out: dict[str, list[str]] = {}
    for key, value in context.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, bool, int, float)) else list(value)
        out[key.lower()] = [_policy_string(v) for v in values]
    return out


def _policy_string(value: Any) -> str:
    """Policy JSON may carry `true` or `3` unquoted; IAM compares their string forms."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _numeric(a: str, b: str, compare) -> bool:
    try:
        return compare(float(a), float(b))
    except ValueError:
        return False


def _ip(value: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# Base operator → (does one context value match one policy value?, is the operator negated?). A negated
# operator is true when its positive form matches none of the policy values.
_OPERATORS: dict[str, tuple[Any, bool]] = {
    "stringequals": (lambda v, p: v == p, False),
    "stringnotequals": (lambda v, p: v == p, True),
    "stringequalsignorecase": (lambda v, p: v.lower() == p.lower(), False),
    "stringnotequalsignorecase": (lambda v, p: v.lower() == p.lower(), True),
    "stringlike": (lambda v, p: like(p, v), False),
    "stringnotlike": (lambda v, p: like(p, v), True),
    # ArnEquals and ArnLike are the same test in IAM, both with wildcards.
    "arnequals": (lambda v, p: resource_matches(p, v), False),
    "arnlike": (lambda v, p: resource_matches(p, v), False),
    "arnnotequals": (lambda v, p: resource_matches(p, v), True),
    "arnnotlike": (lambda v, p: resource_matches(p, v), True),
    "bool": (lambda v, p: v.lower() == p.lower(), False),
    "numericequals": (lambda v, p: _numeric(v, p, lambda a, b: a == b), False),
    "numericnotequals": (lambda v, p: _numeric(v, p, lambda a, b: a == b), True),
    "numericlessthan": (lambda v, p: _numeric(v, p, lambda a, b: a < b), False),
    "numericlessthanequals": (lambda v, p: _numeric(v, p, lambda a, b: a <= b), False),
    "numericgreaterthan": (lambda v, p: _numeric(v, p, lambda a, b: a > b), False),
    "numericgreaterthanequals": (lambda v, p: _numeric(v, p, lambda a, b: a >= b), False),
    "ipaddress": (_ip, False),
    "notipaddress": (_ip, True),
}


@dataclass(frozen=True)
class _Operator:
    name: str
    match: Any
    negated: bool
    if_exists: bool
    set_operator: Literal["", "foranyvalue", "forallvalues"]


@lru_cache(maxsize=256)
def _operator(name: str) -> _Operator:
    """`[ForAnyValue:|ForAllValues:]Base[IfExists]`, or `Null`."""
    base = name.lower()
    set_operator: Literal["", "foranyvalue", "forallvalues"] = ""
    for prefix in ("foranyvalue", "forallvalues"):
        if base.startswith(prefix + ":"):
            set_operator, base = prefix, base[len(prefix) + 1 :]  # type: ignore[assignment]
    if_exists = base.endswith("ifexists") and base != "ifexists"
    if if_exists:
        base = base[: -len("ifexists")]
    if base == "null":
        if if_exists or set_operator:
            raise PolicyError(f"condition operator {name!r}: Null takes neither IfExists nor a set operator")
        return _Operator(name, None, False, False, "")
    if base not in _OPERATORS:
        raise PolicyError(f"condition operator {name!r} is not supported by this evaluator")
    match, negated = _OPERATORS[base]
    return _Operator(name, match, negated, if_exists, set_operator)


def _conditions_hold(ref: StatementRef, block: Any, ctx: dict[str, list[str]]) -> bool:
    if block is None:
        return True
    if not isinstance(block, Mapping):
        raise PolicyError(f"{ref.id}: Condition must be an object: {block!r}")
    for operator_name, keys in block.items():
        operator = _operator(operator_name)
        if not isinstance(keys, Mapping):
            raise PolicyError(f"{ref.id}: {operator_name} must map condition keys to values: {keys!r}")
        for key, wanted in keys.items():
            policy_values = [_policy_string(v) for v in _as_list(wanted)]
            for value, raw in zip(policy_values, _as_list(wanted)):
                if not isinstance(raw, (str, bool, int, float)):
                    raise PolicyError(f"{ref.id}: {operator_name} {key}: values must be scalars (unresolved intrinsic?): {raw!r}")
                _no_variables(ref, value)
            if not _condition_holds(operator, policy_values, ctx.get(key.lower())):
                return False
    return True


def _condition_holds(operator: _Operator, policy_values: list[str], values: list[str] | None) -> bool:
    """One key under one operator; `values` is None when the key is not in the request context."""
    if operator.match is None:  # Null: "true" means the key must be absent, "false" present.
        return any((values is None) == (p.lower() == "true") for p in policy_values)
    if values is None:
        if operator.if_exists or operator.set_operator == "forallvalues":
            return True
        if operator.set_operator == "foranyvalue":
            return False
        return operator.negated

    def value_passes(value: str) -> bool:
        hit = any(operator.match(value, p) for p in policy_values)
        return not hit if operator.negated else hit

    if operator.set_operator == "forallvalues":
        return all(value_passes(v) for v in values)
    if operator.set_operator == "foranyvalue":
        return any(value_passes(v) for v in values)
    # A multivalued key without a set operator: a positive operator wants some value to match, a negated
    # one wants no value to match (its positive form fails for every value).
    if operator.negated:
        return all(value_passes(v) for v in values)
    return any(value_passes(v) for v in values)
