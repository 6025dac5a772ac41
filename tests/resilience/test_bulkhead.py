"""Bulkhead: a cap on requests in flight per upstream, refusing at once past it."""

from __future__ import annotations

import pytest

from strangler.bulkhead import Bulkhead


def test_admits_up_to_max_concurrent_then_refuses_at_once():
    bulkhead = Bulkhead(3)
    assert [bulkhead.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert bulkhead.in_flight == 3


def test_refusal_takes_no_slot():
    bulkhead = Bulkhead(1)
    bulkhead.try_acquire()
    bulkhead.try_acquire()
    bulkhead.release()
    assert bulkhead.in_flight == 0


def test_release_frees_a_slot_for_the_next_request():
    bulkhead = Bulkhead(1)
    bulkhead.try_acquire()
    bulkhead.release()
    assert bulkhead.try_acquire()


def test_release_never_goes_below_zero():
    bulkhead = Bulkhead(2)
    bulkhead.release()
    assert bulkhead.in_flight == 0
    assert [bulkhead.try_acquire() for _ in range(3)] == [True, True, False]


def test_shrinking_keeps_in_flight_permits_and_refuses_until_under_the_new_limit():
    bulkhead = Bulkhead(4)
    for _ in range(4):
        bulkhead.try_acquire()
    bulkhead.resize(2)
    assert bulkhead.max_concurrent == 2
    assert bulkhead.in_flight == 4
    assert not bulkhead.try_acquire()
    bulkhead.release()
    bulkhead.release()
    assert not bulkhead.try_acquire()
    bulkhead.release()
    assert bulkhead.try_acquire()


def test_growing_admits_more_at_once():
    bulkhead = Bulkhead(1)
    bulkhead.try_acquire()
    bulkhead.resize(3)
    assert [bulkhead.try_acquire() for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("limit", [0, -1])
def test_rejects_a_limit_below_one(limit):
    with pytest.raises(ValueError):
        Bulkhead(limit)
    with pytest.raises(ValueError):
        Bulkhead(1).resize(limit)


def test_a_rejected_resize_keeps_the_old_limit():
    bulkhead = Bulkhead(2)
    with pytest.raises(ValueError):
        bulkhead.resize(0)
    assert bulkhead.max_concurrent == 2
