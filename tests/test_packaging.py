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


def test_every_file_of_the_web_page_is_in_the_package_data() -> None:
    """The page is served from the installed package: a file the patterns miss would
    be missing from every install (and the server would not start with --web)."""
    from fnmatch import fnmatch

    from twisted_chat.server.webpage import PAGE_FILES

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["twisted_chat.web"].split(",")]
    for name in PAGE_FILES:
        assert (REPO / "twisted_chat" / "web" / name).is_file(), name
        assert any(fnmatch(name, pattern) for pattern in patterns), name
