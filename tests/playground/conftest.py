"""The legacy shop with its seeded data, in-process or as a real server, for behaviour tests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from legacy_monolith.asgi import build_app
from tests.support.seeded import data_dir, seeded_template  # noqa: F401  (fixtures)

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([0-9a-f]+)"')


@pytest.fixture
def shop_app(data_dir: Path) -> Starlette:
    return build_app(data_dir)


def browser(app: Starlette) -> httpx.AsyncClient:
    """A browser-like client (it keeps cookies) on the monolith, in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")


@pytest.fixture
async def shop(shop_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with browser(shop_app) as client:
        yield client


def csrf_token(page: httpx.Response) -> str:
    match = CSRF_FIELD.search(page.text)
    assert match, f"no CSRF field on {page.url}"
    return match.group(1)


async def log_in(client: httpx.AsyncClient, email: str, password: str, next_path: str = "") -> httpx.Response:
    """Fill in the login form as a browser would: fetch it, then post it with its token."""
    form = await client.get("/accounts/login/")
    data = {"email": email, "password": password, "csrfmiddlewaretoken": csrf_token(form)}
    if next_path:
        data["next"] = next_path
    return await client.post("/accounts/login/", data=data)
