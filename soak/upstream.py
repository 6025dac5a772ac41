"""A soak upstream: a real uvicorn server that records the id of every request it acts on.

Run as `python -m soak.upstream PORT NAME`. Each request carries `X-Soak-Id`; the
upstream counts, per method, how many times it saw each id (read the body whole
first: a request whose body did not arrive whole is not acted on, as a real
application would not). It answers 200 with the id in `X-Echo-Id` and in the
body (padded to `?size=N`), so the client can tell its own answer from another's.

`GET /__ids` returns {"GET": {id: count}, "POST": {...}, ..., "POST_REQUEST_IDS": {id: [X-Request-ID, ...]}};
`GET /__health` 200; `POST /__fault` with {"prefix": "/api/ramped"} answers 503 to every request whose
path starts with it, before acting on it (so it is never recorded), and {"prefix": null} stops that.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from urllib.parse import parse_qs

import uvicorn

SEEN: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
# The proxy's X-Request-ID of every POST acted on, so a duplicate tells one forwarded twice from two sent.
POST_REQUEST_IDS: dict[str, list[str]] = defaultdict(list)
FAULT: dict[str, str | None] = {"prefix": None}


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/__ids":
        body = json.dumps({**SEEN, "POST_REQUEST_IDS": POST_REQUEST_IDS}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    if path == "/__health":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path == "/__fault":
        message = await receive()
        FAULT["prefix"] = json.loads(message.get("body") or b"{}").get("prefix")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if FAULT["prefix"] and path.startswith(FAULT["prefix"]):
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"7")]})
        await send({"type": "http.response.body", "body": b"planted"})
        return
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return                                   # an incomplete request is never acted on
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    soak_id = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-soak-id"), "-")
    SEEN[scope["method"]][soak_id] += 1
    if scope["method"] == "POST":
        POST_REQUEST_IDS[soak_id].append(
            next((value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"), "-"))
    size = int(parse_qs(scope["query_string"].decode("latin-1")).get("size", ["0"])[0] or 0)
    body = f"id={soak_id} got={received}".encode()
    body += b"." * max(0, size - len(body))
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/plain"), (b"x-echo-id", soak_id.encode("latin-1")),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def main() -> None:
    port = int(sys.argv[1])
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", log_level="warning", access_log=False,
                lifespan="off", timeout_keep_alive=30)


if __name__ == "__main__":
    main()
