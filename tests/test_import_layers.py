"""Who may import whom: the project's packages, and the layers inside the proxy, read from the source with ast.

    playground                          runs the shop and the proxy together
       |         \\
    legacy_monolith, extracted_services    strangler (the proxy)
       |                                |
    domain_events                        |
       |                                |
    resilience  <-----------------------+  breaker, retry budget, retries, ServiceClient

Inside strangler, bottom to top: errors and config, the stages, the runtime,
the pipeline, then the apps and the command line; strangler/control/ (the control
plane: ramps, roll back all) is never imported by the data path, which it steers only
through the shares it publishes (strangler/overlay.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What each package may import besides itself. The shop and the proxy stand side by side:
# they share the resilience library, and neither imports the other.
MAY_IMPORT = {
    "resilience": set(),
    "domain_events": {"resilience"},
    "legacy_monolith": {"resilience", "domain_events"},
    "extracted_services": {"resilience", "domain_events"},
    "strangler": {"resilience"},
    "playground": {"resilience", "domain_events", "legacy_monolith", "extracted_services", "strangler"},
}

# Layers of the proxy, bottom to top: a module may import its own layer and those below.
# A module or package named here covers everything under it.
STRANGLER_LAYERS = [
    ("errors and config", {"strangler.errors", "strangler.config", "strangler.logs"}),
    ("stages", {"strangler.paths", "strangler.headers", "strangler.body", "strangler.routing", "strangler.split",
                "strangler.sticky", "strangler.bulkhead", "strangler.http1", "strangler.forward",
                "strangler.metrics", "strangler.problem", "strangler.outcome", "strangler.overlay", "strangler.compare",
                "strangler.shadow_state", "strangler.tee", "strangler.tls", "strangler.tunnel"}),
    ("runtime", {"strangler.runtime", "strangler.reload", "strangler.health", "strangler.recorder",
                 "strangler.lease"}),
    ("pipeline", {"strangler.pipeline", "strangler.forwarder", "strangler.compose", "strangler.shadow",
                  "strangler.websocket"}),
    ("control plane", {"strangler.control"}),
    ("apps and command line", {"strangler.app", "strangler.protocol", "strangler.admin", "strangler.admin_guard",
                               "strangler.dashboard", "strangler.server", "strangler.control_server", "strangler.workers",
                               "strangler.explain", "strangler.operate", "strangler.cli", "strangler.__main__",
                               "strangler"}),
]
# What a request passes through; the control plane steers it only by what it swaps in (split tables).
DATA_PATH = {"strangler.app", "strangler.protocol", *(module for _, layer in STRANGLER_LAYERS[:4] for module in layer)}
CONTROL = "strangler.control"

# `strangler demo` is the command users know; only that command loads the playground.
EXCEPTIONS = {("strangler.cli", "playground.demo")}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in MAY_IMPORT for path in (REPO / package).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `name` imports, anywhere in the file (inside functions and TYPE_CHECKING too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from . import http1` imports a module; `from .errors import Reason` a name.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {module for module in found if module.split(".")[0] in MAY_IMPORT}


def layer_of(module: str) -> int | None:
    for index, (_, layer) in enumerate(STRANGLER_LAYERS):
        # "strangler" stands for the package's __init__ alone, not for everything in it.
        if module in layer or any(module.startswith(f"{entry}.") for entry in layer if entry != "strangler"):
            return index
    return None


def violations() -> list[str]:
    modules = project_modules()
    problems = []
    for name, path in sorted(modules.items()):
        package = name.split(".")[0]
        where = path.relative_to(REPO)
        if package == "strangler" and layer_of(name) is None:
            problems.append(f"{where}: {name} is in no layer of STRANGLER_LAYERS (tests/test_import_layers.py)")
        for imported in sorted(imports_of(name, path, set(modules))):
            target = imported.split(".")[0]
            if (name, imported) in EXCEPTIONS or target == package and package != "strangler":
                continue
            if target != package and target not in MAY_IMPORT[package]:
                problems.append(f"{where}: {name} imports {imported}, but {package} may not import {target}")
            elif target == "strangler" == package:
                if name in DATA_PATH and (imported == CONTROL or imported.startswith(CONTROL + ".")):
                    problems.append(f"{where}: {name} is on the data path and imports the control plane {imported}")
                own, other = layer_of(name), layer_of(imported)
                if own is not None and other is not None and other > own:
                    problems.append(f"{where}: {name} ({STRANGLER_LAYERS[own][0]}) imports {imported} "
                                    f"({STRANGLER_LAYERS[other][0]}, a higher layer)")
    return problems


def test_no_package_or_layer_imports_one_it_may_not() -> None:
    """The shop never imports the proxy, the library imports neither, and no layer of the proxy reaches up."""
    problems = violations()
    assert not problems, "\n".join(["imports that break the layering:", *problems])


def test_the_walk_sees_the_imports_it_judges() -> None:
    """A check that finds nothing must not pass because it looked at nothing."""
    modules = project_modules()
    assert {"resilience.breaker", "strangler.forwarder", "domain_events.relay", "playground.demo"} <= set(modules)
    assert "resilience.retry" in imports_of("strangler.forwarder", modules["strangler.forwarder"], set(modules))
    assert "strangler.http1" in imports_of("strangler.forward", modules["strangler.forward"], set(modules))
    assert "playground.demo" in imports_of("strangler.cli", modules["strangler.cli"], set(modules))
    assert "strangler.control.controller" in imports_of("strangler.admin", modules["strangler.admin"], set(modules))
