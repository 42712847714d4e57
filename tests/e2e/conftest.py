"""Fixtures for the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import write_credentials


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A server working directory holding the handout's credentials file."""
    write_credentials(tmp_path / "credentials.txt")
    return tmp_path
