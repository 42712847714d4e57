"""setup.cfg lists packages explicitly (``find:`` drops the namespace-less
twisted.plugins); every package in the tree must be on that list, or an installed
copy silently lacks it (as happened to twisted_chat.bench)."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_package_in_the_tree_is_listed_in_setup_cfg() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    in_tree = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "twisted_chat").rglob("__init__.py")
    }
    assert in_tree <= listed, f"missing from setup.cfg: {sorted(in_tree - listed)}"
    assert "twisted.plugins" in listed
