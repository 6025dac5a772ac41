"""Weighted sticky split over 10,000 buckets."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strangler.split import BUCKETS, SplitTable, bucket_of

SAMPLES = 100_000


def _keys(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


KEYS = _keys(SAMPLES)
BUCKETS_OF_KEYS = [bucket_of("orders", key) for key in KEYS]   # hashed once, shared by the share tests


@pytest.mark.parametrize("split", [
    (("orders", 25.0), ("legacy", 75.0)),
    (("legacy", 90.0), ("orders", 10.0)),
    (("a", 50.0), ("b", 50.0)),
    (("a", 1.0), ("b", 99.0)),
    (("a", 20.0), ("b", 30.0), ("c", 50.0)),
    (("a", 33.33), ("b", 33.33), ("c", 33.34)),
])
def test_sticky_shares_follow_the_percentages(split: tuple[tuple[str, float], ...]) -> None:
    table = SplitTable("orders", split)
    counts = Counter(table.owner(bucket) for bucket in BUCKETS_OF_KEYS)
    for name, percent in split:
        share = 100 * counts[name] / SAMPLES
        assert abs(share - percent) < 1, f"{name}: {share:.2f}% instead of {percent}%"


def test_choose_puts_a_key_in_its_bucket_and_the_buckets_owner() -> None:
    table = SplitTable("orders", (("orders", 25.0), ("legacy", 75.0)))
    counts: Counter[str] = Counter()
    for key, bucket in zip(KEYS[:20000], BUCKETS_OF_KEYS):
        assignment = table.choose(key)
        assert assignment.bucket == bucket
        assert assignment.upstream == table.owner(bucket)
        counts[assignment.upstream] += 1
    assert abs(100 * counts["orders"] / 20000 - 25) < 1.5


def test_same_key_always_lands_on_the_same_upstream() -> None:
    table = SplitTable("orders", (("orders", 50.0), ("legacy", 50.0)))
    again = SplitTable("orders", (("orders", 50.0), ("legacy", 50.0)))   # another proxy instance
    for key in KEYS[:2000]:
        first = table.choose(key)
        assert first.sticky
        assert all(table.choose(key) == first for _ in range(3))
        assert again.choose(key) == first


def test_bucket_depends_on_route_and_key_only_and_is_in_range() -> None:
    buckets = {bucket_of("orders", key) for key in KEYS[:5000]}
    assert min(buckets) >= 0 and max(buckets) < BUCKETS
    assert len(buckets) > 3000            # spread, not a handful of buckets
    assert bucket_of("orders", "user-1") == bucket_of("orders", "user-1")
    # Different routes split independently: the same users are not always the ones moved first.
    moved_together = sum(bucket_of("orders", k) < 1000 and bucket_of("payments", k) < 1000 for k in KEYS[:20000])
    assert moved_together < 20000 * 0.1 * 0.1 * 2


def test_bucket_is_stable_across_releases() -> None:
    # Users keep their side across proxy upgrades and instances: changing the hash moves them all.
    assert [bucket_of("orders", k) for k in ("user-1", "user-2", "")] == [555, 4086, 720]


@settings(max_examples=300, deadline=None)
@given(
    low=st.integers(0, 10_000),
    high=st.integers(0, 10_000),
    new_first=st.booleans(),
    keys=st.lists(st.text(max_size=24), min_size=1, max_size=50),
)
def test_raising_the_new_upstreams_percent_never_moves_a_key_back_to_legacy(
        low: int, high: int, new_first: bool, keys: list[str]) -> None:
    low, high = sorted((low, high))

    def table(new_percent_hundredths: int) -> SplitTable:
        new = ("orders", new_percent_hundredths / 100)
        legacy = ("legacy", 100 - new_percent_hundredths / 100)
        return SplitTable("orders", (new, legacy) if new_first else (legacy, new))

    before, after = table(low), table(high)
    for key in keys + KEYS[:50]:
        if before.choose(key).upstream == "orders":
            assert after.choose(key).upstream == "orders", key


@settings(max_examples=40, deadline=None)
@given(low=st.integers(0, 100), high=st.integers(0, 100), new_first=st.booleans())
def test_raising_the_percent_only_moves_buckets_towards_new(low: int, high: int, new_first: bool) -> None:
    low, high = sorted((low, high))

    def owners(percent: int) -> list[str]:
        split = (("orders", float(percent)), ("legacy", float(100 - percent)))
        table = SplitTable("orders", split if new_first else split[::-1])
        return [table.owner(bucket) for bucket in range(BUCKETS)]

    before, after = owners(low), owners(high)
    assert before.count("orders") == low * BUCKETS // 100
    assert after.count("orders") == high * BUCKETS // 100
    assert all(a == "orders" for b, a in zip(before, after) if b == "orders")


def test_keyless_requests_go_by_weight_at_random() -> None:
    table = SplitTable("orders", (("orders", 30.0), ("legacy", 70.0)))
    rng = random.Random(1234)
    assignments = [table.choose(None, rng) for _ in range(SAMPLES)]
    assert not any(a.sticky for a in assignments)
    counts = Counter(a.upstream for a in assignments)
    assert abs(100 * counts["orders"] / SAMPLES - 30) < 1
    assert abs(100 * counts["legacy"] / SAMPLES - 70) < 1
    # Random, not a fixed bucket: the same keyless request does not always go the same way.
    assert len({a.bucket for a in assignments[:100]}) > 50


def test_keyless_choice_is_reproducible_with_a_seeded_rng() -> None:
    table = SplitTable("orders", (("orders", 50.0), ("legacy", 50.0)))
    rng_a, rng_b = random.Random(5), random.Random(5)
    run_a = [table.choose(None, rng_a).upstream for _ in range(200)]
    run_b = [table.choose(None, rng_b).upstream for _ in range(200)]
    assert run_a == run_b
    assert set(run_a) == {"orders", "legacy"}


@pytest.mark.parametrize("split", [
    (("orders", 0.0), ("legacy", 100.0)),
    (("legacy", 100.0), ("orders", 0.0)),
    (("a", 40.0), ("orders", 0.0), ("b", 60.0)),
])
def test_zero_percent_upstream_is_never_chosen(split: tuple[tuple[str, float], ...]) -> None:
    table = SplitTable("orders", split)
    rng = random.Random(99)
    for key in KEYS[:20000]:
        assert table.choose(key).upstream != "orders"
    for _ in range(20000):
        assert table.choose(None, rng).upstream != "orders"
    assert all(table.owner(bucket) != "orders" for bucket in range(BUCKETS))


def test_hundred_percent_upstream_takes_everything() -> None:
    table = SplitTable("orders", (("orders", 100.0), ("legacy", 0.0)))
    assert not table.is_split
    assert {table.choose(key).upstream for key in KEYS[:1000]} == {"orders"}
    assert table.choose(None).upstream == "orders"


def test_small_percentages_get_their_buckets() -> None:
    table = SplitTable("orders", (("orders", 0.01), ("legacy", 99.99)))
    assert [table.owner(b) for b in range(BUCKETS)].count("orders") == 1
    table = SplitTable("orders", (("orders", 0.5), ("legacy", 99.5)))
    assert [table.owner(b) for b in range(BUCKETS)].count("orders") == 50
