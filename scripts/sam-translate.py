#!/usr/bin/env python3
"""Run the real SAM transform on a template, offline.

    sam-translate.py infra/template.yaml [OUT.json]

cfn-lint validates a SAM template against SAM's schemas; this goes further
and expands it with aws-sam-translator (the code CloudFormation runs for
`Transform: AWS::Serverless-2016-10-31`), so the plain CloudFormation that
AWS would deploy can be linted too. No AWS call is made: the template uses
no SAM policy templates or managed-policy names that would need a lookup.
"""

import json
import os
import re
import sys

# The transform fills in pseudo parameters (AWS::Region) from a boto session;
# give it a region and keep it off the instance metadata endpoint.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import yaml
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation short-form tags as long form."""


def _construct(tag_name):
    long_name = "Fn::" + tag_name if tag_name not in ("Ref", "Condition") else tag_name

    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag_name == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {long_name: value}

    return construct


for _tag in (
    "Ref", "Condition", "GetAtt", "Sub", "Join", "If", "Equals", "Not", "And", "Or",
    "FindInMap", "Select", "Split", "ImportValue", "GetAZs", "Base64", "Cidr",
):
    _CfnLoader.add_constructor("!" + _tag, _construct(_tag))


def check_dashboards(template) -> list:
    """A dashboard body is JSON inside a string: CloudFormation won't parse it
    until deploy time, so parse it here with every ${...} replaced by 1."""
    errors = []
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::CloudWatch::Dashboard":
            continue
        body = resource.get("Properties", {}).get("DashboardBody")
        if isinstance(body, dict) and "Fn::Sub" in body:
            body = body["Fn::Sub"]
            body = body[0] if isinstance(body, list) else body
        if not isinstance(body, str):
            continue
        try:
            json.loads(re.sub(r"\$\{[^}]+\}", "1", body))
        except json.JSONDecodeError as e:
            errors.append(f"{name}: DashboardBody is not valid JSON: {e}")
    return errors


class _NoManagedPolicies:
    def load(self):
        return {}


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        template = yaml.load(f, Loader=_CfnLoader)
    # `sam deploy` uploads local CodeUri directories to S3 before the
    # transform runs; stand in for that with a placeholder object.
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        code = props.get("CodeUri")
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(code, str) and not code.startswith("s3://"):
            props["CodeUri"] = f"s3://sundial-artifacts-placeholder/{name}.zip"
    errors = check_dashboards(template)
    for error in errors:
        print(f"[sam] {error}", file=sys.stderr)
    if errors:
        return 1
    try:
        output = transform(template, {}, _NoManagedPolicies())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"[sam] {cause.message}", file=sys.stderr)
        return 1
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            json.dump(output, f, indent=1)
    kinds = sorted({r["Type"] for r in output["Resources"].values()})
    print(f"[sam] transform ok: {len(output['Resources'])} resources ({', '.join(kinds)})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
