"""Our three programs as the tests drive them: the API as a server, the event consumer and the pipeline as
commands."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .harness import CliRun, Processes, Response, Service, http
from .story import Event

LISTENING = re.compile(r"listening: .*?addr=(127\.0\.0\.1:\d+)")

# Exit codes of `event-consumer handle` (event-consumer/src/cli.rs).
HANDLED, REJECTED, TEMPORARY = 0, 65, 75

# Deliveries run this many at a time: EventBridge delivers concurrently too, and the handles mostly wait
# on SQLite or moto.
DELIVERY_WORKERS = 4


def start_api(processes: Processes, bins: dict[str, Path], env: dict[str, str], *args: str) -> Service:
    """`ranking-api --addr 127.0.0.1:0`; the URL comes from its "listening" log line."""
    service, match = processes.start(
        "ranking-api", [str(bins["ranking-api"]), "--addr", "127.0.0.1:0", *args], env, ready=LISTENING
    )
    service.url = f"http://{match.group(1)}"
    return service


def ranking(api: Service, user: str, query: str = "", **kwargs) -> Response:
    return http("GET", f"{api.url}/ranking/{user}" + (f"?{query}" if query else ""), **kwargs)


def item_ids(answer: dict) -> list[str]:
    return [i["itemId"] for i in answer["items"]]


def handle(processes: Processes, bins, env, raw: str) -> CliRun:
    """One delivery, as a rule target gets it: the event JSON on standard input."""
    return processes.run("event-consumer handle", [str(bins["event-consumer"]), "handle"], env, input=raw)


def deliver(processes: Processes, bins, env, raws: list[str], expect: int = HANDLED) -> list[CliRun]:
    """Hands every event to `event-consumer handle`, a few at a time; each must exit `expect`."""
    with ThreadPoolExecutor(DELIVERY_WORKERS) as pool:
        runs = list(pool.map(lambda raw: handle(processes, bins, env, raw), raws))
    wrong = [r for r in runs if r.returncode != expect]
    assert not wrong, f"{len(wrong)} of {len(runs)} deliveries did not exit {expect}; first:\n{wrong[0].describe()}"
    return runs


def deliver_events(processes, bins, env, events: list[Event]) -> list[CliRun]:
    return deliver(processes, bins, env, [e.json() for e in events])


def training_export(processes: Processes, bins, env, command: str, *, expect: int | None = 0) -> CliRun:
    run = processes.run(f"training-export {command}", [str(bins["training-export"]), command], env, timeout=300)
    if expect is not None:
        assert run.returncode == expect, run.describe()
    return run


def pipeline_response(run: CliRun) -> dict:
    """The JSON `training-export run|export|advance` prints."""
    try:
        return json.loads(run.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"training-export printed no JSON ({e}):\n{run.describe()}") from None
