"""The identity-policy evaluator against the IAM policy evaluation rules it claims to follow.

Each test names the rule it pins; the policies are shaped like the roles in infra/template.yaml once
their intrinsics are resolved, since that is what the harness gives the evaluator.
"""

from __future__ import annotations

import pytest

from tests.stack.iam import PolicyError, evaluate, like, resource_matches, statements, without

REGION, ACCOUNT = "us-east-1", "123456789012"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/stack-interactions"
BUCKET = "arn:aws:s3:::stack-data"


def allow(action, resource, condition=None, sid=None, *, negate_action=False, negate_resource=False):
    statement = {"Effect": "Allow"}
    statement["NotAction" if negate_action else "Action"] = action
    statement["NotResource" if negate_resource else "Resource"] = resource
    if condition is not None:
        statement["Condition"] = condition
    if sid:
        statement["Sid"] = sid
    return statement


def role(*statements_, name="fn"):
    return [{"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": list(statements_)}}]


def allowed(policies, action, resource, context=None) -> bool:
    return evaluate(policies, action, resource, context or {}).allowed


# --- effect ----------------------------------------------------------------------------------------


def test_allow_matches_and_anything_else_is_an_implicit_deny():
    policies = role(allow("dynamodb:PutItem", TABLE, sid="Interactions"))
    decision = evaluate(policies, "dynamodb:PutItem", TABLE, {})
    assert decision.allowed and decision.reason == "allowed"
    assert [ref.id for ref in decision.matched] == ["fn/Interactions"]

    refused = evaluate(policies, "dynamodb:GetItem", TABLE, {})
    assert not refused.allowed and refused.reason == "implicit deny"
    assert refused.matched == () and [ref.id for ref in refused.consulted] == ["fn/Interactions"]
    assert "none of 1 statements" in refused.describe()


def test_no_policies_is_an_implicit_deny():
    assert evaluate([], "s3:GetObject", f"{BUCKET}/k", {}).reason == "implicit deny"


def test_explicit_deny_beats_any_allow_in_any_policy():
    policies = role(allow("s3:*", "*", sid="Everything")) + [
        {
            "PolicyName": "guard",
            "PolicyDocument": {
                "Statement": [{"Sid": "NoDeletes", "Effect": "Deny", "Action": "s3:Delete*", "Resource": "*"}]
            },
        }
    ]
    decision = evaluate(policies, "s3:DeleteObject", f"{BUCKET}/k", {})
    assert not decision.allowed and decision.reason == "explicit deny"
    assert [ref.id for ref in decision.matched] == ["guard/NoDeletes"]
    assert decision.describe() == "explicit deny by guard/NoDeletes"
    assert allowed(policies, "s3:GetObject", f"{BUCKET}/k")


def test_a_deny_whose_condition_fails_does_not_deny():
    policies = role(
        allow("s3:GetObject", "*"),
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    )
    assert allowed(policies, "s3:GetObject", f"{BUCKET}/k", {"aws:SecureTransport": "true"})
    assert not allowed(policies, "s3:GetObject", f"{BUCKET}/k", {"aws:SecureTransport": "false"})


def test_effect_must_be_allow_or_deny_and_principal_is_refused():
    with pytest.raises(PolicyError):
        evaluate(role({"Effect": "allow", "Action": "*", "Resource": "*"}), "s3:GetObject", "*", {})
    with pytest.raises(PolicyError):
        evaluate(role({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}), "s3:GetObject", "*", {})


# --- Action / NotAction -----------------------------------------------------------------------------


def test_actions_match_case_insensitively_with_wildcards():
    policies = role(allow(["DynamoDB:getitem", "s3:Get*", "logs:?utLogEvents"], "*"))
    assert allowed(policies, "dynamodb:GetItem", TABLE)
    assert allowed(policies, "s3:GetObject", f"{BUCKET}/k")
    assert allowed(policies, "S3:GETOBJECTVERSION", f"{BUCKET}/k")
    assert allowed(policies, "logs:PutLogEvents", "*")
    assert not allowed(policies, "s3:PutObject", f"{BUCKET}/k")
    assert not allowed(policies, "dynamodb:GetItems", TABLE)  # a whole-string match, not a prefix


def test_not_action_allows_everything_else():
    policies = role(allow(["iam:*", "s3:Delete*"], "*", negate_action=True))
    assert allowed(policies, "s3:GetObject", f"{BUCKET}/k")
    assert not allowed(policies, "s3:deleteobject", f"{BUCKET}/k")
    assert not allowed(policies, "iam:PassRole", "*")


def test_exactly_one_of_action_and_not_action():
    with pytest.raises(PolicyError):
        evaluate(role({"Effect": "Allow", "Resource": "*"}), "s3:GetObject", "*", {})
    with pytest.raises(PolicyError):
        evaluate(role({"Effect": "Allow", "Action": "*", "NotAction": "s3:*", "Resource": "*"}), "s3:GetObject", "*", {})


# --- Resource / NotResource -------------------------------------------------------------------------


def test_resource_is_case_sensitive_and_must_match_whole():
    policies = role(allow("dynamodb:*", TABLE))
    assert allowed(policies, "dynamodb:Query", TABLE)
    assert not allowed(policies, "dynamodb:Query", TABLE.upper())
    # The table's ARN does not cover its indexes (or a longer table name).
    assert not allowed(policies, "dynamodb:Query", f"{TABLE}/index/by-user")
    assert not allowed(policies, "dynamodb:Query", f"{TABLE}-old")


def test_resource_wildcards_in_the_resource_part_span_slashes_and_colons():
    assert resource_matches(f"{BUCKET}/exports/*", f"{BUCKET}/exports/2026/12/04/part-0.csv")
    assert not resource_matches(f"{BUCKET}/exports/*", f"{BUCKET}/models/current.json")
    assert not resource_matches(f"{BUCKET}/exports/*", BUCKET)  # the bucket is not one of its objects
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/fn"
    assert resource_matches(f"{group}:*", f"{group}:log-stream:2026/12/04/[$LATEST]abc")
    assert resource_matches(f"{TABLE}/index/*", f"{TABLE}/index/by-user")
    solution = f"arn:aws:personalize:{REGION}:{ACCOUNT}:solution/stack-solution"
    assert resource_matches(f"{solution}/*", f"{solution}/3f2a9c1b")
    assert resource_matches("arn:aws:personalize:*:*:dataset-import-job/stack-import-*",
                            f"arn:aws:personalize:{REGION}:{ACCOUNT}:dataset-import-job/stack-import-20261204")  # fmt: skip


def test_resource_wildcards_stay_within_their_arn_component():
    # `*` in the region matches any region, but never runs on into the account or the resource.
    assert resource_matches(f"arn:aws:dynamodb:*:{ACCOUNT}:table/T", f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/T")
    with pytest.raises(PolicyError):  # matched as a string, its `*` would span components
        resource_matches("arn:aws:dynamodb:us-*", f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/T")
    assert not resource_matches(f"arn:aws:dynamodb:*:{ACCOUNT}:table/T", f"arn:aws:dynamodb:a:b:{ACCOUNT}:table/T")
    assert resource_matches("arn:aws:s3:::stack-?ata/*", f"{BUCKET}/k")
    assert not resource_matches("arn:aws:s3:::stack-?ata/*", "arn:aws:s3:::stack-xdata/k")


def test_a_star_resource_matches_anything_even_a_non_arn():
    assert resource_matches("*", "*")
    assert resource_matches("*", TABLE)
    # ...but an ARN pattern does not match the "*" of an action that has no resource type.
    assert not resource_matches("arn:aws:s3:::*", "*")


def test_not_resource_allows_everything_but_the_named_resources():
    policies = role(allow("s3:GetObject", f"{BUCKET}/secret/*", negate_resource=True))
    assert allowed(policies, "s3:GetObject", f"{BUCKET}/models/m.json")
    assert not allowed(policies, "s3:GetObject", f"{BUCKET}/secret/key")


def test_an_empty_resource_list_matches_nothing():
    # What a `!If [cond, arn, !Ref AWS::NoValue]` list resolves to when the condition is false.
    assert not allowed(role(allow("personalize:GetRecommendations", [])), "personalize:GetRecommendations", "*")


def test_unresolved_intrinsics_and_policy_variables_are_refused():
    with pytest.raises(PolicyError):
        evaluate(role(allow("s3:GetObject", {"Fn::GetAtt": ["DataBucket", "Arn"]})), "s3:GetObject", BUCKET, {})
    with pytest.raises(PolicyError):
        evaluate(role(allow("s3:GetObject", "${DataBucket.Arn}/models/*")), "s3:GetObject", BUCKET, {})
    with pytest.raises(PolicyError):
        evaluate(
            role(allow("ses:SendEmail", "*", {"StringEquals": {"ses:FromAddress": {"Ref": "EmailSender"}}})),
            "ses:SendEmail", "*", {"ses:FromAddress": "a@b.c"},
        )  # fmt: skip


# --- conditions used by infra/template.yaml ----------------------------------------------------------

SES_IDENTITY = f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/example.org"
SENDER = "noreply@example.org"


def test_string_equals_on_ses_from_address():
    policies = role(allow("ses:SendEmail", SES_IDENTITY, {"StringEquals": {"ses:FromAddress": SENDER}}, "Email"))
    assert allowed(policies, "ses:SendEmail", SES_IDENTITY, {"ses:FromAddress": SENDER})
    assert not allowed(policies, "ses:SendEmail", SES_IDENTITY, {"ses:FromAddress": "ceo@example.org"})
    # Values are case-sensitive under StringEquals; keys are not.
    assert not allowed(policies, "ses:SendEmail", SES_IDENTITY, {"ses:FromAddress": SENDER.upper()})
    assert allowed(policies, "ses:SendEmail", SES_IDENTITY, {"SES:fromaddress": SENDER})
    # A key missing from the request makes a positive operator false.
    assert not allowed(policies, "ses:SendEmail", SES_IDENTITY, {})


def test_string_equals_on_iam_passed_to_service():
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/stack-PersonalizeImportRole-1"
    policies = role(
        allow("iam:PassRole", role_arn, {"StringEquals": {"iam:PassedToService": "personalize.amazonaws.com"}})
    )
    assert allowed(policies, "iam:PassRole", role_arn, {"iam:PassedToService": "personalize.amazonaws.com"})
    assert not allowed(policies, "iam:PassRole", role_arn, {"iam:PassedToService": "lambda.amazonaws.com"})
    assert not allowed(policies, "iam:PassRole", role_arn, {})


def test_string_equals_on_aws_source_account_and_arn_equals_on_source_arn():
    rules = [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/bus/r1", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/bus/r2"]
    policies = role(
        allow("lambda:InvokeFunction", "*", {"ArnEquals": {"aws:SourceArn": rules}}, "FromRules"),
        allow("sns:Publish", "*", {"StringEquals": {"aws:SourceAccount": ACCOUNT}}, "FromAccount"),
    )
    assert allowed(policies, "lambda:InvokeFunction", "*", {"aws:SourceArn": rules[1]})
    assert not allowed(policies, "lambda:InvokeFunction", "*", {"aws:SourceArn": rules[0] + "x"})
    assert allowed(policies, "sns:Publish", "*", {"aws:SourceAccount": ACCOUNT})
    assert not allowed(policies, "sns:Publish", "*", {"aws:SourceAccount": "210987654321"})


def test_string_like_on_s3_prefix():
    policies = role(allow("s3:ListBucket", BUCKET, {"StringLike": {"s3:prefix": ["models/*", "exports/"]}}))
    assert allowed(policies, "s3:ListBucket", BUCKET, {"s3:prefix": "models/current"})
    assert allowed(policies, "s3:ListBucket", BUCKET, {"s3:prefix": "exports/"})
    assert not allowed(policies, "s3:ListBucket", BUCKET, {"s3:prefix": "exports/2026"})
    assert not allowed(policies, "s3:ListBucket", BUCKET, {})


def test_keys_in_a_block_and_values_for_a_key_or():
    condition = {
        "StringEquals": {"events:source": ["api.ranking", "api.student"], "events:detail-type": "ranking.pipeline"}
    }
    policies = role(allow("events:PutEvents", "*", condition))
    assert allowed(policies, "events:PutEvents", "*", {"events:source": "api.student", "events:detail-type": "ranking.pipeline"})
    assert not allowed(policies, "events:PutEvents", "*", {"events:source": "api.student", "events:detail-type": "x"})
    assert not allowed(policies, "events:PutEvents", "*", {"events:source": "api.student"})


def test_operators_and_case():
    def holds(operator, policy_value, context_value):
        policies = role(allow("s3:GetObject", "*", {operator: {"k": policy_value}}))
        return allowed(policies, "s3:GetObject", "*", {"k": context_value} if context_value is not None else {})

    assert holds("StringEqualsIgnoreCase", "NoReply@Example.org", "noreply@example.ORG")
    assert holds("StringNotEquals", "a", "b") and not holds("StringNotEquals", "a", "a")
    assert holds("StringNotLike", "a*", "ba") and not holds("StringNotLike", "a*", "ab")
    assert holds("Bool", "true", "true") and holds("Bool", True, "true") and not holds("Bool", "true", "false")
    assert holds("NumericLessThan", "10", "9.5") and not holds("NumericLessThan", "10", "10")
    assert holds("NumericGreaterThanEquals", 10, "10") and not holds("NumericEquals", "10", "ten")
    assert holds("IpAddress", "10.0.0.0/8", "10.1.2.3") and holds("NotIpAddress", "10.0.0.0/8", "192.168.0.1")
    assert holds("ArnLike", "arn:aws:events:*:*:rule/*", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/bus/r")
    assert holds("ArnNotEquals", "arn:aws:events:*:*:rule/a", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/b")
    with pytest.raises(PolicyError):
        holds("DateGreaterThan", "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z")


# --- missing keys and multivalued keys -------------------------------------------------------------


@pytest.mark.parametrize(
    "operator, holds_when_missing",
    [
        ("StringEquals", False),
        ("StringLike", False),
        ("ArnEquals", False),
        ("Bool", False),
        ("NumericEquals", False),
        ("IpAddress", False),
        # The IfExists forms hold when the key is absent...
        ("StringEqualsIfExists", True),
        ("ArnLikeIfExists", True),
        ("BoolIfExists", True),
        # ...and so do the negated operators: nothing in the request matches the value.
        ("StringNotEquals", True),
        ("StringNotLike", True),
        ("ArnNotEquals", True),
        ("ArnNotLike", True),
        ("NumericNotEquals", True),
        ("NotIpAddress", True),
        # Set operators: "every value is in the set" is vacuously true, "some value is" false.
        ("ForAllValues:StringEquals", True),
        ("ForAllValues:StringLike", True),
        ("ForAnyValue:StringEquals", False),
        ("ForAnyValue:StringNotEquals", False),
    ],
)
def test_a_missing_key(operator, holds_when_missing):
    value = "arn:aws:s3:::x" if operator.startswith("Arn") else "10.0.0.0/8" if "Ip" in operator else "1"
    policies = role(allow("s3:GetObject", "*", {operator: {"some:Key": value}}))
    assert allowed(policies, "s3:GetObject", "*", {}) is holds_when_missing
    assert allowed(policies, "s3:GetObject", "*", {"some:Key": None}) is holds_when_missing  # None: absent


def test_if_exists_still_tests_a_key_that_is_present():
    policies = role(allow("ses:SendEmail", "*", {"StringEqualsIfExists": {"ses:FromAddress": SENDER}}))
    assert allowed(policies, "ses:SendEmail", "*", {"ses:FromAddress": SENDER})
    assert not allowed(policies, "ses:SendEmail", "*", {"ses:FromAddress": "other@example.org"})


def test_null_tests_presence():
    absent = role(allow("s3:GetObject", "*", {"Null": {"s3:x-amz-server-side-encryption": "true"}}))
    present = role(allow("s3:GetObject", "*", {"Null": {"s3:x-amz-server-side-encryption": False}}))
    assert allowed(absent, "s3:GetObject", "*", {})
    assert not allowed(absent, "s3:GetObject", "*", {"s3:x-amz-server-side-encryption": "AES256"})
    assert allowed(present, "s3:GetObject", "*", {"s3:x-amz-server-side-encryption": "AES256"})
    assert not allowed(present, "s3:GetObject", "*", {})
    with pytest.raises(PolicyError):
        evaluate(role(allow("s3:GetObject", "*", {"NullIfExists": {"k": "true"}})), "s3:GetObject", "*", {})


def test_set_operators_on_multivalued_keys():
    any_of = role(allow("ses:SendEmail", "*", {"ForAnyValue:StringLike": {"ses:Recipients": "*@example.org"}}))
    all_of = role(allow("ses:SendEmail", "*", {"ForAllValues:StringLike": {"ses:Recipients": "*@example.org"}}))
    mixed = {"ses:Recipients": ["a@example.org", "b@elsewhere.net"]}
    inside = {"ses:Recipients": ["a@example.org", "b@example.org"]}
    assert allowed(any_of, "ses:SendEmail", "*", mixed) and allowed(any_of, "ses:SendEmail", "*", inside)
    assert not allowed(all_of, "ses:SendEmail", "*", mixed) and allowed(all_of, "ses:SendEmail", "*", inside)
    # An empty set: every one of no values is inside, none of them is.
    assert allowed(all_of, "ses:SendEmail", "*", {"ses:Recipients": []})
    assert not allowed(any_of, "ses:SendEmail", "*", {"ses:Recipients": []})


def test_multivalued_key_without_set_operator():
    positive = role(allow("s3:GetObject", "*", {"StringEquals": {"k": "a"}}))
    negated = role(allow("s3:GetObject", "*", {"StringNotEquals": {"k": ["a", "b"]}}))
    assert allowed(positive, "s3:GetObject", "*", {"k": ["x", "a"]})
    assert not allowed(negated, "s3:GetObject", "*", {"k": ["x", "a"]})  # one value matches a refused one
    assert allowed(negated, "s3:GetObject", "*", {"k": ["x", "y"]})


def test_for_all_values_with_a_negated_operator():
    policies = role(allow("s3:GetObject", "*", {"ForAllValues:StringNotEquals": {"k": ["a", "b"]}}))
    assert allowed(policies, "s3:GetObject", "*", {"k": ["x", "y"]})
    assert not allowed(policies, "s3:GetObject", "*", {"k": ["x", "b"]})


def test_like_helper():
    assert like("a*c", "abbbc") and like("a?c", "abc") and not like("a?c", "abbc")
    assert like("a.c", "a.c") and not like("a.c", "abc")  # no regex leaks through
    assert like("A*", "abc", ignore_case=True) and not like("A*", "abc")


# --- statement ids, without() -------------------------------------------------------------------------

POLICIES = [
    {
        "PolicyName": "training-export",
        "PolicyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ExportScan", "Effect": "Allow", "Action": "dynamodb:Scan", "Resource": TABLE},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": BUCKET},
            ],
        },
    },
    {"Version": "2012-10-17", "Statement": {"Sid": "Models", "Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{BUCKET}/models/*"}},
]  # fmt: skip


def test_statements_are_named_role_policy_sid_or_index():
    names = [name for name, _ in statements("TrainingExportRole", POLICIES)]
    assert names == ["TrainingExportRole/training-export/ExportScan", "TrainingExportRole/training-export/#1", "TrainingExportRole/#1/Models"]


def test_without_removes_exactly_one_statement_and_leaves_the_input_alone():
    for statement_id in ("TrainingExportRole/training-export/ExportScan", "training-export/ExportScan"):
        reduced = without(POLICIES, statement_id)
        assert not allowed(reduced, "dynamodb:Scan", TABLE)
        assert allowed(reduced, "s3:ListBucket", BUCKET) and allowed(reduced, "s3:GetObject", f"{BUCKET}/models/m")
    assert allowed(POLICIES, "dynamodb:Scan", TABLE)  # a copy was changed, not the original

    reduced = without(POLICIES, "training-export/#1")
    assert not allowed(reduced, "s3:ListBucket", BUCKET) and allowed(reduced, "dynamodb:Scan", TABLE)
    # A bare document, whose Statement is a single object.
    reduced = without(POLICIES, "Role/#1/Models")
    assert not allowed(reduced, "s3:GetObject", f"{BUCKET}/models/m") and allowed(reduced, "dynamodb:Scan", TABLE)


def test_without_an_id_that_names_nothing_is_an_error():
    with pytest.raises(KeyError):
        without(POLICIES, "training-export/Nope")
    with pytest.raises(KeyError):
        without(POLICIES, "ExportScan")
    with pytest.raises(KeyError):
        without(POLICIES, "a/b/c/d")


def test_ambiguous_names_are_refused():
    duplicate_sid = role(allow("s3:GetObject", "*", sid="A"), allow("s3:PutObject", "*", sid="A"))
    with pytest.raises(PolicyError):
        list(statements("R", duplicate_sid))
    with pytest.raises(PolicyError):
        evaluate(role(allow("s3:GetObject", "*")) + role(allow("s3:PutObject", "*")), "s3:GetObject", "*", {})
