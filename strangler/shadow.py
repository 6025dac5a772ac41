"""Shadow traffic: a copy of a sampled request goes to the route's shadow upstream, and the two
answers are compared off the client's path.

The pipeline makes one call, `start_copy`, before it forwards the request, and streams the
client's answer through what it returns (`tee.py`: a `Copy` keeps the bytes it passes on, up to
`max_body`, by reference, never holding the client back; `NO_COPY` for a request that is
not copied). The copy runs as a task of its own, never awaited by the client's request:

    start_copy ──> task: lease on the shadow upstream (its bulkhead, breaker, pool), send the copy
                   with X-Strangler-Shadow: 1, read its answer up to max_body, lease closed
                   ──> wait for the client's answer to end ──> compare ──> [noise: learn, and they
                   differ: ask the primary again] ──> count it once (match, mismatch, noise,
                   shadow_error, skipped)

Memory: at most `max_concurrent` copies per route, each holding two answers of at most
`max_body` (the client's and the shadow's; the shadow's is dropped before the primary is asked
again). Comparisons of large bodies run on one worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from resilience.breaker import CircuitBreaker

from .body import RequestBody
from .compare import Answer, BodyTooLarge, Difference
from .config.model import SAFE_METHODS
from .errors import BulkheadFull, CircuitOpen, UpstreamError
from .forward import UpstreamResponse
from .lease import UpstreamLease
from .outcome import RequestTrace
from .recorder import Recorder
from .runtime import RouteRuntime, Runtime, UpstreamState
from .shadow_state import ShadowState, sample
from .tee import NO_COPY, Copy, Skipped

log = logging.getLogger("strangler.shadow")

SHADOW_HEADER = (b"X-Strangler-Shadow", b"1")
_NOT_SENT = frozenset({"circuit_open", "bulkhead_full"})
INLINE_COMPARE_BYTES = 64 * 1024      # larger answers are compared on the worker thread
_comparisons: ThreadPoolExecutor | None = None


class ShadowFailed(Exception):
    """The shadow upstream failed the copy (refused, reset, timed out, garbage); `args[0]` is the reason."""


def start_copy(runtime: Runtime, route_rt: RouteRuntime, method: str, target: str,
               headers: list[tuple[bytes, bytes]], body: RequestBody, chosen: str, trace: RequestTrace,
               recorder: Recorder) -> Copy:
    """Send a copy of this request to the route's shadow, if it is sampled; never waits for it."""
    state = route_rt.shadow
    if state is None:
        return NO_COPY
    policy = state.policy
    # A request the shadow upstream serves itself has nothing to be compared with.
    if method not in policy.methods or chosen == policy.upstream:
        return NO_COPY
    if policy.percent < 100 and random.random() * 100 >= policy.percent:
        return NO_COPY
    if state.in_flight >= policy.max_concurrent:
        _count(state, recorder, "skipped", "max_concurrent", None)
        return NO_COPY
    request_body = body.kept
    if request_body is None:
        _count(state, recorder, "skipped", "request_body_not_kept", None)    # it streams: no replay for a copy
        return NO_COPY
    loop = asyncio.get_running_loop()
    copy = Copy(policy.max_body_bytes, policy.upstream, loop)
    state.in_flight += 1
    task = loop.create_task(_run(
        runtime, route_rt, state, recorder, method, target, [*headers, SHADOW_HEADER], request_body or None, copy,
        trace.request_id))
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)
    return copy


async def _run(runtime: Runtime, route_rt: RouteRuntime, state: ShadowState, recorder: Recorder, method: str,
               target: str, headers: list[tuple[bytes, bytes]], body: bytes | None, copy: Copy,
               request_id: str) -> None:
    policy = state.policy
    route = route_rt.route.name
    result, reason, duration_s = "skipped", "", None
    started = time.perf_counter()
    try:
        try:
            shadow = await _fetch(runtime.upstreams[policy.upstream], route_rt.breakers[policy.upstream], recorder,
                                  route, method, target, headers, body, policy.max_body_bytes)
        finally:
            duration_s = time.perf_counter() - started
        primary_upstream, primary = await copy.answer()
        differences = await _differences(state, primary, shadow, method)
        if not differences:
            result = "match"
        else:
            found = sample(method, target, headers, request_id, primary_upstream, primary, policy.upstream, shadow,
                           differences, limit=policy.max_body_bytes)
            del shadow      # the primary may be asked again: two answers at most are held
            if policy.compare.learn_noise and method in SAFE_METHODS:
                await _learn_noise(runtime, route_rt, state, recorder, method, target, headers, body,
                                   primary_upstream, primary)
            if state.only_noise(differences):
                result = "noise"
            else:
                result = "mismatch"
                state.mismatch(differences, found)
    except Skipped as skipped:
        result, reason = "skipped", str(skipped.args[0])
        if reason in _NOT_SENT:
            duration_s = None
    except ShadowFailed as failed:
        result, reason = "shadow_error", str(failed.args[0])
    except Exception:  # noqa: BLE001 - a copy must never take anything else down
        log.exception("shadow.failed route=%s shadow=%s rid=%s", route, policy.upstream, request_id)
        result, reason = "skipped", "internal_error"
    finally:
        state.in_flight -= 1
    if result != "mismatch":
        state.count(result, reason)
    recorder.shadow_copy(route, policy.upstream, result, duration_s)


async def _fetch(upstream: UpstreamState, breaker: CircuitBreaker, recorder: Recorder, route: str, method: str,
                 target: str, headers: list[tuple[bytes, bytes]], body: bytes | None, limit: int) -> Answer:
    """One request to one upstream through its lease, the answer read whole up to `limit`, no retry."""
    try:
        lease = UpstreamLease.acquire(upstream, breaker, recorder, route)
    except CircuitOpen:
        raise Skipped("circuit_open") from None
    except BulkheadFull:
        raise Skipped("bulkhead_full") from None
    try:
        try:
            permit = lease.begin_attempt(route)
        except CircuitOpen:
            raise Skipped("circuit_open") from None
        try:
            # The upstream's timeout bounds the whole copy, so that an endless trickle ends too.
            async with asyncio.timeout(upstream.upstream.timeout_s):
                response = lease.response = await upstream.client.send(method, target, headers, body, route=route)
                if response.status >= 500:
                    permit.record_failure()
                answer = Answer(response.status, response.raw_headers, await _read_body(response, limit))
        except UpstreamError as error:
            permit.record_failure()
            raise ShadowFailed(error.reason.flag) from None
        except TimeoutError:
            permit.record_failure()
            raise ShadowFailed("timeout") from None
        lease.body_complete = True
    finally:
        lease.close()
    return answer


async def _read_body(response: UpstreamResponse, limit: int) -> bytes:
    whole = response.whole_body()
    if whole is not None:
        if len(whole) > limit:
            raise Skipped("shadow_body_too_large")
        return whole
    for name, value in response.raw_headers:
        if name.lower() == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise Skipped("shadow_body_too_large")      # not read at all: the connection is closed
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.chunks():
        size += len(chunk)
        if size > limit:
            raise Skipped("shadow_body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _differences(state: ShadowState, primary: Answer, other: Answer, method: str) -> list[Difference]:
    bodiless = method == "HEAD"
    try:
        if len(primary.body) + len(other.body) <= INLINE_COMPARE_BYTES:
            return state.comparer.differences(primary, other, bodiless=bodiless)
        # Large answers: off the event loop, one comparison at a time, so the proxy keeps serving.
        return await asyncio.get_running_loop().run_in_executor(
            _comparison_thread(), lambda: state.comparer.differences(primary, other, bodiless=bodiless))
    except BodyTooLarge:
        raise Skipped("body_too_large") from None


async def _learn_noise(runtime: Runtime, route_rt: RouteRuntime, state: ShadowState, recorder: Recorder,
                       method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes | None,
                       upstream: str, primary: Answer) -> None:
    """Ask the primary again: the fields in which it differs from its own first answer are noise."""
    try:
        again = await _fetch(runtime.upstreams[upstream], route_rt.breakers[upstream], recorder, route_rt.route.name,
                             method, target, headers, body, state.policy.max_body_bytes)
        noise = await _differences(state, primary, again, method)
    except (Skipped, ShadowFailed):
        return          # judged by the noise learned so far
    state.learn_noise({difference.field for difference in noise})


def _count(state: ShadowState, recorder: Recorder, result: str, reason: str, duration_s: float | None) -> None:
    state.count(result, reason)
    recorder.shadow_copy(state.route, state.policy.upstream, result, duration_s)


def _comparison_thread() -> ThreadPoolExecutor:
    global _comparisons
    if _comparisons is None:
        _comparisons = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strangler-compare")
    return _comparisons
