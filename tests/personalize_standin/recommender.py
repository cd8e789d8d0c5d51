"""A tiny item-to-item co-occurrence model: enough for answers a test can reason about.

Students who took A also took B, so a student who took A gets B first; items a user has seen are never
recommended; an unknown user gets the popular items. Everything is deterministic (ties break on
popularity, then item id) so tests can assert exact orders.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

# Only a user's latest items feed co-occurrence: keeps training O(users * HISTORY^2) on heavy users.
HISTORY_FOR_COOCCURRENCE = 50
# Offline metrics are computed on at most this many held-out users, chosen deterministically.
MAX_EVALUATED_USERS = 500
# The weight of popularity next to co-occurrence: enough to order items nothing co-occurs with, too
# small to reorder items that something does.
POPULARITY_WEIGHT = 1e-6


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    timestamp: int
    event_type: str


def histories(events: Iterable[Event]) -> dict[str, list[str]]:
    """Each user's distinct items, oldest first (ties by item id, so input order does not matter)."""
    first_seen: dict[str, dict[str, int]] = defaultdict(dict)
    for event in events:
        seen = first_seen[event.user_id]
        if event.item_id not in seen or event.timestamp < seen[event.item_id]:
            seen[event.item_id] = event.timestamp
    return {
        user: [item for item, _ in sorted(items.items(), key=lambda kv: (kv[1], kv[0]))]
        for user, items in first_seen.items()
    }


class CooccurrenceModel:
    def __init__(self, user_histories: dict[str, list[str]]):
        self.histories = user_histories
        self.popularity: Counter[str] = Counter()
        self.cooccurrence: dict[str, Counter[str]] = defaultdict(Counter)
        for items in user_histories.values():
            self.popularity.update(items)
            recent = items[-HISTORY_FOR_COOCCURRENCE:]
            for a in recent:
                row = self.cooccurrence[a]
                for b in recent:
                    if a != b:
                        row[b] += 1
        self.total_popularity = sum(self.popularity.values()) or 1
        self.catalog = sorted(self.popularity)

    @classmethod
    def train(cls, events: Iterable[Event]) -> CooccurrenceModel:
        return cls(histories(events))

    def knows_item(self, item_id: str) -> bool:
        return item_id in self.popularity

    def _affinity(self, history: Iterable[str]) -> dict[str, float]:
        """Cosine-normalised co-occurrence with the user's items."""
        scores: dict[str, float] = defaultdict(float)
        for seen in history:
            row = self.cooccurrence.get(seen)
            if not row:
                continue
            seen_pop = self.popularity[seen]
            for other, together in row.items():
                scores[other] += together / math.sqrt(seen_pop * self.popularity[other])
        return scores

    def _combined(self, affinity: dict[str, float], item: str) -> float:
        return affinity.get(item, 0.0) + POPULARITY_WEIGHT * self.popularity[item] / self.total_popularity

    def history_of(self, user_id: str, extra: Iterable[str] = ()) -> list[str]:
        history = list(self.histories.get(user_id, []))
        known = set(history)
        for item in extra:
            if item not in known:
                history.append(item)
                known.add(item)
        return history

    def recommend(self, user_id: str, count: int, extra_history: Iterable[str] = ()) -> list[tuple[str, float]]:
        """Top `count` unseen items with scores that sum to 1 over every unseen item, as Personalize's do."""
        history = self.history_of(user_id, extra_history)
        return self._top(self._affinity(history), exclude=set(history), count=count)

    def similar_items(self, item_id: str, count: int) -> list[tuple[str, float]]:
        return self._top(self._affinity([item_id]), exclude={item_id}, count=count)

    def _top(self, affinity: dict[str, float], exclude: set[str], count: int) -> list[tuple[str, float]]:
        candidates = [item for item in self.catalog if item not in exclude]
        combined = {item: self._combined(affinity, item) for item in candidates}
        total = sum(combined.values()) or 1.0
        ordered = sorted(candidates, key=lambda item: (-combined[item], -self.popularity[item], item))
        return [(item, round(combined[item] / total, 7)) for item in ordered[:count]]

    def rank(self, user_id: str, items: list[str], extra_history: Iterable[str] = ()) -> list[tuple[str, float]]:
        """`items` reordered for the user; items the model never saw keep their order at the end."""
        affinity = self._affinity(self.history_of(user_id, extra_history))
        known = []
        unknown = []
        seen = set()
        for item in items:
            if item in seen:
                continue
            seen.add(item)
            (known if self.knows_item(item) else unknown).append(item)
        combined = {item: self._combined(affinity, item) for item in known}
        total = sum(combined.values()) or 1.0
        known.sort(key=lambda item: (-combined[item], -self.popularity[item], item))
        return [(item, round(combined[item] / total, 7)) for item in known] + [(item, 0.0) for item in unknown]


def _stable_order(user_id: str) -> int:
    # A deterministic, input-order-free sample of users (Python's hash() is salted per process).
    value = 2166136261
    for byte in user_id.encode("utf-8"):
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def offline_metrics(user_histories: dict[str, list[str]]) -> dict[str, float]:
    """Leave-last-out metrics: each evaluated user's latest item is held out and must be found again.

    The metric names are the ones GetSolutionMetrics returns for real solution versions.
    """
    eligible = sorted(
        (u for u, items in user_histories.items() if len(items) >= 2), key=lambda u: (_stable_order(u), u)
    )
    evaluated = eligible[:MAX_EVALUATED_USERS]
    held_out = {user: user_histories[user][-1] for user in evaluated}
    training = {user: (items[:-1] if user in held_out else items) for user, items in user_histories.items()}
    model = CooccurrenceModel(training)
    cutoffs = (5, 10, 25)
    sums = {f"normalized_discounted_cumulative_gain_at_{k}": 0.0 for k in cutoffs}
    sums.update({f"precision_at_{k}": 0.0 for k in cutoffs})
    sums["mean_reciprocal_rank_at_25"] = 0.0
    recommended: set[str] = set()
    for user, target in held_out.items():
        top = [item for item, _ in model.recommend(user, 25)]
        recommended.update(top)
        rank = top.index(target) + 1 if target in top else None
        if rank is None:
            continue
        sums["mean_reciprocal_rank_at_25"] += 1.0 / rank
        for k in cutoffs:
            if rank <= k:
                # One relevant item: the ideal DCG is 1, so NDCG is the DCG.
                sums[f"normalized_discounted_cumulative_gain_at_{k}"] += 1.0 / math.log2(rank + 1)
                sums[f"precision_at_{k}"] += 1.0 / k
    count = len(held_out) or 1
    metrics = {name: round(total / count, 4) for name, total in sorted(sums.items())}
    catalog = {item for items in user_histories.values() for item in items}
    metrics["coverage"] = round(len(recommended) / len(catalog), 4) if catalog else 0.0
    return metrics
