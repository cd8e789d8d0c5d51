"""The hook that drops schemathesis's false positive drops that and nothing else."""

from __future__ import annotations

from types import SimpleNamespace

from schemathesis.core.failures import AcceptedNegativeData, ServerError

from . import hooks


def _case(query, negative_locations=("query",)):
    mode = lambda negative: SimpleNamespace(is_negative=negative)  # noqa: E731
    components = {location: SimpleNamespace(mode=mode(True)) for location in negative_locations}
    components.setdefault("path_parameters", SimpleNamespace(mode=mode(False)))
    return SimpleNamespace(query=query, meta=SimpleNamespace(components=components))


ACCEPTED_NEGATIVE = AcceptedNegativeData.__new__(AcceptedNegativeData)


def test_a_mutation_that_vanishes_on_the_wire_is_dropped():
    assert hooks.filter_failure(None, ACCEPTED_NEGATIVE, _case({"numResults": {}, "items": True}), None) is False
    assert hooks.filter_failure(None, ACCEPTED_NEGATIVE, _case({"items": True, "context.K": "v"}), None) is False


def test_real_failures_are_kept():
    # A float numResults is on the wire as 7.5: accepting it would be a real bug.
    assert hooks.filter_failure(None, ACCEPTED_NEGATIVE, _case({"numResults": 7.5}), None) is True
    assert hooks.filter_failure(None, ACCEPTED_NEGATIVE, _case({"numResults": True}), None) is True
    # A negative path parameter is not this hook's business.
    assert hooks.filter_failure(None, ACCEPTED_NEGATIVE, _case({}, ("path_parameters",)), None) is True
    # Other checks' failures are never dropped.
    server_error = ServerError.__new__(ServerError)
    assert hooks.filter_failure(None, server_error, _case({"numResults": {}}), None) is True
