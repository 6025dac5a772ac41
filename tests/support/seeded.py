"""The seeded shop data as fixtures: one seeding per session, a private copy per test.

Import both into a conftest.py (`from tests.support.seeded import data_dir, seeded_template`)
where tests want `data_dir`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract.seeding import copy_databases, seed_everything


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("seeded")
    seed_everything(directory)
    return directory


@pytest.fixture
def data_dir(seeded_template: Path, tmp_path: Path) -> Path:
    """A private copy of the seeded databases: a test may write without disturbing the next."""
    return copy_databases(seeded_template, tmp_path)
