"""Weighted split with sticky assignment over 10,000 buckets.

A key hashes with its route name into a bucket; buckets are handed to upstreams
by cumulative percent in the order the split lists them. The same key lands on
the same upstream on every proxy instance, and with two upstreams raising one's
percent only moves keys towards it.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

BUCKETS = 10_000


def bucket_of(route_name: str, key: str) -> int:
    digest = hashlib.blake2b(f"{route_name}\x00{key}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Assignment:
    upstream: str
    bucket: int
    sticky: bool          # False: the request had no key and was placed at random


class SplitTable:
    """A route's split as bucket boundaries, built once per config."""

    __slots__ = ("route_name", "upstreams", "bounds", "is_split")

    def __init__(self, route_name: str, split: tuple[tuple[str, float], ...]) -> None:
        self.route_name = route_name
        upstreams: list[str] = []
        bounds: list[int] = []
        total = 0.0
        for name, percent in split:
            if percent <= 0:
                continue
            total += percent
            upstreams.append(name)
            bounds.append(min(BUCKETS, round(total * BUCKETS / 100)))
        if bounds:
            bounds[-1] = BUCKETS   # absorb rounding so every bucket has an owner
        self.upstreams = tuple(upstreams)
        self.bounds = tuple(bounds)
        self.is_split = len(upstreams) > 1

    def owner(self, bucket: int) -> str:
        return self.upstreams[bisect.bisect_right(self.bounds, bucket)]

    def choose(self, key: str | None, rng: random.Random | None = None) -> Assignment:
        if not self.is_split:
            return Assignment(self.upstreams[0], 0, key is not None)
        if key is None:
            bucket = (rng or random).randrange(BUCKETS)
            return Assignment(self.owner(bucket), bucket, False)
        bucket = bucket_of(self.route_name, key)
        return Assignment(self.owner(bucket), bucket, True)
