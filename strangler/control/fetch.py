"""JSON over HTTP for the control plane: a controller asking Prometheus, an instance asking its controller.

The only module of strangler that imports httpx. Whatever goes wrong (refused,
timed out, an answer that is not 200, not JSON) is a FetchError that says what,
in one line, for the log and GET /ramps.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

# One line per poll at INFO would drown the log: an instance polls its controller all day long.
logging.getLogger("httpx").setLevel(logging.WARNING)


class FetchError(Exception):
    """A GET that brought no JSON answer; `status` is the HTTP status when there was one."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


class JsonClient:
    """GETs of JSON documents from one base URL, on a pool of keep-alive connections."""

    def __init__(self, base_url: str, *, timeout_s: float, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": "strangler-control", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # No proxy from the environment, no redirects: the control plane talks to what it was given.
        self._client = httpx.AsyncClient(timeout=timeout_s, headers=headers, trust_env=False, follow_redirects=False)

    def set_token(self, token: str | None) -> None:
        if token:
            self._client.headers["Authorization"] = f"Bearer {token}"
        else:
            self._client.headers.pop("Authorization", None)

    async def get(self, path: str, params: dict[str, Any] | None = None, *,
                  timeout_s: float | None = None) -> Any:
        """The JSON body of GET base_url + path; FetchError otherwise."""
        url = self.base_url + path
        try:
            response = await self._client.get(url, params=params,
                                              timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException:
            raise FetchError(f"{url}: no answer in time") from None
        except httpx.HTTPError as error:
            raise FetchError(f"{url}: unreachable ({type(error).__name__}: {error or 'no detail'})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            detail = body.get("detail") or body.get("error") if isinstance(body, dict) else None
            raise FetchError(f"{url}: answered {response.status_code}"
                             + (f": {detail}" if detail else ""), status=response.status_code)
        if body is None:
            raise FetchError(f"{url}: the answer is not JSON", status=response.status_code)
        return body

    async def close(self) -> None:
        await self._client.aclose()
