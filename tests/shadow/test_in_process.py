"""Shadow copies in-process over scripted upstreams: whatever the shadow, the primary and the client do,
the client's answer is the primary's, every slot and permit a copy took is given back once, and the
copy is counted once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.forwarding.test_pipeline_in_process import LEGACY, NEW, STEPS, FakeClock, Proxy, config, outcome, settle
from tests.support.fake_upstream import FakeUpstreams


def shadowed(noise: str) -> str:
    """The forwarding tests' route, to legacy, with a shadow to new (answers over 150 bytes not compared)."""
    text = config(fallback=False, timeout="150ms", upstream_timeout="40ms")
    assert "    to: new\n" in text
    return text.replace("    to: new\n", "    to: legacy\n    shadow: {upstream: new, methods: [GET, POST], "
                        f"allow_writes: true, max_body: 150B, compare: {{noise: {noise}}}}}\n")


async def copies_done(proxy: Proxy) -> None:
    state = proxy.holder.runtime.routes["orders"].shadow
    deadline = time.monotonic() + 5
    while state.tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert not state.tasks and state.in_flight == 0, "a copy is still running"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shadow_steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=2),
    legacy_steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=3),
    method=st.sampled_from(["GET", "POST"]),
    noise=st.sampled_from(["off", "learn"]),
    client=st.sampled_from(["stays", "goes-mid-body", "cancelled"]),
    cancel_after=st.integers(0, 40),
)
def test_a_copy_never_changes_the_answer_and_gives_everything_back_once(tmp_path: Path, shadow_steps, legacy_steps,
                                                                       method, noise, client, cancel_after):
    async def scenario() -> None:
        async with FakeUpstreams() as fake:
            fake.upstream(NEW).script(*(STEPS[step] for step in shadow_steps))
            fake.upstream(LEGACY).script(*(STEPS[step] for step in legacy_steps))
            p = Proxy(tmp_path, shadowed(noise), fake, FakeClock())
            task = asyncio.ensure_future(p.request(method, "/x", b"body" if method == "POST" else b"",
                                                   gone_after_chunks=1 if client == "goes-mid-body" else None))
            answer = await outcome(task, cancel_after if client == "cancelled" else None)
            if answer is not None and client == "stays" and legacy_steps[0] == "ok":
                assert (answer.status, answer.body, answer.header("x-strangler-upstream")) == (200, b"ok", "legacy")
            await copies_done(p)
            await settle()
            p.assert_everything_given_back()
            state = p.holder.runtime.routes["orders"].shadow
            counted = sum(state.counts.values())
            assert counted <= 1 and counted == sum(
                p.sample("strangler_shadow_requests_total", route="orders", shadow="new", result=result)
                for result in state.counts)
            await p.holder.close()

    asyncio.run(scenario())
