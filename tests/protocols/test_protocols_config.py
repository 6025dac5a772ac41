"""The config of the protocols: listener and upstream TLS, the encoded-slash policy, WebSocket limits."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
import trustme

from strangler.config.loader import ConfigError, load_config, parse_config
from strangler.config.model import ListenerTls, UpstreamTls

ROUTES = """\
routes:
  - {name: files, match: {path: /files}, to: legacy, paths: {encoded_slash: keep}}
  - {name: rest, match: {path: /}, to: legacy}
"""


def problems(text: str, source: str = "routes.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(dedent(text), source)
    return [str(problem) for problem in info.value.problems]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cert.pem, key.pem (for localhost) and ca.pem in a directory, as a config beside them names them."""
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    issued.cert_chain_pems[0].write_to_path(directory / "cert.pem")
    issued.private_key_pem.write_to_path(directory / "key.pem")
    ca.cert_pem.write_to_path(directory / "ca.pem")
    (directory / "not-pem.txt").write_text("hello")
    return directory


def test_encoded_slash_is_rejected_unless_a_route_or_the_top_level_keeps_it():
    config = parse_config("version: 1\nupstreams: {legacy: {url: http://127.0.0.1:8001}}\n" + ROUTES)
    assert (config.encoded_slash, [route.encoded_slash for route in config.routes]) == ("reject", ["keep", "reject"])
    config = parse_config("version: 1\npaths: {encoded_slash: keep}\nupstreams: {legacy: {url: http://127.0.0.1:8001}}\n"
                          + ROUTES.replace("keep}}\n", "reject}}\n", 1))
    assert (config.encoded_slash, [route.encoded_slash for route in config.routes]) == ("keep", ["reject", "keep"])


def test_an_unknown_encoded_slash_policy_is_a_problem_where_it_is_written():
    found = problems("""\
        version: 1
        paths: {encoded_slash: decode}
        upstreams: {legacy: {url: http://127.0.0.1:8001}}
        routes:
          - {name: rest, match: {path: /}, to: legacy, paths: {encoded_slashes: keep}}
    """)
    assert found == [
        "routes.yaml:2:24: paths.encoded_slash: expected one of reject, keep, found 'decode'",
        "routes.yaml:5:56: routes[0].paths.encoded_slashes: unknown key (did you mean 'encoded_slash'?)",
    ]


def test_websocket_limits_are_durations_with_defaults():
    config = parse_config("version: 1\nupstreams: {legacy: {url: http://127.0.0.1:8001}}\n" + ROUTES)
    assert (config.limits.websocket_idle_timeout_s, config.limits.websocket_drain_timeout_s) == (3600.0, 5.0)
    config = parse_config("version: 1\nlimits: {websocket_idle_timeout: 10m, websocket_drain_timeout: 250ms}\n"
                          "upstreams: {legacy: {url: http://127.0.0.1:8001}}\n" + ROUTES)
    assert (config.limits.websocket_idle_timeout_s, config.limits.websocket_drain_timeout_s) == (600.0, 0.25)


def test_listener_tls_files_are_read_beside_the_config(certs: Path):
    path = certs / "routes.yaml"
    path.write_text("version: 1\nlisten: {port: 8443, tls: {cert: cert.pem, key: key.pem}}\n"
                    "admin: {tls: {cert: cert.pem, key: key.pem}}\n"
                    "upstreams: {legacy: {url: http://127.0.0.1:8001}}\n" + ROUTES)
    config = load_config(path)
    expected = ListenerTls(cert=str(certs / "cert.pem"), key=str(certs / "key.pem"))
    assert config.listen.tls == expected and config.admin.tls == expected and config.listen.port == 8443


def test_a_missing_or_unusable_certificate_or_key_is_a_problem_at_its_line(certs: Path):
    path = certs / "bad.yaml"
    path.write_text(dedent("""\
        version: 1
        listen:
          tls: {cert: missing.pem, key: key.pem}
        admin:
          tls:
            cert: not-pem.txt
            key: key.pem
        upstreams: {legacy: {url: http://127.0.0.1:8001}}
    """) + ROUTES)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [str(problem) for problem in info.value.problems]
    assert found[0].startswith(f"{path}:3:15: listen.tls.cert: cannot read '{certs / 'missing.pem'}': ")
    assert found[1].startswith(f"{path}:6:11: admin.tls.cert: cannot use this certificate with its key (expected a PEM ")
    assert len(found) == 2


def test_upstream_tls_settings(certs: Path):
    path = certs / "upstreams.yaml"
    path.write_text("version: 1\nupstreams:\n"
                    "  legacy: {url: https://10.0.0.5, tls: {ca_file: ca.pem, server_name: shop.internal}}\n"
                    "  lab: {url: https://10.0.0.6:8443, tls: {verify: false}}\n"
                    "  plain: {url: https://shop.example.com}\n"
                    "routes: [{name: rest, match: {path: /}, split: {legacy: 50, lab: 25, plain: 25}}]\n")
    legacy, lab, plain = load_config(path).upstreams
    assert legacy.tls == UpstreamTls(ca_file=str(certs / "ca.pem"), server_name="shop.internal", verify=True)
    assert (lab.url, lab.tls) == ("https://10.0.0.6:8443", UpstreamTls(verify=False))
    assert plain.tls == UpstreamTls()                # the system's CAs, the url's host, verified


def test_upstream_tls_problems():
    found = problems("""\
        version: 1
        upstreams:
          legacy: {url: http://127.0.0.1:8001, tls: {verify: false}}
          orders: {url: https://127.0.0.1:8101, tls: {ca_file: /nonexistent/ca.pem, verify: yes}}
        routes: [{name: rest, match: {path: /}, split: {legacy: 50, orders: 50}}]
    """)
    assert found[0] == "routes.yaml:3:40: upstreams.legacy.tls: tls applies to https:// upstreams only"
    assert found[1].startswith("routes.yaml:4:56: upstreams.orders.tls.ca_file: cannot read '/nonexistent/ca.pem'")
    assert found[2] == ("routes.yaml:4:85: upstreams.orders.tls.verify: 'yes' is a boolean only in YAML 1.1; "
                        "write true or false")
