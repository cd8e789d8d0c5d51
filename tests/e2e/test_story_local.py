"""Point 1, the story with no AWS: events → interactions in the embedded store and emails in the outbox →
`training-export run` (export, train, publish) → the API, running all along, answers a new A student with
B in the top 10, without a restart. Everything in a temporary DATA_DIR, nothing on the network."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from pathlib import Path

from . import story
from .apps import REJECTED, deliver_events, handle, item_ids, pipeline_response, ranking, start_api, training_export
from .harness import clean_env, wait_until
from .story import CLASS_A, CLASS_B, NEWCOMER


def stored(data: Path) -> dict[str, tuple]:
    """event id → (user, item, event type), read from the embedded store's SQLite file."""
    with sqlite3.connect(f"file:{data / 'store.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT event_id, user_id, item_id, event_type FROM interactions").fetchall()
    return {event_id: rest for event_id, *rest in rows}


def store_marker(data: Path) -> tuple[int, int]:
    """(rows, newest sequence number): what the API's refresh looks at."""
    with sqlite3.connect(f"file:{data / 'store.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*), coalesce(max(seq), 0) FROM interactions").fetchone()


def outbox(data: Path) -> dict[str, tuple[int, int]]:
    """email file name → (size, mtime in ns)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted((data / "outbox").glob("*.eml"))}


def test_a_term_of_events_trains_a_model_the_running_api_serves_without_a_restart(processes, bins, tmp_path):
    data = tmp_path / "data"
    env = clean_env(DATA_DIR=str(data), REFRESH_SECONDS="1")
    api = start_api(processes, bins, env, "--no-demo-seed")

    # Nothing at all yet: no model and no popular items to fall back on. The contract is a 503 with
    # Retry-After, not an empty list.
    empty = ranking(api, NEWCOMER)
    assert empty.status == 503, empty.body
    assert int(empty.headers["retry-after"]) > 0
    assert empty.json()["error"]["code"] == "unavailable"

    # A term of events, each handed to the consumer as a rule target receives it.
    term = story.whole_term()
    deliver_events(processes, bins, env, term)

    expected = {e.id: e for e in story.interactions(term)}
    rows = stored(data)
    assert rows.keys() == expected.keys(), "one interaction per enrollment and submission, nothing for announcements"
    assert store_marker(data)[0] == len(expected), "one row per interaction: no event stored twice"
    for event_id, (user, item, event_type) in rows.items():
        detail = expected[event_id].detail
        assert (user, item) == (detail["studentId"], detail["classId"])
        assert (
            event_type
            == {"student.enrolled": "enrolled", "student.submitAssignment": "submitAssignment"}[
                expected[event_id].detail_type
            ]
        )
    sent = outbox(data)
    confirmations = {name for name in sent if name.count(".") == 1}
    assert confirmations == {f"{e.id}.eml" for e in story.enrollments(term)}, "one email per enrollment, named by event"
    # Each announcement reaches every student enrolled in its class: <announcement id>.<student id>.eml.
    copies = set(sent) - confirmations
    assert copies == {
        f"{a.id}.{e.detail['studentId']}.eml"
        for a in story.announcements()
        for e in story.enrollments(term)
        if e.detail["classId"] == a.detail["classId"]
    }, sorted(copies)[:5]
    newcomer_event = story.newcomer()[0]
    mail = email.message_from_bytes(
        (data / "outbox" / f"{newcomer_event.id}.eml").read_bytes(), policy=email.policy.default
    )
    assert mail["To"] == story.email_of(NEWCOMER)
    assert mail["Subject"] == "Xác nhận đăng ký lớp"
    assert "Trần Thị Mới" in mail.get_body(("plain",)).get_content()

    # Bad deliveries are refused with the reason, and leave no trace.
    marker, mails = store_marker(data), outbox(data)
    for name, raw in story.bad_events():
        refused = handle(processes, bins, env, raw)
        assert refused.returncode == REJECTED, f"{name}: {refused.describe()}"
        assert "nothing was written" in refused.stderr, f"{name}: {refused.stderr}"
    assert (store_marker(data), outbox(data)) == (marker, mails)

    # Before any model: popular items, flagged as such. The newcomer's A is left out (seen), and B, a
    # small class, is not among the ten most popular: only personalisation can bring it.
    def fallback_answer():
        response = ranking(api, NEWCOMER, "numResults=10")
        return response.status == 200, (response.status, response.body[:300])

    wait_until(fallback_answer, timeout=15, what="the API's popular items to include the delivered events")
    before = ranking(api, NEWCOMER, "numResults=10").json()
    assert before["source"] == "fallback" and before["fallback"]["reason"] == "no_model", before
    assert sorted(item_ids(before)) == story.ELECTIVES, before
    api_pid = api.process.pid

    # The pipeline: export the store, train, gate, publish into $DATA_DIR/models.
    run = pipeline_response(training_export(processes, bins, env, "run"))["run"]
    assert run["status"] == "Done", run
    assert run["rows"] == len(expected), "the export holds every interaction the story sent, and no more"
    assert run["backend"] == "Embedded" and run["deployed"], run

    # The API, running all along, swaps the model in and answers from it.
    def personalised():
        answer = ranking(api, NEWCOMER, "numResults=10").json()
        return answer["source"] == "embedded", answer

    after = wait_until(personalised, timeout=30, interval=0.2, what="the API to serve the new model")
    assert CLASS_B in item_ids(after), f"students who took A also took B: {after}"
    assert CLASS_A not in item_ids(after), "the newcomer already has A"
    assert api.alive() and api.process.pid == api_pid, "no restart"
    assert "swapped in a newer model" in api.log() or "serving the embedded model" in api.log()

    # A redelivered enrollment writes nothing: store, outbox and the API's answer stay as they were.
    again = handle(processes, bins, env, newcomer_event.json())
    assert again.returncode == 0, again.describe()
    assert "duplicate" in again.stdout, again.stdout
    assert (store_marker(data), outbox(data)) == (marker, mails)
    unchanged = ranking(api, NEWCOMER, "numResults=10").json()
    assert (unchanged["source"], unchanged["items"]) == (after["source"], after["items"])
