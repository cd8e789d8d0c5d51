"""Runs the SAM transform over infra/template.yaml, as CloudFormation will at deploy time.

`sam validate --lint` accepted a template whose GatewayResponses the transform then refused, so this
check translates the template itself (with placeholder CodeUris, which `sam build` fills in) for a
deployment with and without CORS origins, fails on any error the transform reports, and checks that
API Gateway's own 4xx/5xx answers carry the first CORS origin.

    .venv-infra/bin/python infra/checks/sam_transform.py [infra/template.yaml]
"""

from __future__ import annotations

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The template names no AWS managed policies; the transform need not look any up."""

    def load(self) -> dict:
        return {}


def translate(path: str, parameters: dict) -> dict:
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder-bucket/placeholder-key"
    return transform(template, parameters, NoManagedPolicies())


def main() -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "ap-southeast-1")
    path = sys.argv[1] if len(sys.argv) > 1 else "infra/template.yaml"
    failures = []
    for parameters in ({}, {"CorsOrigins": "https://app.example.edu,https://admin.example.edu"}):
        try:
            out = translate(path, parameters)
        except Exception as e:  # the transform reports every problem in one exception
            failures.append(f"the SAM transform refused the template with {parameters}: {e}")
            continue
        body = out["Resources"]["RankingApi"]["Properties"]["Body"]
        responses = body.get("x-amazon-apigateway-gateway-responses", {})
        for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
            headers = responses.get(kind, {}).get("responseParameters", {})
            origin = json.dumps(headers.get("gatewayresponse.header.Access-Control-Allow-Origin"))
            if "CorsOrigins" not in origin or "HasCors" not in origin:
                failures.append(f"{kind}: no Access-Control-Allow-Origin from CorsOrigins: {headers}")
        print(f"SAM transform with {parameters or 'defaults'}: {len(out['Resources'])} resources")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
