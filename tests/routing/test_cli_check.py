"""`strangler check PATH`: exit 0 and the routing table when valid, every problem at once and exit 1 when not."""

from __future__ import annotations

from strangler.cli import main

VALID = """\
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:8001"}
  orders: {url: "http://127.0.0.1:8101"}
routes:
  - name: orders
    match: {path: /api/orders, methods: [GET]}
    split: {orders: 25, legacy: 75}
    fallback: legacy
    sticky: header:X-User-Id
  - name: all
    match: {path: /}
    to: legacy
  - name: never
    match: {path: /api}
    to: legacy
"""


def test_a_valid_config_prints_the_routing_table_and_warns_about_shadowed_routes(tmp_path, capsys):
    path = tmp_path / "routes.yaml"
    path.write_text(VALID)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: valid, version ")
    assert lines[1].split() == ["ROUTE", "MATCH", "SPLIT", "FALLBACK", "STICKY"]
    assert lines[2].split() == ["orders", "GET", "/api/orders", "orders", "25%,", "legacy", "75%", "legacy",
                                "header:X-User-Id"]
    assert lines[3].split() == ["all", "*", "/", "legacy", "100%", "-", "cohort"]
    assert f"warning: {path}:14:5: routes[2]: route 'never' is shadowed by route 'all' (routes[1])" in err


def test_an_invalid_config_reports_every_problem_with_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "routes.yaml"
    path.write_text(VALID.replace("orders: 25, legacy: 75", "orders: 25, legacy: 65")
                    .replace("    fallback: legacy\n", "    fallback: legacy\n    retries: 2\n"))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:8:5: routes[0].split: percentages add up to 90, not 100" in err
    assert f"{path}:10:5: routes[0].retries: unknown key" in err and "did you mean 'retry'" in err
    assert err.rstrip().endswith(f"{path}: invalid, 2 problem(s)")
