"""Binary insertion sort with ties, as a pure replay of the answers given so far (Kristiansen & Vågen 2023, §4.2).

A task's images are inserted one at a time (in index order) into an ordered list of *groups*, best
first; images judged equal share a group. Inserting an image is a binary search over the groups, and
each probe compares it with the probed group's first image:

* "better"  → continue in the groups above the probe,
* "worse"   → continue in the groups below it,
* "tie"     → join the probed group (the search ends early).

When the search range is empty the image becomes a new group at that position. Because the image is
only ever compared with a group's first image, transitivity is assumed (Kristiansen & Vågen's "transitivity
mode") and the labeler answers at most ``ceil(log2(g + 1))`` questions per image for ``g`` groups so
far, instead of comparing every pair.

Nothing here is stored: :func:`replay` rebuilds the whole state from the stored answers every time.
That makes resuming after a restart and undo trivial (undo deletes the last answer; the replay then
asks that question again) and keeps the database a plain log of what the labeler said.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

OUTCOMES = ("better", "worse", "tie")
"""Outcome of a comparison, from the point of view of the *first* image of the pair."""


@dataclass(frozen=True)
class Answer:
    """One stored judgement: image ``a`` is ``outcome`` compared with image ``b``."""

    a: int
    b: int
    outcome: str  # one of OUTCOMES

    def seen_from(self, a: int) -> str:
        """The outcome from the point of view of image ``a`` (flips better/worse if needed)."""
        if a == self.a:
            return self.outcome
        return {"better": "worse", "worse": "better", "tie": "tie"}[self.outcome]


@dataclass(frozen=True)
class SortState:
    """Where the insertion sort of one task stands.

    ``groups`` is the ordering so far (best group first, each a list of image indices);
    ``pair`` is the next question ``(new_image, probed_image)`` or ``None`` once the task is fully
    ordered; ``used`` counts the answers the replay consumed (the task's comparisons).
    """

    n_images: int
    groups: tuple[tuple[int, ...], ...]
    pair: tuple[int, int] | None
    used: int
    search: tuple[int, int] = (0, 0)
    """The open binary-search range ``[lo, hi)`` over ``groups`` while ``pair`` is asked."""

    @property
    def done(self) -> bool:
        return self.pair is None

    def ranks(self) -> list[int]:
        """Dense rank of every image (0 = best, tied images share a rank); only once ``done``."""
        if not self.done:
            raise ValueError("The task is not fully ordered yet; answer the remaining pairs first.")
        ranks = [0] * self.n_images
        for r, group in enumerate(self.groups):
            for i in group:
                ranks[i] = r
        return ranks

    def remaining(self, expected: bool = True) -> float:
        """How many more answers this task needs: on average, or at most (``expected=False``).

        The average assumes each new image is equally likely to land in any slot and no ties
        (ties only end searches early); it drives the time-left estimate on the page.
        """
        if self.pair is None:
            return 0
        probes = _expected_probes if expected else _probes
        lo, hi = self.search
        left = probes(hi - lo)  # the current search, pending question included
        inserted = sum(len(g) for g in self.groups) + 1  # the image being inserted now
        g = len(self.groups) + 1  # every later image sees at most one more group
        for _ in range(inserted, self.n_images):
            left += probes(g)
            g += 1
        return left


def _probes(n_groups: int) -> int:
    """Worst-case probes of a binary search over ``n_groups`` groups (``n_groups + 1`` slots)."""
    return math.ceil(math.log2(n_groups + 1)) if n_groups > 0 else 0


@functools.cache
def _expected_probes(n_groups: int) -> float:
    """Mean probes of the same search when each of the ``n_groups + 1`` slots is equally likely."""
    if n_groups <= 0:
        return 0.0
    above = n_groups // 2  # groups above the probe (the probe is groups[n_groups // 2])
    below = n_groups - above - 1
    return 1.0 + ((above + 1) * _expected_probes(above) + (below + 1) * _expected_probes(below)) / (
        n_groups + 1
    )


def max_comparisons(n_images: int) -> int:
    """Worst-case answers to order ``n_images`` images: ``sum_k ceil(log2(k + 1))``, k = 1..n-1.

    This is at most ``n * log2(n)`` and far below the ``n (n - 1) / 2`` of comparing every pair
    (e.g. 5 images: 8 vs 10; 8 images: 17 vs 28; 16 images: 49 vs 120).
    """
    return sum(_probes(k) for k in range(1, n_images))


def replay(n_images: int, answers: Iterable[Answer]) -> SortState:
    """Run binary insertion sort on a task of ``n_images`` images using the given answers.

    Answers are looked up by their (unordered) pair, so their order does not matter and answers the
    sort never asks about are ignored. Returns the state at the first question without an answer,
    or the final ordering.
    """
    if n_images < 1:
        raise ValueError(f"A task needs at least one image, got n_images={n_images}.")
    known: dict[frozenset[int], Answer] = {}
    for ans in answers:
        if ans.outcome not in OUTCOMES:
            raise ValueError(f"Unknown outcome {ans.outcome!r}; expected one of {OUTCOMES}.")
        if ans.a == ans.b or not (0 <= ans.a < n_images and 0 <= ans.b < n_images):
            raise ValueError(
                f"Answer compares images {ans.a} and {ans.b}, which is not a pair of two "
                f"different images of a {n_images}-image task."
            )
        known[frozenset((ans.a, ans.b))] = ans  # a later answer for the same pair wins

    groups: list[list[int]] = [[0]]
    used = 0
    for x in range(1, n_images):
        lo, hi = 0, len(groups)
        while lo < hi:
            mid = (lo + hi) // 2
            probe = groups[mid][0]
            ans = known.get(frozenset((x, probe)))
            if ans is None:
                frozen = tuple(tuple(g) for g in groups)
                return SortState(n_images, frozen, (x, probe), used, (lo, hi))
            used += 1
            verdict = ans.seen_from(x)
            if verdict == "tie":
                groups[mid].append(x)
                break
            if verdict == "better":
                hi = mid
            else:
                lo = mid + 1
        else:
            groups.insert(lo, [x])
    return SortState(n_images, tuple(tuple(g) for g in groups), None, used)


def dense_ranks(scores: list[float]) -> list[int]:
    """Dense ranks of ``scores`` where higher is better (0 = best; equal scores share a rank)."""
    order = sorted(set(scores), reverse=True)
    return [order.index(s) for s in scores]
