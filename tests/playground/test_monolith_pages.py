"""The legacy shop behaves like a real monolith: sessions, CSRF, redirects, gzip, exports, uploads."""

from __future__ import annotations

import gzip
import hashlib
import json
import time

import httpx

from tests.playground.conftest import browser, csrf_token, log_in


async def test_login_sets_a_signed_session_and_rotates_the_csrf_secret(shop: httpx.AsyncClient) -> None:
    """A good login redirects to `next`, with a new HttpOnly session cookie and a new CSRF secret."""
    before = (await shop.get("/accounts/login/")).cookies["csrftoken"]
    response = await log_in(shop, "alice@example.com", "wonderland", next_path="/orders/")
    assert response.status_code == 302
    assert response.headers["location"] == "http://shop.test/orders/"
    set_cookies = response.headers.get_list("set-cookie")
    assert any(c.startswith("sessionid=") and "HttpOnly" in c and "SameSite=Lax" in c for c in set_cookies)
    assert shop.cookies["csrftoken"] != before
    profile = await shop.get("/accounts/profile/")
    assert profile.status_code == 200 and "Alice Liddell" in profile.text


async def test_wrong_password_shows_the_form_again_without_a_session(shop: httpx.AsyncClient) -> None:
    response = await log_in(shop, "alice@example.com", "looking-glass")
    assert response.status_code == 200 and "correct email and password" in response.text
    assert "sessionid" not in shop.cookies


async def test_form_post_without_a_csrf_token_is_forbidden(shop: httpx.AsyncClient) -> None:
    await shop.get("/accounts/login/")
    response = await shop.post("/accounts/login/", data={"email": "alice@example.com", "password": "wonderland"})
    assert response.status_code == 403 and "CSRF" in response.text


async def test_token_from_another_visitor_is_forbidden(shop: httpx.AsyncClient, shop_app) -> None:
    """A token is only good with the secret in the same browser's cookie."""
    token = csrf_token(await shop.get("/accounts/login/"))
    async with browser(shop_app) as attacker:
        await attacker.get("/accounts/login/")
        response = await attacker.post("/accounts/login/", data={
            "email": "alice@example.com", "password": "wonderland", "csrfmiddlewaretoken": token})
    assert response.status_code == 403


async def test_cross_origin_form_post_is_forbidden(shop: httpx.AsyncClient) -> None:
    token = csrf_token(await shop.get("/accounts/login/"))
    response = await shop.post("/accounts/login/", headers={"Origin": "https://evil.example"}, data={
        "email": "alice@example.com", "password": "wonderland", "csrfmiddlewaretoken": token})
    assert response.status_code == 403 and "Origin" in response.text


async def test_pages_for_members_send_visitors_to_login_with_next(shop: httpx.AsyncClient) -> None:
    response = await shop.get("/orders/")
    assert response.status_code == 302
    assert response.headers["location"] == "http://shop.test/accounts/login/?next=/orders/"


async def test_missing_trailing_slash_redirects_to_the_forwarded_host(shop: httpx.AsyncClient) -> None:
    """Location is absolute and built from X-Forwarded-Proto/-Host, falling back to Host."""
    plain = await shop.get("/shipping?page=2")
    assert plain.status_code == 301 and plain.headers["location"] == "http://shop.test/shipping/?page=2"
    forwarded = await shop.get("/shipping", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example.com"})
    assert forwarded.headers["location"] == "https://shop.example.com/shipping/"
    assert (await shop.get("/no/such/page")).status_code == 404


async def test_large_responses_are_gzipped_and_small_ones_are_not(shop: httpx.AsyncClient) -> None:
    request = shop.build_request("GET", "/api/orders/", headers={"Accept-Encoding": "gzip"})
    response = await shop.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip" and raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(raw))["count"] == 24
    small = await shop.get("/health/live", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


async def test_csv_export_streams_every_order_line_for_staff(shop: httpx.AsyncClient) -> None:
    await log_in(shop, "bob@example.com", "canwefixit")
    async with shop.stream("GET", "/orders/export.csv") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert "content-length" not in response.headers  # streamed, not buffered
        body = (await response.aread()).decode()
    rows = body.splitlines()
    assert rows[0].startswith("order_id,created_at,customer_email") and len(rows) == 1 + 46


async def test_csv_export_is_for_staff_only(shop: httpx.AsyncClient) -> None:
    await log_in(shop, "alice@example.com", "wonderland")
    assert (await shop.get("/orders/export.csv")).status_code == 403


async def test_upload_stores_the_file_and_reports_its_digest(shop: httpx.AsyncClient, data_dir) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB of binary, every byte value
    token = csrf_token(await shop.get("/uploads/"))
    response = await shop.post("/uploads/", data={"csrfmiddlewaretoken": token},
                               files={"file": ("manifest.bin", content, "application/octet-stream")})
    digest = hashlib.sha256(content).hexdigest()
    assert response.status_code == 200 and f'<code class="sha256">{digest}</code>' in response.text
    assert (data_dir / "uploads" / digest).read_bytes() == content


async def test_upload_without_csrf_token_is_forbidden(shop: httpx.AsyncClient) -> None:
    await shop.get("/uploads/")
    response = await shop.post("/uploads/", files={"file": ("a.txt", b"hello", "text/plain")})
    assert response.status_code == 403


async def test_slow_report_takes_its_time_and_then_answers(shop: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await shop.get("/reports/slow/?seconds=0.3")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200 and "ESP-001" in response.text


async def test_health_endpoints_answer_when_migrated(shop: httpx.AsyncClient) -> None:
    assert (await shop.get("/health/live")).json() == {"status": "ok"}
    assert (await shop.get("/health/ready")).status_code == 200
