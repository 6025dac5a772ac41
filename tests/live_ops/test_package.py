"""The package as users meet it: its version, its public names, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

import strangler
from strangler.cli import main
from tests.support.servers import REPO


def test_version_prints_the_packages_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"strangler {strangler.__version__}\n"
    assert strangler.__version__ == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_every_public_name_imports() -> None:
    for name in strangler.__all__:
        assert getattr(strangler, name) is not None, name
    assert strangler.ProxyApp.__module__ == "strangler.app"


def test_importing_the_package_loads_neither_the_proxy_nor_prometheus_client() -> None:
    """`--workers` sets PROMETHEUS_MULTIPROC_DIR after the package is imported, before prometheus_client is."""
    code = ("import sys, strangler.cli; "
            "print(sorted(m for m in ('prometheus_client', 'strangler.app', 'playground', 'httpx') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_demo_command_runs_the_playground(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """`strangler demo` reaches playground.demo (imported only then) and refuses a config it cannot read."""
    missing = tmp_path / "routes.yaml"
    assert main(["demo", "--config", str(missing)]) == 1
    assert f"{missing}:1:1: cannot read file" in capsys.readouterr().err
