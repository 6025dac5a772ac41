"""The parts of uvicorn's httptools protocol that strangler/protocol.py overrides, calls and reads are still there.

protocol.py subclasses a class uvicorn does not promise to keep: pyproject.toml bounds
uvicorn to the minor version tested, and this test says what to look at before moving
that bound. Everything is read from the source (protocol.py's with ast, uvicorn's with
inspect), so a rename on either side fails here rather than on a client's connection.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from strangler import protocol

OURS = ast.parse(Path(protocol.__file__).read_text())
UVICORN = ast.parse(inspect.getsource(httptools_impl))

# What protocol.py relied on when this test was written; the reading below must find these at least.
KNOWN_HOOKS = {
    "_unset_keepalive_if_required", "connection_made", "connection_lost", "on_message_begin", "on_url", "on_header",
    "on_headers_complete", "on_body", "on_message_complete", "on_response_complete", "shutdown",
}
# `parser` is replaced after an upgrade request (uvicorn's callbacks must read the new one);
# `connections` takes a WebSocket tunnel in the protocol's place.
KNOWN_ATTRIBUTES = {"cycle", "pipeline", "parser", "transport", "loop", "client", "headers", "scope", "connections"}
KNOWN_CYCLE_FIELDS = {
    "response_complete", "response_started", "keep_alive", "transport", "disconnected", "message_event", "more_body",
}


def class_node(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)


def self_attributes(cls: ast.ClassDef, *, stored: bool) -> set[str]:
    """Names set (stored=True) or read (stored=False) as self.<name> in the class's methods."""
    wanted = ast.Store if stored else ast.Load
    return {node.attr for node in ast.walk(cls) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "self" and isinstance(node.ctx, wanted)}


def methods(cls: ast.ClassDef) -> set[str]:
    return {node.name for node in cls.body if isinstance(node, ast.FunctionDef)}


def inherited_names_used() -> set[str]:
    """What LimitedHttpToolsProtocol calls through super(), reads on self without defining it, or
    replaces on self while uvicorn's own methods read it."""
    ours = class_node(OURS, "LimitedHttpToolsProtocol")
    via_super = {node.attr for node in ast.walk(ours) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                 and node.value.func.id == "super"}
    theirs = self_attributes(class_node(UVICORN, "HttpToolsProtocol"), stored=True)
    stored = self_attributes(ours, stored=True)
    own = methods(ours) | (stored - theirs)
    return via_super | (self_attributes(ours, stored=False) - own) | (stored & theirs)


def cycle_fields_used() -> set[str]:
    """Attributes protocol.py reads or sets on uvicorn's RequestResponseCycle (`cycle.x`, `self.cycle.x`)."""
    def is_cycle(node: ast.expr) -> bool:
        return (isinstance(node, ast.Name) and node.id == "cycle") or (
            isinstance(node, ast.Attribute) and node.attr == "cycle")

    return {node.attr for node in ast.walk(OURS) if isinstance(node, ast.Attribute) and is_cycle(node.value)}


def test_every_hook_and_attribute_protocol_py_uses_is_still_on_httptools_protocol() -> None:
    used = inherited_names_used()
    assert KNOWN_HOOKS | KNOWN_ATTRIBUTES <= used
    uvicorn_class = class_node(UVICORN, "HttpToolsProtocol")
    present = methods(uvicorn_class) | self_attributes(uvicorn_class, stored=True)
    assert sorted(used - present) == []


def test_the_overridden_hooks_keep_their_parameters() -> None:
    overridden = {name: method for name, method in vars(protocol.LimitedHttpToolsProtocol).items()
                  if inspect.isfunction(method) and name != "__init__" and hasattr(HttpToolsProtocol, name)}
    assert {"on_url", "on_header", "on_headers_complete", "on_response_complete"} <= set(overridden)
    for name, method in overridden.items():
        theirs = getattr(HttpToolsProtocol, name)
        assert list(inspect.signature(method).parameters) == list(inspect.signature(theirs).parameters), name


def test_every_cycle_field_protocol_py_uses_is_still_set_by_request_response_cycle() -> None:
    used = cycle_fields_used()
    assert KNOWN_CYCLE_FIELDS <= used
    assert sorted(used - self_attributes(class_node(UVICORN, "RequestResponseCycle"), stored=True)) == []


def test_the_cycle_uses_no_more_of_its_transport_than_the_lingering_close_wrapper_has() -> None:
    """protocol.py swaps the cycle's transport for _LingeringCloseTransport, which has only these methods."""
    cycle = class_node(UVICORN, "RequestResponseCycle")
    called = {node.attr for node in ast.walk(cycle) if isinstance(node, ast.Attribute)
              and isinstance(node.value, ast.Attribute) and node.value.attr == "transport"}
    assert called and sorted(called - methods(class_node(OURS, "_LingeringCloseTransport"))) == []


def test_uvicorn_without_its_websocket_protocols_serves_an_upgrade_request_as_http() -> None:
    """server.py runs uvicorn with ws="none": then an upgrade request gets a cycle like any other,
    and protocol.py decides what becomes of the connection."""
    import uvicorn

    config = uvicorn.Config(lambda scope, receive, send: None, ws="none")
    config.load()
    assert config.ws_protocol_class is None
    uvicorn_class = class_node(UVICORN, "HttpToolsProtocol")
    should = next(node for node in uvicorn_class.body if isinstance(node, ast.FunctionDef)
                  and node.name == "_should_upgrade_to_ws")
    assert "ws_protocol_class" in ast.unparse(should)


def test_the_server_shuts_down_and_waits_for_whatever_is_in_its_connections() -> None:
    """A tunnel stands in for its protocol in server_state.connections: uvicorn calls its
    shutdown() on SIGTERM and waits until it has left the set."""
    from uvicorn import server

    source = inspect.getsource(server.Server.shutdown) + inspect.getsource(server.Server._wait_tasks_to_complete)
    assert "connection.shutdown()" in source and "while self.server_state.connections" in source


def test_listeners_can_be_given_an_ssl_context_factory() -> None:
    """server.py passes tls.ListenerCertificate as uvicorn's ssl_context_factory."""
    import uvicorn

    assert "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters
