"""The benchmark's coordinator without processes: the worker event stream, the table
and the command line. (tests/e2e/test_bench.py runs the whole thing.)"""

from __future__ import annotations

from unittest.mock import patch

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from twisted_chat.bench.__main__ import parse
from twisted_chat.bench.results import bottleneck, combine, table
from twisted_chat.bench.workers import WorkerProcess, percentile


def test_events_are_handed_out_whether_they_come_before_or_after_the_wait() -> None:
    worker = WorkerProcess(0, Clock())
    worker.outReceived(b'{"event":"progress","done":7}\n{"event":"ready"}\n{"event":"re')
    assert worker.done == 7
    got: list[dict[str, object]] = []
    worker.next("ready", 5).addCallback(got.append)
    assert got == [{"event": "ready"}]  # it came first and was kept
    worker.next("ready", 5).addCallback(got.append)
    worker.outReceived(b'ady","n":2}\n')  # the rest of a line split across reads
    assert got[-1] == {"event": "ready", "n": 2}


def test_a_crashed_worker_fails_whoever_waits_on_it() -> None:
    worker = WorkerProcess(3, Clock())
    failures: list[str] = []
    waiting: Deferred[dict[str, object]] = worker.next("direct", 5)
    waiting.addErrback(lambda f: failures.append(f.getErrorMessage()))
    worker.outReceived(b'{"event":"crashed","error":"Traceback: boom"}\n')
    assert failures and "worker 3 crashed" in failures[0] and "boom" in failures[0]


def test_the_table_puts_ours_first_with_ratios_and_dashes_where_none_make_sense() -> None:
    text = table(
        {
            "twisted-chat": {"dm_per_s": 300.0, "dm_lost": 0.0},
            "ngIRCd": {"dm_per_s": 200.0, "dm_lost": 0.0},
        }
    )
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert rows["metric"] == "| metric | twisted-chat | ngIRCd | ours/ngIRCd |"
    assert (
        rows["direct: delivered msgs/s"] == "| direct: delivered msgs/s | 300.00 | 200.00 | 1.50 |"
    )
    assert rows["direct: lost"].endswith("| 0.00 | 0.00 | - |")  # no ratio to zero
    assert rows["login: logins/s"].endswith("| - | - | - |")  # not measured


def test_percentile_of_nothing_is_not_a_number() -> None:
    assert percentile([], 0.99) != percentile([], 0.99)


def test_percentiles_are_fractions_and_pick_by_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 51.0
    assert percentile(samples, 0.99) == 100.0
    assert percentile(samples, 0.0) == 1.0
    with pytest.raises(ValueError, match="from 0 to 1"):
        percentile(samples, 99)  # a percent, the mistake that reported the maximum
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--users", "1"],
        ["--messages", "0"],
        ["--workers", "0"],
        ["--window", "0"],
        ["--phase-limit", "0"],
        ["--targets", "ours,irc2"],
    ],
)
def test_bad_arguments_are_refused_with_usage(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2


def test_runs_combine_into_medians_with_their_spread() -> None:
    medians, spread = combine(
        [{"dm_per_s": 100.0, "x": 1.0}, {"dm_per_s": 300.0}, {"dm_per_s": 200.0}]
    )
    assert medians == {"dm_per_s": 200.0, "x": 1.0}
    assert spread["dm_per_s"] == (100.0, 300.0)
    text = table({"twisted-chat": medians}, {"twisted-chat": spread})
    assert "| direct: delivered msgs/s | 200.00 (100.00 to 300.00) |" in text


@pytest.mark.parametrize(
    ("server", "busiest", "said"),
    [
        (97.0, 50.0, "the server was saturated"),
        (60.0, 96.0, "the load generator was saturated"),
        (70.0, 50.0, "neither side reached a full core"),
    ],
)
def test_each_run_says_which_side_was_the_bottleneck(
    server: float, busiest: float, said: str
) -> None:
    line = bottleneck("ours", {"server_cpu_pct": server, "generator_busiest_pct": busiest})
    assert said in line and line.startswith("ours: busiest server process")


def test_a_server_of_several_processes_is_judged_by_its_busiest_and_the_machine() -> None:
    # Two nodes and Redis at 60 % each: 180 % in all, but no one process saturated.
    results = {
        "server_cpu_pct": 180.0,
        "server_busiest_pct": 60.0,
        "generator_cpu_pct": 30.0,
        "generator_busiest_pct": 20.0,
    }
    with patch("os.cpu_count", return_value=2):
        line = bottleneck("two nodes", results)
    assert "every core was busy" in line and "60 %" in line
    with patch("os.cpu_count", return_value=8):
        assert "neither side reached a full core" in bottleneck("two nodes", results)
    # The machine's own count (kernel included) decides when the run has it.
    with patch("os.cpu_count", return_value=2):
        line = bottleneck("one node", {**results, "machine_busy_pct": 196.0})
        assert "every core was busy (the machine 196 %" in line
        assert "neither" in bottleneck("one node", {**results, "machine_busy_pct": 150.0})
