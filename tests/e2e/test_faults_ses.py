"""Point 3, SES failing: the fault proxy in front of moto for SES v2 only (`AWS_ENDPOINT_URL_SESV2`, the
variable the Rust SDK derives from the service id "SESv2"), failing `SendEmail` with throttling
(429 TooManyRequestsException) and then 503. `event-consumer handle` must exit 75 (temporary: deliver again),
the retry must send the email, and moto must show exactly one email for the event however often it is
delivered afterwards.

The injected errors are answered before moto sees the request, i.e. SES refused the send. (If SES accepted
a send and the answer were lost, the SDK's own retry would send it twice: SendEmail has no idempotency
key; event-consumer's README names that window.)
"""

from __future__ import annotations

from collections import Counter

from . import story
from .apps import TEMPORARY, handle
from .aws import aws_env, client, interactions_table, ledger_table, recipients, sent_emails, verified_sender
from .faultproxy import FaultProxy, ses_error
from .harness import clean_env


def test_a_failing_ses_makes_the_delivery_retryable_and_the_email_goes_exactly_once(processes, bins, moto, tmp_path):
    dynamodb = client("dynamodb", moto.general)
    interactions, ledger = interactions_table(dynamodb), ledger_table(dynamodb)
    sender = verified_sender(client("sesv2", moto.general))
    enrollment = story.newcomer()[0]
    second = story.a_and_b_students()[0]

    with FaultProxy(moto.general) as proxy:
        env = clean_env(
            **aws_env(moto, tmp_path, SESV2=proxy.url),
            DATA_DIR=str(tmp_path / "consumer"),
            INTERACTIONS_TABLE=interactions,
            IDEMPOTENCY_TABLE=ledger,
            MAIL_TRANSPORT="ses",
            EMAIL_SENDER=sender,
        )

        def deliver(event: story.Event):
            return handle(processes, bins, env, event.json())

        # SES throttles every attempt: the SDK retries, gives up; the delivery is to be retried.
        proxy.inject(
            ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", operation="SendEmail")
        )
        throttled = deliver(enrollment)
        assert throttled.returncode == TEMPORARY, throttled.describe()
        assert "temporary failure" in throttled.stderr and "TooManyRequestsException" in throttled.stderr
        assert "@" not in throttled.stderr, "no addresses in what the consumer prints"
        attempts = proxy.calls("SendEmail")
        assert len(attempts) >= 2 and all(a.faulted for a in attempts), "the SDK retried the throttling"
        assert sent_emails(moto, sender) == []

        # Then 503s: the same again.
        proxy.clear()
        proxy.inject(ses_error(503, "ServiceUnavailable", "Service unavailable.", operation="SendEmail"))
        unavailable = deliver(enrollment)
        assert unavailable.returncode == TEMPORARY, unavailable.describe()
        assert sent_emails(moto, sender) == []

        # SES is back: the next delivery sends the email.
        proxy.clear()
        before = len(proxy.calls("SendEmail"))
        sent = deliver(enrollment)
        assert sent.returncode == 0, sent.describe()
        assert len(proxy.calls("SendEmail")) == before + 1
        # Redeliveries find the email done: nothing is sent again.
        for _ in range(2):
            again = deliver(enrollment)
            assert again.returncode == 0 and "duplicate" in again.stdout, again.describe()
        assert len(proxy.calls("SendEmail")) == before + 1
        assert recipients(sent_emails(moto, sender)) == Counter({story.email_of(story.NEWCOMER): 1})

        # A single throttle is absorbed by the SDK's retry: handled at once, still one email.
        proxy.inject(
            ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", operation="SendEmail", times=1)
        )
        before = len(proxy.calls("SendEmail"))
        absorbed = deliver(second)
        assert absorbed.returncode == 0, absorbed.describe()
        assert [a.faulted for a in proxy.calls("SendEmail")[before:]] == [True, False]
        assert recipients(sent_emails(moto, sender)) == Counter(
            {story.email_of(story.NEWCOMER): 1, story.email_of(second.detail["studentId"]): 1}
        )

    # Every delivery stored the interaction once.
    items = dynamodb.scan(TableName=interactions, ConsistentRead=True)["Items"]
    assert sorted(i["eventId"]["S"] for i in items) == sorted([enrollment.id, second.id])
