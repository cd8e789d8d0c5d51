"""What moto cannot tell us: when each item was written, and what it looked like before.

An incremental export needs, per primary key, the times of its writes and the images before and after.
moto keeps neither, so the stand-in records them for the writes it forwards: before a key's first tracked
write it reads the key's current image (that image counts as written when the stand-in started), and after
each successful write it reads the new image back and stores it with the write time in microseconds.
Writes that bypass the stand-in (straight to moto) are invisible here: their keys look written at start.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Image = dict[str, Any]  # an item in DynamoDB JSON: {"attr": {"S": "..."}, ...}


def micros(seconds: float) -> int:
    """Epoch seconds (a float, as the JSON protocol sends timestamps) to whole microseconds; rounded, as
    1796535367.598 * 1e6 is 1796535367597999.8 in floating point."""
    return round(seconds * 1_000_000)


def key_id(key: Image) -> str:
    """A canonical text for a primary key, so two spellings of one key are one entry."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


@dataclass
class KeyHistory:
    key: Image
    # (write time in microseconds, the item's image after that write or None once deleted), oldest first.
    entries: list[tuple[int, Image | None]] = field(default_factory=list)

    def image_at(self, micros: int) -> Image | None:
        """The item as it was at `micros` (after every write at or before it)."""
        image = None
        for written, after in self.entries:
            if written > micros:
                break
            image = after
        return image

    def image_before(self, micros: int) -> Image | None:
        """The item just before `micros` (writes strictly earlier)."""
        return self.image_at(micros - 1)

    def writes_in(self, start: int, end: int) -> list[int]:
        """Write times in [start, end)."""
        return [written for written, _ in self.entries if start <= written < end]


class WriteLog:
    """Per (region, table): every tracked key's history. The caller serialises writes (see server.py)."""

    def __init__(self, start_micros: int) -> None:
        self.start_micros = start_micros
        self._tables: dict[tuple[str, str], dict[str, KeyHistory]] = {}
        self._last_micros = 0
        self._lock = threading.Lock()

    def stamp(self, now_micros: int) -> int:
        """A write time: `now_micros`, but strictly after the previous one, so writes keep their order
        even when two land in the same microsecond."""
        with self._lock:
            self._last_micros = max(now_micros, self._last_micros + 1)
            return self._last_micros

    def tracked(self, region: str, table: str, key: Image) -> bool:
        return key_id(key) in self._tables.get((region, table), {})

    def record(self, region: str, table: str, key: Image, micros: int, image: Image | None) -> None:
        histories = self._tables.setdefault((region, table), {})
        history = histories.setdefault(key_id(key), KeyHistory(key))
        history.entries.append((micros, image))

    def forget_table(self, region: str, table: str) -> None:
        """A table deleted or created anew through the stand-in starts with no history."""
        self._tables.pop((region, table), None)

    def histories(self, region: str, table: str) -> Iterator[tuple[str, KeyHistory]]:
        yield from self._tables.get((region, table), {}).items()
