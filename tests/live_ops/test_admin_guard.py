"""The admin listener's rules: the token for every POST, no cross-site POST, loopback without a token,
and clear 4xx problems for bad input to the ramp and roll-back-all endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
import httpx

from strangler.admin import create_admin_app
from strangler.admin_guard import TOKEN_ENV, bind_refusal, own_origin
from strangler.control.plane import local_controller
from strangler.metrics import Metrics
from strangler.reload import ConfigHolder
from tests.support.ramps import config_text


def admin_client(tmp_path: Path, *, token: str | None = "s3cret") -> httpx.AsyncClient:
    text = config_text().replace("version: 1\n", f"version: 1\nstate_dir: {tmp_path / 'state'}\n")
    if token:
        text = text.replace("version: 1\n", f"version: 1\nadmin: {{token: {token}}}\n")
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    holder = ConfigHolder(str(path), Metrics(CollectorRegistry()))
    holder.reload()
    controller = local_controller(holder)
    controller.start()
    transport = httpx.ASGITransport(app=create_admin_app(holder, controller=controller), client=("127.0.0.1", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9000")


BEARER = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize("origin, host, token_set, own", [
    ("http://127.0.0.1:9000", "127.0.0.1:9000", False, True),
    ("http://localhost:9000", "localhost:9000", False, True),
    ("http://evil.example:9000", "127.0.0.1:9000", True, False),          # another site
    ("http://evil.example:9000", "evil.example:9000", False, False),      # DNS rebinding, no token to stop it
    ("http://admin.internal:9000", "admin.internal:9000", True, True),    # a name, with the token required anyway
    ("http://10.0.0.5:9000", "10.0.0.5:9000", False, True),
    ("null", "127.0.0.1:9000", True, False),
    ("http://127.0.0.1:9001", "127.0.0.1:9000", True, False),
])
def test_only_the_listener_s_own_origin_is_its_own(origin, host, token_set, own) -> None:
    assert own_origin(origin, host, "127.0.0.1", token_set=token_set) is own


def test_without_a_token_only_loopback_binds_unless_asked_for() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert bind_refusal(host, explicit=False, token=None) is None
    refusal = bind_refusal("0.0.0.0", explicit=False, token=None)
    assert refusal is not None and "--admin-host 0.0.0.0" in refusal and TOKEN_ENV in refusal
    assert bind_refusal("0.0.0.0", explicit=True, token=None) is None
    assert bind_refusal("10.1.2.3", explicit=False, token="t") is None


async def test_every_post_needs_the_token_and_reads_never_do(tmp_path: Path) -> None:
    client = admin_client(tmp_path)
    for path in ("/rollback-all", "/rollback-all/lift", "/ramps/orders-read/pause", "/reload"):
        refused = await client.post(path, json={"reason": "x"})
        assert refused.status_code == 401, path
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert (await client.post("/rollback-all", json={"reason": "x"}, headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.post("/rollback-all", json={"reason": "x"}, headers={"Authorization": "s3cret"})).status_code == 401
    for path in ("/metrics", "/health/live", "/health/ready", "/routes", "/ramps", "/rollback-all"):
        assert (await client.get(path)).status_code == 200, path
    done = await client.post("/rollback-all", json={"reason": "drill"}, headers=BEARER)
    assert done.status_code == 200 and done.json()["active"] is True


async def test_a_post_from_another_origin_is_refused_even_with_the_token(tmp_path: Path) -> None:
    client = admin_client(tmp_path)
    refused = await client.post("/rollback-all", json={"reason": "x"}, headers={**BEARER, "Origin": "http://evil.example"})
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    same = await client.post("/rollback-all", json={"reason": "x"}, headers={**BEARER, "Origin": "http://127.0.0.1:9000"})
    assert same.status_code == 200


async def test_the_environment_s_token_takes_the_place_of_the_file_s(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    client = admin_client(tmp_path)
    assert (await client.post("/rollback-all", json={"reason": "x"}, headers=BEARER)).status_code == 401
    assert (await client.post("/rollback-all", json={"reason": "x"},
                       headers={"Authorization": "Bearer from-env"})).status_code == 200


async def test_without_a_token_a_post_with_no_origin_goes_through_and_a_foreign_one_does_not(tmp_path: Path) -> None:
    client = admin_client(tmp_path, token=None)
    assert (await client.post("/ramps/orders-read/pause")).status_code == 200
    assert (await client.post("/ramps/orders-read/resume", headers={"Origin": "http://evil.example"})).status_code == 403


@pytest.mark.parametrize("path, body, status, title", [
    ("/rollback-all", b"", 400, "Reason required"),
    ("/rollback-all", b'{"reason": "   "}', 400, "Reason required"),
    ("/rollback-all", b'{"reason": 7}', 400, "Bad reason"),
    ("/rollback-all", b"{not json", 400, "Malformed JSON"),
    ("/rollback-all", b'["reason"]', 400, "Malformed JSON"),
    ("/ramps/nope/pause", b"", 404, "No such ramp"),
    ("/ramps/orders-read/fly", b"", 404, "No such action"),
    ("/ramps/orders-read/pause", b"{", 400, "Malformed JSON"),
    ("/ramps/orders-read/promote", b"x" * 70_000, 413, "Body too large"),
])
async def test_bad_admin_input_gets_a_clear_problem_never_a_500(tmp_path: Path, path, body, status, title) -> None:
    client = admin_client(tmp_path)
    answer = await client.post(path, content=body, headers=BEARER)
    assert answer.status_code == status and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == title and answer.json()["detail"]


async def test_the_routes_document_says_which_split_is_in_force_and_why(tmp_path: Path) -> None:
    client = admin_client(tmp_path)
    await client.post("/rollback-all", json={"reason": "drill"}, headers=BEARER)
    route = next(r for r in (await client.get("/routes")).json()["routes"] if r["name"] == "orders-read")
    assert route["split"] == {"orders": 0, "legacy": 100} and route["config_split"] == {"orders": 5, "legacy": 95}
    assert route["split_source"] == "rollback_all"
