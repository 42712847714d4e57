"""A short smoke run of the benchmark: it starts the servers under test, runs every
workload and prints the side-by-side table. No timing is asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.processes import REPO, environment

pytestmark = pytest.mark.e2e


def test_the_benchmark_runs_every_workload_against_every_target() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "twisted_chat.bench",
            "--users",
            "12",
            "--messages",
            "200",
            "--rounds",
            "2",
            "--history-stored",
            "300",
            "--history-queries",
            "20",
            "--targets",
            "ours,relay,words,ngircd,redis,redis2",
        ],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| metric | twisted-chat | bare Twisted relay | Twisted Words")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    for metric in (
        "login: logins/s",
        "direct: delivered msgs/s",
        "direct: lost",
        "broadcast: last recipient (ms, median)",
        "a room of every user: last member (ms, median)",
        "history: the newest 50 of the room, latency p99 (ms)",
        "idle: server RSS per user (KiB)",
    ):
        assert metric in rows
    # Every member got each room message (an infinite time says one did not).
    assert "inf" not in rows["a room of every user: last member (ms, median)"]
    assert rows["direct: lost"].split(" | ")[1] == "0.00"  # nothing lost by us
    assert rows["direct: misdelivered"].split(" | ")[1] == "0.00"
    assert "ngIRCd" in run.stdout  # measured, or skipped with a line saying why
    # The nodes on Redis lose nothing either (their columns come after the others').
    names = [cell.strip() for cell in table[0].split("|")[2:-1]]
    for name in ("twisted-chat, 1 node on Redis", "twisted-chat, 2 nodes on Redis"):
        column = names.index(name) + 1
        assert rows["direct: lost"].split(" | ")[column].strip(" |") == "0.00", table
        assert rows["direct: misdelivered"].split(" | ")[column].strip(" |") == "0.00"
