"""Point 3, SES failing: the fault proxy in front of moto for SES v2 only (`AWS_ENDPOINT_URL_SESV2`, the
variable the Rust SDK derives from the service id "SESv2"), failing `SendEmail` with throttling
(429 TooManyRequestsException) and then 503. `event-consumer handle` must exit 75 (temporary: deliver again),
the retry must send the email, and moto must show exactly one email for the event however often it is
delivered afterwards.

SendEmail has no idempotency key, so the consumer makes one attempt a delivery (no SDK retry). A throttle is
a refusal: the claim is released and the next delivery sends. A 5xx is ambiguous (SES may have queued the
email before failing to say so): the claim is kept until its lease (`CLAIM_LEASE_SECS`, 2 s here) expires,
so a redelivery inside it sends nothing, and the first one after it sends.
"""

from __future__ import annotations

import time

from collections import Counter

from . import story
from .apps import TEMPORARY, handle
from .aws import aws_env, client, interactions_table, ledger_table, recipients, students_table, sent_emails, verified_sender
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
            STUDENTS_TABLE=students_table(dynamodb),
            MAIL_TRANSPORT="ses",
            EMAIL_SENDER=sender,
            CLAIM_LEASE_SECS="2",
        )

        def deliver(event: story.Event):
            return handle(processes, bins, env, event.json())

        # SES throttles: one attempt, refused; the delivery is to be retried.
        proxy.inject(
            ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", operation="SendEmail")
        )
        throttled = deliver(enrollment)
        assert throttled.returncode == TEMPORARY, throttled.describe()
        assert "temporary failure" in throttled.stderr and "TooManyRequestsException" in throttled.stderr
        assert "@" not in throttled.stderr, "no addresses in what the consumer prints"
        attempts = proxy.calls("SendEmail")
        assert len(attempts) == 1 and attempts[0].faulted, "one attempt: the SDK never resends an email"
        assert sent_emails(moto, sender) == []

        # Then a 503: ambiguous, so the claim is kept: a redelivery inside the lease does not call SES.
        proxy.clear()
        proxy.inject(ses_error(503, "ServiceUnavailable", "Service unavailable.", operation="SendEmail"))
        unavailable = deliver(enrollment)
        assert unavailable.returncode == TEMPORARY, unavailable.describe()
        assert len(proxy.calls("SendEmail")) == 2, "one attempt for this delivery too"
        proxy.clear()
        held = deliver(enrollment)
        assert held.returncode == TEMPORARY, held.describe()
        assert len(proxy.calls("SendEmail")) == 2, "the claim holds until its lease expires: SES is not called"
        assert sent_emails(moto, sender) == []

        # SES is back and the lease has run out: the next delivery sends the email.
        time.sleep(2.5)
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

        # A single throttle: that delivery is retried (the claim released at once), the next one sends.
        proxy.inject(
            ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", operation="SendEmail", times=1)
        )
        before = len(proxy.calls("SendEmail"))
        throttled_once = deliver(second)
        assert throttled_once.returncode == TEMPORARY, throttled_once.describe()
        absorbed = deliver(second)
        assert absorbed.returncode == 0, absorbed.describe()
        assert [a.faulted for a in proxy.calls("SendEmail")[before:]] == [True, False]
        assert recipients(sent_emails(moto, sender)) == Counter(
            {story.email_of(story.NEWCOMER): 1, story.email_of(second.detail["studentId"]): 1}
        )

    # Every delivery stored the interaction once.
    items = dynamodb.scan(TableName=interactions, ConsistentRead=True)["Items"]
    assert sorted(i["eventId"]["S"] for i in items) == sorted([enrollment.id, second.id])
