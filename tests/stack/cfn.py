"""The SAM-transformed `infra/template.yaml`, resolved the way CloudFormation would resolve it for one
deployment: parameters (defaults and the deployment's values), pseudo parameters, conditions, and the
intrinsics the template uses (Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Join, Fn::Select, Fn::Split, Fn::Equals,
Fn::Not, Fn::And, Fn::Or, AWS::NoValue).

Physical names are made the way CloudFormation makes them (`<stack>-<LogicalId>-<suffix>` when the
template names nothing), and each resource's `Ref` and attributes are the ARNs and ids AWS would return,
so that the functions' environments, the roles' policies and the harness's checks all speak of the same
resources. Personalize resources are the exception: their ARNs come from the stand-in, which creates
them (`StackResources.personalize`), as CloudFormation would ask the service to.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"

NO_VALUE = object()


class TemplateError(ValueError):
    """Something in the template this resolver does not understand: better to stop than to guess."""


def _suffix(stack: str, logical_id: str) -> str:
    return hashlib.sha256(f"{stack}/{logical_id}".encode()).hexdigest()[:12].upper()


@dataclass
class Stack:
    """One deployment of the transformed template."""

    name: str
    template: dict[str, Any]
    parameters: dict[str, str]
    # Attributes CloudFormation learns from services (Personalize ARNs), by logical id.
    known: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = self.template.get("Parameters", {})
        unknown = set(self.parameters) - set(declared)
        if unknown:
            raise TemplateError(f"parameters the template does not declare: {sorted(unknown)}")
        values = {}
        for name, spec in declared.items():
            if name in self.parameters:
                values[name] = str(self.parameters[name])
            elif "Default" in spec:
                values[name] = str(spec["Default"])
            else:
                raise TemplateError(f"parameter {name} has no default and no value")
            pattern = spec.get("AllowedPattern")
            if pattern and not re.fullmatch(pattern, values[name]):
                raise TemplateError(f"parameter {name}={values[name]!r} does not match {pattern}")
            allowed = spec.get("AllowedValues")
            if allowed and values[name] not in [str(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={values[name]!r} is not one of {allowed}")
        self.values = values
        self.conditions: dict[str, bool] = {}
        for name in self.template.get("Conditions", {}):
            self.condition(name)

    # ---- resources ---------------------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources this deployment creates (conditional ones whose condition is false left out)."""
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}

    def properties(self, logical_id: str) -> dict[str, Any]:
        """A resource's properties with every intrinsic resolved."""
        resource = self.template["Resources"][logical_id]
        return self.resolve(resource.get("Properties", {}))

    def physical_name(self, logical_id: str) -> str:
        resource = self.template["Resources"][logical_id]
        props = resource.get("Properties", {})
        kind = resource["Type"]
        name_property = {
            "AWS::DynamoDB::Table": "TableName",
            "AWS::S3::Bucket": "BucketName",
            "AWS::Events::EventBus": "Name",
            "AWS::Events::Rule": "Name",
            "AWS::SQS::Queue": "QueueName",
            "AWS::Lambda::Function": "FunctionName",
            "AWS::Logs::LogGroup": "LogGroupName",
            "AWS::IAM::Role": "RoleName",
            "AWS::Scheduler::Schedule": "Name",
            "AWS::SNS::Topic": "TopicName",
            "AWS::Personalize::DatasetGroup": "Name",
            "AWS::Personalize::Schema": "Name",
            "AWS::Personalize::Dataset": "Name",
            "AWS::Personalize::Solution": "Name",
            "AWS::SES::ConfigurationSet": "Name",
            "AWS::SES::EmailIdentity": "EmailIdentity",
        }.get(kind)
        if name_property and name_property in props:
            return self.resolve(props[name_property])
        generated = f"{self.name}-{logical_id}-{_suffix(self.name, logical_id)}"
        if kind == "AWS::S3::Bucket":
            return generated.lower()[:63]
        return generated[:64]

    def ref(self, logical_id: str) -> str:
        if logical_id in self.values:
            return self.values[logical_id]
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": PARTITION,
            "AWS::StackName": self.name,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{self.name}/0",
        }
        if logical_id in pseudo:
            return pseudo[logical_id]
        if logical_id == "AWS::NoValue":
            return NO_VALUE  # type: ignore[return-value]
        if logical_id not in self.template["Resources"]:
            raise TemplateError(f"Ref to {logical_id}, which is neither a parameter nor a resource")
        kind = self.template["Resources"][logical_id]["Type"]
        name = self.physical_name(logical_id)
        if kind in ("AWS::SQS::Queue",):
            return f"{{queue-url:{name}}}"  # replaced by the harness with moto's queue URL
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"
        if kind.startswith("AWS::Personalize::"):
            return self.getatt(logical_id, {
                "AWS::Personalize::DatasetGroup": "DatasetGroupArn",
                "AWS::Personalize::Schema": "SchemaArn",
                "AWS::Personalize::Dataset": "DatasetArn",
                "AWS::Personalize::Solution": "SolutionArn",
            }[kind])
        if kind == "AWS::Events::Rule":
            bus = self.resolve(self.template["Resources"][logical_id]["Properties"].get("EventBusName", "default"))
            return name if bus == "default" else f"{bus}|{name}"
        return name

    def getatt(self, logical_id: str, attribute: str) -> str:
        if logical_id in self.known and attribute in self.known[logical_id]:
            return self.known[logical_id][attribute]
        resource = self.template["Resources"].get(logical_id)
        if resource is None:
            raise TemplateError(f"Fn::GetAtt of {logical_id}, which is not a resource")
        kind = resource["Type"]
        name = self.physical_name(logical_id)
        arn = {
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::Events::EventBus": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
            "AWS::Scheduler::Schedule": f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/{name}",
            "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}",
        }
        if kind == "AWS::Events::Rule":
            bus = self.resolve(resource["Properties"].get("EventBusName", "default"))
            rule_path = name if bus == "default" else f"{bus}/{name}"
            arn[kind] = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule_path}"
        if attribute == "Arn" and kind in arn:
            return arn[kind]
        if attribute == "QueueName" and kind == "AWS::SQS::Queue":
            return name
        if kind.startswith("AWS::Personalize::"):
            raise TemplateError(
                f"{logical_id}.{attribute}: Personalize ARNs come from the stand-in; create it first (Stack.known)"
            )
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} ({kind}) is not modelled")

    # ---- conditions and intrinsics -----------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            definition = self.template.get("Conditions", {}).get(name)
            if definition is None:
                raise TemplateError(f"condition {name} is not defined")
            self.conditions[name] = bool(self._boolean(definition))
        return self.conditions[name]

    def _boolean(self, node: Any) -> bool:
        if isinstance(node, Mapping) and len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return str(a) == str(b)
            if fn == "Fn::Not":
                return not self._boolean(arg[0])
            if fn == "Fn::And":
                return all(self._boolean(x) for x in arg)
            if fn == "Fn::Or":
                return any(self._boolean(x) for x in arg)
            if fn == "Condition":
                return self.condition(arg)
        raise TemplateError(f"not a condition: {json.dumps(node)}")

    def resolve(self, node: Any) -> Any:
        """Resolves every intrinsic in `node`; `AWS::NoValue` removes the key or list item."""
        value = self._resolve(copy.deepcopy(node))
        if value is NO_VALUE:
            return None
        return value

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self._resolve(x) for x in node]
            return [x for x in items if x is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.getatt(logical_id, attribute)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::If":
                name, yes, no = arg
                return self._resolve(yes if self.condition(name) else no)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(x) for x in self._resolve(items))
            if key == "Fn::Select":
                index, items = arg
                return self._resolve(items)[int(self._resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self._resolve(text)).split(sep)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"intrinsic {key} is not modelled")
        out = {}
        for key, value in node.items():
            resolved = self._resolve(value)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self._resolve(arg[1]))

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return str(self.getatt(logical_id, attribute))
            value = self.ref(name)
            if value is NO_VALUE:
                raise TemplateError(f"Fn::Sub of AWS::NoValue in {text!r}")
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # ---- what the harness asks most --------------------------------------------------------------

    def role_policies(self, role_logical_id: str) -> list[dict[str, Any]]:
        """The role's inline policies, resolved (what the IAM evaluator is given)."""
        props = self.properties(role_logical_id)
        if props.get("ManagedPolicyArns"):
            raise TemplateError(f"{role_logical_id} has managed policies the evaluator cannot read")
        return props.get("Policies", [])

    def function_role(self, function_logical_id: str) -> str:
        """The logical id of the role a function runs with."""
        role = self.template["Resources"][function_logical_id]["Properties"]["Role"]
        if not (isinstance(role, dict) and "Fn::GetAtt" in role):
            raise TemplateError(f"{function_logical_id}'s Role is not a GetAtt of a role in the template")
        target = role["Fn::GetAtt"]
        return target[0] if isinstance(target, list) else target.split(".")[0]


def load(path: Path, name: str, parameters: Mapping[str, str]) -> Stack:
    return Stack(name=name, template=json.loads(Path(path).read_text()), parameters=dict(parameters))
