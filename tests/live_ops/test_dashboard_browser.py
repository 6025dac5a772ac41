"""The dashboard as a person sees it: headless Chromium on GET / of a real `strangler run` with real upstreams.

One proxy with the demo's shape of routes (and a ramp) serves most of the module,
and one page stays open on its admin listener while the tests, in order, send
traffic, break an upstream, steer the ramp, roll everything back and lift it, and
try a cross-site POST. Others start their own: an admin token, 200 routes, and an
admin app in-process whose shadow counters and document the test sets. Every
wait polls with a deadline. `make screenshot` (STRANGLER_SCREENSHOT=1) saves the
page to docs/dashboard.png, the picture the README shows; otherwise it goes to
the test's temporary folder.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from strangler.admin import create_admin_app
from strangler.dashboard import Dashboard, DashboardSources
from strangler.metrics import Metrics
from strangler.reload import ConfigHolder
from tests.support.browser import chromium
from tests.support.metrics import routes as get_routes
from tests.support.servers import REPO, Named, ProxyProcess, ThreadedServer, wait_until

SCREENSHOT = REPO / "docs" / "dashboard.png"


class CrossSitePage:
    """Another site's page (another origin): its script POSTs to the admin listener as a browser lets any page."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        # A "simple" request (text/plain, no custom header) needs no CORS preflight: only the server can refuse it.
        page = f"""<!doctype html><title>elsewhere</title><script>
          const sent = (path, body) => fetch("{self.admin_url}" + path, {{method: "POST", mode: "no-cors",
            headers: {{"Content-Type": "text/plain"}}, body}});
          Promise.allSettled([sent("/rollback-all", '{{"reason": "cross-site"}}'), sent("/reload", "")])
            .then(() => {{ document.title = "sent"; }});
        </script>"""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": page.encode()})


@dataclass
class Site:
    proxy: ProxyProcess
    inventory: Named
    page: Any
    console: list[str]
    elsewhere: list[str]          # requests the page made to anything but its own listener
    tmp: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as found:
        yield found


@pytest.fixture(scope="module")
def site(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    inventory = Named("inventory")
    upstreams = [ThreadedServer(app).start() for app in (Named("legacy"), Named("orders"), inventory, Named("payments"))]
    legacy, orders, inventory_server, payments = (server.url for server in upstreams)
    config = tmp / "routes.yaml"
    # The demo's routes (config/routes.yaml): inventory moved, order reads split, the rest on legacy.
    config.write_text(f"""
version: 1
upstreams:
  legacy: {{url: "{legacy}", role: legacy}}
  orders: {{url: "{orders}"}}
  inventory: {{url: "{inventory_server}"}}
  payments: {{url: "{payments}"}}
defaults:
  retry: {{attempts: 1}}
  circuit_breaker: {{failure_threshold: 3, recovery_timeout: 5m}}
routes:
  - name: inventory
    match: {{path: /api/inventory}}
    to: inventory
    fallback: legacy
  - name: orders-read
    match: {{path: /api/orders, methods: [GET, HEAD]}}
    split: {{orders: 25, legacy: 75}}
    fallback: legacy
    ramp: {{to: orders, steps: [25, 50, 100], every: 10m}}      # no decision while the tests run
  - name: orders-write
    match: {{path: /api/orders, methods: [POST, PUT, PATCH, DELETE]}}
    to: legacy
  - name: payments
    match: {{path: /api/payments}}
    split: {{payments: 10, legacy: 90}}
    fallback: legacy
  - name: everything-else
    match: {{path: /}}
    to: legacy
    shadow: {{upstream: orders}}      # orders answers otherwise: every copy differs
""")
    proxy = ProxyProcess(config)
    try:
        proxy.start()
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        console: list[str] = []
        elsewhere: list[str] = []
        page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: console.append(f"uncaught: {error}"))
        page.on("request", lambda request: None if request.url.startswith(proxy.admin_url + "/")
                else elsewhere.append(request.url))
        page.goto(proxy.admin_url + "/")
        yield Site(proxy, inventory, page, console, elsewhere, tmp)
        page.close()
    finally:
        if proxy.process is not None:
            proxy.terminate()
        for server in upstreams:
            server.stop()


def shown_routes(page: Any) -> list[dict]:
    """What the page shows per route: its name, split and breakers, read from the DOM."""
    return page.evaluate("""() => [...document.querySelectorAll("#routes tbody tr")].map((row) => ({
        name: row.dataset.route,
        split: JSON.parse(row.querySelector(".splittext").dataset.split || "{}"),
        breakers: Object.fromEntries([...row.querySelectorAll(".chip")].map((c) => [c.dataset.upstream, c.dataset.state])),
        rps: row.querySelector(".rps .value").textContent,
        spark: [...row.querySelectorAll(".rps .spark path")].map((path) => path.getAttribute("d")).join(""),
    }))""")


def from_admin(admin_url: str) -> list[dict]:
    return [{"name": route["name"], "split": route["split"],
             "breakers": {name: breaker["state"] for name, breaker in route["breakers"].items()}}
            for route in get_routes(admin_url)["routes"]]


def served_in_window(page: Any) -> int:
    return int(page.locator("#requests-seen").inner_text().split()[0])


def upstreams_of(url: str, count: int) -> Counter[str]:
    """Who answered `count` GETs, each as a new visitor (a new cohort)."""
    found: Counter[str] = Counter()
    with httpx.Client() as client:
        for _ in range(count):
            client.cookies.clear()          # no strangler_cohort cookie: a new visitor
            found[client.get(url).headers.get("x-strangler-upstream", "?")] += 1
    return found


def test_the_page_loads_from_the_listener_alone_with_no_console_errors(site: Site) -> None:
    site.page.wait_for_selector("#routes tbody tr", timeout=10_000)
    wait_until(lambda: "live" in site.page.locator("#status").inner_text(), timeout_s=10, what="a poll to succeed")
    assert site.console == []
    assert site.elsewhere == []


def test_the_routes_and_splits_shown_equal_get_routes(site: Site) -> None:
    expected = from_admin(site.proxy.admin_url)
    wait_until(lambda: [{key: route[key] for key in ("name", "split", "breakers")} for route in shown_routes(site.page)]
               == expected, timeout_s=10, what="the page to show GET /routes")
    assert [route["name"] for route in expected] == ["inventory", "orders-read", "orders-write", "payments",
                                                     "everything-else"]
    assert site.page.locator("#routes-moved").inner_text() == "1 of 5"


def test_traffic_sent_during_the_test_appears_in_the_rates(site: Site) -> None:
    before = served_in_window(site.page)
    sent = Counter()
    for path, count in (("/api/orders/", 120), ("/api/inventory/", 40), ("/", 40), ("/api/payments/", 40)):
        sent += upstreams_of(site.proxy.url + path, count)
    assert sum(sent.values()) == 240 and set(sent) == {"orders", "legacy", "inventory", "payments"}
    # The admin counts every 5 seconds: the next tick shows them all.
    wait_until(lambda: served_in_window(site.page) >= before + 240, timeout_s=20, interval_s=0.25,
               what="the page to count the requests sent")
    rows = {route["name"]: route for route in shown_routes(site.page)}
    for name in ("orders-read", "inventory", "payments", "everything-else"):
        assert float(rows[name]["rps"]) > 0, rows[name]
    assert rows["orders-write"]["rps"] in ("0.00", "–")
    # The copies of GET / went to orders, whose answer differs from legacy's: GET /shadow says where.
    shadow = site.page.locator('tr[data-route="everything-else"] .shadow')
    wait_until(lambda: shadow.locator(".rate").count() == 1 and shadow.locator(".rate").inner_text() == "0.00% match",
               timeout_s=10, what="the page to show the shadow's match rate")
    assert shadow.locator("li").count() >= 1
    samples = httpx.get(f"{site.proxy.admin_url}/{shadow.locator('a').get_attribute('href')}", timeout=5).json()
    assert samples["route"] == "everything-else" and samples["samples"]
    share = float(site.page.locator("#new-share").inner_text().rstrip("%")) / 100
    assert share > 0
    wait_until(lambda: all(route["spark"] for route in shown_routes(site.page) if route["name"] != "orders-write"),
               timeout_s=10, what="sparklines of the routes that had traffic")
    assert site.console == []


def test_an_upstream_made_to_fail_shows_its_breaker_open(site: Site) -> None:
    with _scene_for_the_picture(site):
        site.inventory.failing = True
        try:
            with httpx.Client() as client:
                answers = Counter(client.get(site.proxy.url + "/api/inventory/").headers["x-strangler-upstream"]
                                  for _ in range(6))
            assert answers["legacy"] == 6          # the fallback took every one of them
            chip = site.page.locator('tr[data-route="inventory"] .chip[data-upstream="inventory"]')
            wait_until(lambda: chip.get_attribute("data-state") == "open", timeout_s=10,
                       what="the page to show inventory's breaker open")
            assert chip.inner_text() == "inventory: open"
            assert site.page.locator("#breakers-open").inner_text() == "1 open"
            assert from_admin(site.proxy.admin_url)[0]["breakers"]["inventory"] == "open"
            # What the fallback took from inventory is inventory's error, though every client got a 200.
            fallbacks = site.page.locator('tr[data-route="inventory"] .fallbacks')
            wait_until(lambda: fallbacks.inner_text() not in ("0.00", "–"), timeout_s=15,
                       what="the page to count inventory's fallbacks")
            assert site.page.locator('tr[data-route="inventory"] .errors .new-text').inner_text() != "0.00%"
            _screenshot(site)
        finally:
            site.inventory.failing = False
    assert site.console == []


def ramp_of(admin_url: str, route: str) -> dict:
    return next(ramp for ramp in httpx.get(admin_url + "/ramps", timeout=5).json()["ramps"] if ramp["route"] == route)


def test_the_ramp_buttons_pause_resume_and_roll_back_a_ramp(site: Site) -> None:
    page, admin = site.page, site.proxy.admin_url
    row = page.locator('tr[data-route="orders-read"]')
    state = row.locator(".ramp-state .state")
    wait_until(lambda: state.inner_text() == "running", timeout_s=10, what="the ramp shown running")
    assert "step 1/3" in row.locator(".ramp-state").inner_text()
    assert "next decision in" in row.locator(".ramp-next").inner_text()
    row.locator('button[data-action="pause"]').click()
    wait_until(lambda: ramp_of(admin, "orders-read")["state"] == "paused", timeout_s=5, what="the ramp paused")
    wait_until(lambda: state.inner_text() == "paused", timeout_s=10, what="the page to show it paused")
    row.locator('button[data-action="resume"]').click()
    wait_until(lambda: ramp_of(admin, "orders-read")["state"] == "running", timeout_s=5, what="the ramp resumed")
    # Rolling one ramp back asks first; its route then goes to legacy, and resuming starts from the config.
    row.locator('button[data-action="rollback"]').click()
    page.locator("#confirm-ramp-reason").fill("totals differ")
    page.locator("#confirm-ramp-go").click()
    wait_until(lambda: ramp_of(admin, "orders-read")["state"] == "rolled_back", timeout_s=5, what="the ramp rolled back")
    wait_until(lambda: next(r for r in shown_routes(page) if r["name"] == "orders-read")["split"]
               == {"orders": 0, "legacy": 100}, timeout_s=10, what="the page to show orders-read on legacy")
    assert ramp_of(admin, "orders-read")["history"][0]["reason"] == "totals differ"
    row.locator('button[data-action="resume"]').click()
    wait_until(lambda: ramp_of(admin, "orders-read")["split"] == {"orders": 25, "legacy": 75}, timeout_s=5,
               what="the ramp to start again at its first step")
    wait_until(lambda: state.inner_text() == "running", timeout_s=10, what="the page to show it running")
    assert site.console == []


def test_roll_back_everything_sends_every_request_to_legacy_until_lifted(site: Site) -> None:
    page, admin = site.page, site.proxy.admin_url
    page.locator("#rollback-all").click()
    page.locator("#confirm-all-reason").fill("orders answers wrong totals")
    page.locator("#confirm-all-go").click()
    page.locator("#banner").wait_for(state="visible", timeout=5_000)
    assert "orders answers wrong totals" in page.locator("#banner-detail").inner_text()
    # Within a second, every route that names legacy sends it everything.
    wait_until(lambda: next(r for r in from_admin(admin) if r["name"] == "orders-read")["split"]["legacy"] == 100,
               timeout_s=5, what="orders-read to go to legacy")
    assert upstreams_of(site.proxy.url + "/api/orders/", 100) == Counter(legacy=100)
    wait_until(lambda: next(r for r in shown_routes(page) if r["name"] == "orders-read")["split"]["legacy"] == 100,
               timeout_s=10, what="the page to show orders-read on legacy")
    page.locator("#lift").click()
    page.locator("#banner").wait_for(state="hidden", timeout=5_000)
    wait_until(lambda: next(r for r in from_admin(admin) if r["name"] == "orders-read")["split"]
               == {"orders": 25, "legacy": 75}, timeout_s=5, what="the split to come back")
    wait_until(lambda: [{key: route[key] for key in ("name", "split")} for route in shown_routes(page)]
               == [{key: route[key] for key in ("name", "split")} for route in from_admin(admin)],
               timeout_s=10, what="the page to show the splits restored")
    assert upstreams_of(site.proxy.url + "/api/orders/", 100)["orders"] > 0
    assert site.console == []


def test_a_cross_site_post_is_refused(site: Site, browser: Any) -> None:
    """Another site's page cannot drive the admin API: its POSTs carry its own Origin and get 403."""
    admin = site.proxy.admin_url
    direct = httpx.post(admin + "/rollback-all", json={"reason": "x"}, headers={"Origin": "http://elsewhere.example"})
    assert direct.status_code == 403 and direct.headers["content-type"] == "application/problem+json"
    elsewhere = ThreadedServer(CrossSitePage(admin)).start()
    try:
        page = browser.new_page()
        answers: list[tuple[str, int]] = []
        page.on("response", lambda response: answers.append((response.url, response.status))
                if response.request.method == "POST" else None)
        page.goto(elsewhere.url.replace("127.0.0.1", "localhost") + "/")
        wait_until(lambda: page.title() == "sent", timeout_s=10, what="the other site's page to send its POSTs")
        wait_until(lambda: len(answers) == 2, timeout_s=10, what="both answers")
        assert sorted(answers) == [(admin + "/reload", 403), (admin + "/rollback-all", 403)]
        page.close()
    finally:
        elsewhere.stop()
    assert httpx.get(admin + "/rollback-all", timeout=5).json()["active"] is False


@contextmanager
def _scene_for_the_picture(site: Site) -> Iterator[None]:
    """For the README's picture (STRANGLER_SCREENSHOT=1): a few minutes of steady traffic first, so that the
    sparklines have a shape, going on while the test breaks an upstream."""
    if not os.environ.get("STRANGLER_SCREENSHOT"):
        yield
        return
    stop = threading.Event()

    def visitors(path: str, pause_s: float) -> None:
        with httpx.Client() as client:
            while not stop.wait(pause_s):
                client.cookies.clear()
                client.get(site.proxy.url + path)

    threads = [threading.Thread(target=visitors, args=(path, pause)) for path, pause in (
        ("/api/orders/", 0.02), ("/api/orders/", 0.05), ("/api/inventory/", 0.05), ("/", 0.03), ("/api/payments/", 0.1))]
    for thread in threads:
        thread.start()
    try:
        stop.wait(float(os.environ.get("STRANGLER_SCREENSHOT_SECONDS", "180")))
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_the_page_asks_for_the_admin_token_once_and_sends_it_with_every_change(browser: Any, start_upstream,
                                                                                 start_proxy) -> None:
    token = "correct horse battery staple"
    legacy, orders = start_upstream(Named("legacy")), start_upstream(Named("orders"))
    proxy = start_proxy(f"""
version: 1
admin: {{token: "{token}"}}
upstreams:
  legacy: {{url: "{legacy.url}", role: legacy}}
  orders: {{url: "{orders.url}"}}
routes:
  - name: orders-read
    match: {{path: /api/orders}}
    split: {{orders: 25, legacy: 75}}
    fallback: legacy
    ramp: {{to: orders, steps: [25, 50, 100], every: 10m}}
""")
    page = browser.new_page()
    sent: list[tuple[str, str | None, str | None]] = []
    page.on("request", lambda request: sent.append((request.url.rsplit("/", 1)[-1], request.headers.get(
        "authorization"), request.headers.get("x-strangler-admin"))) if request.method == "POST" else None)
    try:
        page.goto(proxy.admin_url + "/")
        state = page.locator('tr[data-route="orders-read"] .ramp-state .state')
        wait_until(lambda: state.count() == 1 and state.inner_text() == "running", timeout_s=10, what="the ramp")
        dialog, field = page.locator("#token-dialog"), page.locator("#token-input")
        page.locator('tr[data-route="orders-read"] button[data-action="pause"]').click()
        dialog.wait_for(state="visible", timeout=5_000)       # asked before the first change
        field.fill("a wrong guess")
        field.press("Enter")
        dialog.wait_for(state="visible", timeout=5_000)       # refused (401): asked again
        wait_until(lambda: len(sent) == 1, timeout_s=5, what="the refused POST")
        field.fill(token)
        page.locator("#token-go").click()
        wait_until(lambda: ramp_of(proxy.admin_url, "orders-read")["state"] == "paused", timeout_s=5,
                   what="the ramp paused")
        page.locator('tr[data-route="orders-read"] button[data-action="resume"]').click()
        wait_until(lambda: ramp_of(proxy.admin_url, "orders-read")["state"] == "running", timeout_s=5,
                   what="the ramp resumed, without asking again")
        assert dialog.is_hidden()
        assert sent == [("pause", "Bearer a wrong guess", "1"), ("pause", f"Bearer {token}", "1"),
                        ("resume", f"Bearer {token}", "1")]
        assert page.evaluate("sessionStorage.getItem('strangler.adminToken')") == token
    finally:
        page.close()


def test_the_shadow_column_shows_the_match_rate_the_fields_that_differ_and_the_samples(
        browser: Any, tmp_path: Path) -> None:
    """Shadow traffic reaches the page through its counters and GET /shadow's document (DashboardSources): here
    both are the test's, so that a field that differs is on the page without a shadow upstream to make it."""
    path = tmp_path / "routes.yaml"
    path.write_text("""
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9", role: legacy}
  orders: {url: "http://127.0.0.1:9"}
routes:
  - name: orders-read
    match: {path: /api/orders}
    to: legacy
""")
    holder = ConfigHolder(str(path), Metrics())
    holder.reload()
    copies = holder.metrics.shadow_requests
    listed = {"routes": [{"route": "orders-read", "shadow": "orders", "match_rate": 0.5,
                          "top_fields": [{"field": "$.total_cents", "count": 12}, {"field": "$.lines[*].sku", "count": 3}]}]}
    dashboard = Dashboard(holder, DashboardSources(shadow=lambda: listed))
    dashboard.history.tick()
    copies.labels("orders-read", "orders", "match").inc(970)
    copies.labels("orders-read", "orders", "mismatch").inc(30)
    copies.labels("orders-read", "orders", "skipped").inc(400)
    dashboard.history.tick()
    with ThreadedServer(create_admin_app(holder, dashboard=dashboard)) as admin:
        page = browser.new_page()
        try:
            page.goto(admin.url + "/")
            cell = page.locator('tr[data-route="orders-read"] .shadow')
            cell.locator(".rate").wait_for(timeout=10_000)
            assert cell.locator(".rate").inner_text() == "97.00% match"       # from the counters
            assert "bad-text" in cell.locator(".rate").get_attribute("class")  # under 99%
            assert cell.locator("li").all_inner_texts() == ["$.total_cents (12)", "$.lines[*].sku (3)"]
            assert cell.locator("a").get_attribute("href") == "shadow/orders-read/samples"
            assert page.locator("th.col-shadow").is_visible()
        finally:
            page.close()


LONG_TASKS = """
    window.longTasks = [];
    new PerformanceObserver((list) => list.getEntries().forEach((task) => window.longTasks.push(
        {start: task.startTime, ms: task.duration}))).observe({type: "longtask", buffered: true});
"""


def test_the_page_stays_responsive_with_200_routes(browser: Any, start_upstream, start_proxy) -> None:
    """200 rows render once; each poll after that updates them in place without a long task (>= 200 ms)."""
    legacy, new = start_upstream(Named("legacy")), start_upstream(Named("new"))
    routes = "".join(f"""
  - name: route-{index:03d}
    match: {{path: /r{index}}}
    split: {{new: {index % 101}, legacy: {100 - index % 101}}}
    fallback: legacy
    sticky: none""" for index in range(200))
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{legacy.url}"}}
  new: {{url: "{new.url}"}}
routes:{routes}
""")

    def traffic() -> None:
        with httpx.Client() as client:
            for index in range(400):
                assert client.get(f"{proxy.url}/r{index % 200}").status_code == 200

    traffic()
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    try:
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.add_init_script(LONG_TASKS)
        page.goto(proxy.admin_url + "/")
        wait_until(lambda: page.locator("#routes tbody tr").count() == 200, timeout_s=20, what="200 rows")
        rendered = page.evaluate("performance.now()")
        wait_until(lambda: served_in_window(page) >= 400, timeout_s=20, interval_s=0.25, what="the first figures")
        traffic()
        wait_until(lambda: served_in_window(page) >= 800, timeout_s=20, interval_s=0.25, what="the next figures")
        polls = page.evaluate("performance.now()") - rendered
        late = [task for task in page.evaluate("window.longTasks") if task["start"] > rendered and task["ms"] >= 200]
        assert late == [], f"long tasks while polling for {polls / 1000:.0f} s: {late}"
        page.locator("#filter").fill("route-19")
        wait_until(lambda: page.locator("#routes tbody tr:not(.filtered)").count() == 10, timeout_s=5,
                   what="the filter to keep route-190 to route-199")
        assert errors == []
    finally:
        page.close()


def _screenshot(site: Site) -> None:
    path = SCREENSHOT if os.environ.get("STRANGLER_SCREENSHOT") else site.tmp / "dashboard.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    site.page.screenshot(path=str(path), full_page=True)
