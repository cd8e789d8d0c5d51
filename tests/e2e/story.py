"""The story's data: a term of a small school as EventBridge events, fixed (no randomness).

* 100 students ("the rest of the school") each enroll in 3 of 10 electives and hand in 7 assignments.
  Every elective gets exactly 30 students, so the 10 electives are the 10 most popular classes.
* 25 students take class A, class B and the lab that goes with them, in one of three orders, handing in
  an assignment in the first two: whoever took A also took B. A has 26 students (with the newcomer), B
  and the lab 25: none is among the 10 most popular, so B can only reach a student's top 10 through
  personalisation, never through the popular-items fallback.
* The newcomer enrolls in A only. After the pipeline has run, B must be in the newcomer's top 10.

Every student's latest interaction is an enrollment in a class new to them, and the three orders rotate:
offline metrics hold each student's latest item out (leave-last-out), and a pattern that always came last
would be held out for everyone, never learnt, and drag the new version below the live one at the gate.

1,126 interactions (Personalize needs 1,000, and 25 users with 2 or more: there are 125), 376 of them
enrollments, each of which sends one confirmation email. Plus three teacher announcements (acknowledged,
nothing stored) and, separately, bad events that must be refused without a trace.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CLASS_A = "math-101"
CLASS_B = "physics-101"
LAB = "lab-101"
ELECTIVES = [f"elective-{n:02d}" for n in range(10)]
NEWCOMER = "s-9001"
TERM_START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
# Each student's picks among the electives: offsets 0, 3 and 7 give every elective exactly 30 of 100.
ELECTIVE_OFFSETS = (0, 3, 7)


@dataclass(frozen=True)
class Event:
    """One domain event as the app publishes it (detail-type, detail) with the id and time EventBridge
    gives it; `envelope()` is what a rule target receives."""

    id: str
    detail_type: str
    detail: dict
    time: datetime

    @property
    def source(self) -> str:
        return {
            "student.enrolled": "api.student",
            "student.submitAssignment": "api.assignment",
            "teacher.sendAnnouncement": "api.teacher",
            "ranking.requestUpdate": "api.ranking",
        }[self.detail_type]

    @property
    def stores_interaction(self) -> bool:
        return self.detail_type == "student.enrolled" or (
            self.detail_type == "student.submitAssignment" and "classId" in self.detail
        )

    def envelope(self) -> dict:
        return {
            "version": "0",
            "id": self.id,
            "detail-type": self.detail_type,
            "source": self.source,
            "account": "123456789012",
            "time": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1",
            "resources": [],
            "detail": self.detail,
        }

    def json(self) -> str:
        return json.dumps(self.envelope(), ensure_ascii=False)


def event_id(*parts) -> str:
    """A stable UUID-shaped id, as EventBridge's look."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "e2e-story/" + "/".join(map(str, parts))))


def email_of(student: str) -> str:
    return f"{student}@example.edu.vn"


def _enrolled(student: str, class_id: str, at: datetime, name: str | None = None) -> Event:
    detail = {"studentId": student, "classId": class_id, "email": email_of(student)}
    if name:
        detail["studentName"] = name
    return Event(event_id("enrolled", student, class_id), "student.enrolled", detail, at)


def _submitted(student: str, class_id: str, n: int, at: datetime) -> Event:
    detail = {
        "studentId": student,
        "classId": class_id,
        "assignmentId": f"hw-{n}",
        "fileUrl": f"s3://student-uploads/{student}/{class_id}/hw-{n}.pdf",
    }
    return Event(event_id("submitted", student, class_id, n), "student.submitAssignment", detail, at)


def rest_of_school() -> list[Event]:
    """100 students, 3 electives each (enrollment + assignments), in time order per student."""
    events = []
    for k in range(100):
        student = f"s-{1000 + k:04d}"
        at = TERM_START + timedelta(hours=k)
        picks = [ELECTIVES[(k + offset) % 10] for offset in ELECTIVE_OFFSETS]
        for class_id, assignments in zip(picks, (3, 4, 0)):
            events.append(_enrolled(student, class_id, at))
            at += timedelta(days=1)
            for n in range(assignments):
                events.append(_submitted(student, class_id, n + 1, at))
                at += timedelta(days=1)
    return events


def a_and_b_students() -> list[Event]:
    """25 students: A, B and the lab, in one of three rotating orders; an assignment in the first two."""
    events = []
    trio = (CLASS_A, CLASS_B, LAB)
    for k in range(25):
        student = f"s-{2000 + k:04d}"
        first, second, third = trio[k % 3 :] + trio[: k % 3]
        at = TERM_START + timedelta(days=3, hours=k)
        name = f"Sinh viên {k}"
        events.append(_enrolled(student, first, at, name))
        events.append(_submitted(student, first, 1, at + timedelta(days=2)))
        events.append(_enrolled(student, second, at + timedelta(days=4), name))
        events.append(_submitted(student, second, 1, at + timedelta(days=6)))
        events.append(_enrolled(student, third, at + timedelta(days=8), name))
    return events


def a_and_b_in_waves() -> list[list[Event]]:
    """The same events as three waves: every student's first class, then second, then third. Published
    with the clock moving on between waves, they keep the story's order although EventBridge stamps
    each event with the second it was published in."""
    per_student = [a_and_b_students()[n : n + 5] for n in range(0, 125, 5)]
    return [[e for events in per_student for e in events[start:end]] for start, end in ((0, 2), (2, 4), (4, 5))]


def newcomer() -> list[Event]:
    return [_enrolled(NEWCOMER, CLASS_A, TERM_START + timedelta(days=40), name="Trần Thị Mới")]


def announcements() -> list[Event]:
    return [
        Event(
            event_id("announcement", n),
            "teacher.sendAnnouncement",
            {"teacherId": "t-7", "classId": ELECTIVES[n], "content": f"Lớp {ELECTIVES[n]} nghỉ vào thứ Sáu."},
            TERM_START + timedelta(days=10 + n),
        )
        for n in range(3)
    ]


def bad_events() -> list[tuple[str, str]]:
    """(name, raw JSON) of deliveries the consumer must refuse (exit 65) without writing anything."""
    good = _enrolled("s-bad-0001", CLASS_A, TERM_START).envelope()
    wrong_source = {**good, "id": event_id("bad", "source"), "source": "api.teacher"}
    long_id = {**good, "id": event_id("bad", "long-id"), "detail": {**good["detail"], "studentId": "x" * 257}}
    no_email = {**good, "id": event_id("bad", "email"), "detail": {"studentId": "s-bad-0002", "classId": CLASS_A}}
    return [
        ("truncated JSON", json.dumps(good)[:-20]),
        ("enrollment from the wrong source", json.dumps(wrong_source)),
        ("257-character student id", json.dumps(long_id)),
        ("enrollment without an email", json.dumps(no_email)),
    ]


def whole_term() -> list[Event]:
    return rest_of_school() + a_and_b_students() + newcomer() + announcements()


def interactions(events: list[Event]) -> list[Event]:
    return [e for e in events if e.stores_interaction]


def enrollments(events: list[Event]) -> list[Event]:
    return [e for e in events if e.detail_type == "student.enrolled"]


def check_the_numbers() -> None:
    """The counts the module docstring promises; the tests rely on them."""
    term = whole_term()
    assert len(interactions(term)) == 1126, len(interactions(term))
    assert len(enrollments(term)) == 376, len(enrollments(term))
    students_per_class: dict[str, set] = {}
    for e in enrollments(term):
        students_per_class.setdefault(e.detail["classId"], set()).add(e.detail["studentId"])
    assert all(len(students_per_class[c]) == 30 for c in ELECTIVES)
    assert [len(students_per_class[c]) for c in (CLASS_A, CLASS_B, LAB)] == [26, 25, 25]
    assert len({e.id for e in term}) == len(term), "event ids are unique"
