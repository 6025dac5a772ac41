"""Composite routes in-process over fake upstreams: every part's bulkhead slot and breaker permit given back once.

The proxy runs in the test's loop (tests/forwarding/test_pipeline_in_process.py's harness, its
bulkheads and breakers counting), so a case takes milliseconds and a cancellation can land on
any await of any part.
"""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.forwarding.test_pipeline_in_process import LEGACY, NEW, STEPS, FakeClock, Proxy, outcome, settle
from tests.support.fake_upstream import FakeUpstreams, Reply

JSON = [("Content-Type", "application/json")]
PART_STEPS = {
    **STEPS,
    "json": Reply(200, JSON, b'{"id": 7}'),
    "json-in-pieces": Reply(200, JSON, [b'{"id":', 0.0, b' 7}']),
    "too-large": Reply(200, JSON, b'{"pad": "' + b"x" * 100 + b'"}'),
    "404": Reply(404, JSON, b'{"detail": "no such order"}'),
}


def config(*, required: bool = True, attempts: int = 2, payment_required: bool = False) -> str:
    return f"""
version: 1
upstreams:
  new: {{url: "{NEW}", timeout: 40ms, max_concurrent: 8}}
  legacy: {{url: "{LEGACY}", timeout: 40ms}}
defaults:
  retry: {{attempts: {attempts}, backoff: {{initial: 1ms, max: 2ms}}, budget: 100%}}
  circuit_breaker: {{failure_threshold: 5, recovery_timeout: 30s, success_threshold: 1}}
routes:
  - name: summary
    match: {{path: "/s/{{id}}"}}
    timeout: 150ms
    compose:
      order: {{upstream: new, path: "/orders/{{id}}", required: {str(required).lower()}}}
      payment: {{upstream: legacy, path: "/payments?order_id={{id}}", required: {str(payment_required).lower()}}}
      shipping: {{upstream: new, path: "/shipping/{{id}}", max_body_size: 64}}
"""


async def test_a_required_404_answers_at_once_and_the_abandoned_part_is_not_the_upstreams_fault(tmp_path):
    async with FakeUpstreams() as fake:
        payment_in, never = asyncio.Event(), asyncio.Event()

        def order(received):
            return Reply(404, JSON, b"{}", hold=payment_in)

        def payment(received):
            payment_in.set()
            return Reply(200, JSON, b"{}", hold=never)

        fake.upstream(NEW).script(order, Reply(200, JSON, b'{"shipped": true}'))
        fake.upstream(LEGACY).script(payment)
        p = Proxy(tmp_path, config(), fake, FakeClock())
        answer = await p.request("GET", "/s/7")
        assert answer.status == 404 and json.loads(answer.body)["part"] == "order"
        await settle()
        p.assert_everything_given_back()
        settled = sorted(permit.settled for permit in p.permits)
        assert settled == ["record_success", "record_success", "release"]      # payment's: neutral
        assert p.sample("strangler_compose_parts_total", route="summary", part="payment", outcome="abandoned") == 1


async def test_the_required_part_that_failed_first_is_the_one_named(tmp_path):
    """Two required parts: the one that failed decides, the other (abandoned) is not blamed."""
    async with FakeUpstreams() as fake:
        never = asyncio.Event()
        fake.upstream(NEW).script(Reply(200, JSON, b"{}", hold=never))
        fake.upstream(LEGACY).script(Reply(500, JSON, b"{}"))
        p = Proxy(tmp_path, config(attempts=1, payment_required=True), fake, FakeClock())
        answer = await p.request("GET", "/s/7")
        problem = json.loads(answer.body)
        assert (answer.status, problem["reason"], problem["part"]) == (502, "part_failed", "payment")
        assert problem["detail"] == "required part 'payment' (legacy) answered 500"
        await settle()
        p.assert_everything_given_back()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    new_steps=st.lists(st.sampled_from(sorted(PART_STEPS)), min_size=2, max_size=4),
    legacy_steps=st.lists(st.sampled_from(sorted(PART_STEPS)), min_size=1, max_size=3),
    required=st.booleans(),
    payment_required=st.booleans(),
    attempts=st.integers(1, 2),
    method=st.sampled_from(["GET", "HEAD"]),
    cancelled=st.booleans(),
    cancel_after=st.integers(0, 40),
)
def test_every_parts_slot_and_permit_is_given_back_exactly_once(tmp_path, new_steps, legacy_steps, required,
                                                               payment_required, attempts, method, cancelled,
                                                               cancel_after):
    async def scenario() -> None:
        async with FakeUpstreams() as fake:
            fake.upstream(NEW).script(*(PART_STEPS[step] for step in new_steps))
            fake.upstream(LEGACY).script(*(PART_STEPS[step] for step in legacy_steps))
            p = Proxy(tmp_path, config(required=required, attempts=attempts, payment_required=payment_required),
                      fake, FakeClock())
            task = asyncio.ensure_future(p.request(method, "/s/7"))
            answer = await outcome(task, cancel_after if cancelled else None)
            if answer is not None and answer.status == 200:
                assert answer.complete
                if method == "GET":
                    body = json.loads(answer.body)
                    assert list(body) == ["order", "payment", "shipping", "partial"]
                    assert [part["part"] for part in body["partial"]] == [
                        name for name in ("order", "payment", "shipping") if body[name] is None]
            elif answer is not None and answer.header("content-type") == "application/problem+json":
                detail = json.loads(answer.body)["detail"]
                assert detail.startswith("required part ") and "None" not in detail    # the part that decided
            await settle()
            p.assert_everything_given_back()
            await p.holder.close()

    asyncio.run(scenario())
