"""The suite on every supported Python, one virtualenv each: `make test-all` (or `.venv/bin/nox`).

`make test` runs the suite once, on the default python3; this runs it on each of
PYTHONS that the machine has, and skips the others. `nox -s tests-3.13 -- tests/routing`
runs one interpreter on part of the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

PYTHONS = ("3.11", "3.12", "3.13")      # keep in step with requires-python and the classifiers

# A missing interpreter is skipped, not an error, also where CI is set (nox's default there is
# an error); nox never downloads one (nothing outside the package registries can be fetched).
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"
nox.options.sessions = [f"tests-{version}" for version in PYTHONS]
nox.options.reuse_venv = "yes"
nox.options.envdir = ".venv/nox"        # ignored by git, and `make clean` removes it with .venv


def _interpreter(version: str) -> str:
    """`pythonX.Y` on PATH if it runs; else pyenv's newest X.Y install; else the bare version.

    pyenv's shims put every installed version's `pythonX.Y` on PATH, but one that is not
    among the active versions only prints an error, and nox would take it as found.
    """
    command = shutil.which(f"python{version}")
    if command is not None and subprocess.run([command, "-c", ""], capture_output=True).returncode == 0:
        return command
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    patches = {}
    if root.is_dir():
        for install in root.iterdir():
            found = re.fullmatch(re.escape(version) + r"\.(\d+)", install.name)
            if found and (install / "bin" / f"python{version}").is_file():
                patches[int(found[1])] = install / "bin" / f"python{version}"
    if patches:
        return str(patches[max(patches)])
    return version                      # nox looks for it and skips the session when it is missing


def tests(session: nox.Session) -> None:
    """The whole suite (or the paths and options after `--`) in this interpreter's virtualenv."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


for _version in PYTHONS:
    nox.session(name=f"tests-{_version}", python=_interpreter(_version))(tests)
