"""What the benchmark makes of its measurements: medians over the runs, which side
was the bottleneck, and the side-by-side table."""

from __future__ import annotations

import os
import statistics

METRICS = [
    ("logins_per_s", "login: logins/s"),
    ("login_p99_ms", "login: latency p99 (ms)"),
    ("login_all_s", "login: all users in (s)"),
    ("dm_per_s", "direct: delivered msgs/s"),
    ("dm_p50_ms", "direct: latency p50 (ms)"),
    ("dm_p99_ms", "direct: latency p99 (ms)"),
    ("dm_lost", "direct: lost"),
    ("dm_duplicated", "direct: duplicated"),
    ("dm_misdelivered", "direct: misdelivered"),
    ("broadcast_last_ms", "broadcast: last recipient (ms, median)"),
    ("broadcast_us_per_copy", "broadcast: server CPU per copy delivered (µs)"),
    ("room_last_ms", "a room of every user: last member (ms, median)"),
    ("room_us_per_copy", "a room of every user: server CPU per copy delivered (µs)"),
    ("history_stored_per_s", "history: messages kept per second, one sender"),
    ("history_p50_ms", "history: the newest 50 of the room, latency p50 (ms)"),
    ("history_p99_ms", "history: the newest 50 of the room, latency p99 (ms)"),
    ("broadcast_blocked_ms", "broadcast, a tenth blocking the speaker: last recipient (ms)"),
    ("offline_stored_per_s", "offline mail: stored and acknowledged (durable) msgs/s"),
    ("offline_us_per_msg", "offline mail: server CPU per stored message (µs)"),
    ("offline_lost", "offline mail: not acknowledged"),
    ("offline_collect_s", "offline mail: its users log in and have it all (s)"),
    ("offline_missing", "offline mail: acknowledged but not delivered"),
    ("rss_per_user_kib", "idle: server RSS per user (KiB)"),
    ("idle_cpu_pct", "idle: server CPU (%)"),
    ("server_cpu_pct", "direct: server CPU (% of a core, all its processes)"),
    ("server_busiest_pct", "direct: busiest server process CPU (%)"),
    ("redis_cpu_pct", "direct: of which redis-server (% of a core)"),
    ("server_us_per_msg", "direct: server CPU per delivered message (µs)"),
    ("generator_cpu_pct", "direct: load generator CPU (% of a core, all workers)"),
    ("generator_busiest_pct", "direct: busiest generator process CPU (%)"),
    ("machine_busy_pct", "direct: the whole machine busy (% of a core, kernel included)"),
    ("workers", "load generator processes"),
]


SATURATED_PCT = 95.0
"""A process at this share of a core or more is the bottleneck of a run."""


Spread = dict[str, tuple[float, float]]
"""Each metric's (min, max) over the runs."""


def combine(
    runs: list[dict[str, float]],
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Several runs of one target: the median of each metric, and its min-max."""
    medians: dict[str, float] = {}
    spread: dict[str, tuple[float, float]] = {}
    for key in {k for run in runs for k in run}:
        values = [run[key] for run in runs if key in run and run[key] == run[key]]
        if values:
            medians[key] = statistics.median(values)
            spread[key] = (min(values), max(values))
    return medians, spread


def bottleneck(name: str, results: dict[str, float]) -> str:
    """Which side limited the direct-message run, in a line: a msgs/s figure is a
    capacity only where the server was saturated; else it is a lower bound."""
    server = results.get("server_busiest_pct", results.get("server_cpu_pct", float("nan")))
    busiest = results.get("generator_busiest_pct", float("nan"))
    machine = results.get(
        "machine_busy_pct",
        results.get("server_cpu_pct", 0.0) + results.get("generator_cpu_pct", 0.0),
    )
    if server >= SATURATED_PCT:
        verdict = "the server was saturated: its msgs/s is its capacity here"
    elif busiest >= SATURATED_PCT:
        verdict = "the load generator was saturated: the server's msgs/s is a lower bound"
    elif machine >= SATURATED_PCT * (os.cpu_count() or 1):
        verdict = (
            f"every core was busy (the machine {machine:.0f} %, kernel included): the "
            "machine, not one process, capped msgs/s; compare µs per message instead"
        )
    else:
        verdict = (
            "neither side reached a full core (the machine's cores were shared): "
            "msgs/s is a lower bound; compare µs per message instead"
        )
    return (
        f"{name}: busiest server process {server:.0f} % of a core, busiest generator process "
        f"{busiest:.0f} %: {verdict}"
    )


def table(
    results: dict[str, dict[str, float]],
    spread: dict[str, Spread] | None = None,
) -> str:
    """One column per target, ours first, then ours/theirs ratios (of the medians).
    With ``spread``, each cell is "median (min-max)" of the runs."""
    names = list(results)
    header = ["metric", *names] + [f"ours/{n}" for n in names[1:]]
    rows = [header, ["---"] * len(header)]
    for key, label in METRICS:
        values = [results[n].get(key, float("nan")) for n in names]
        ratios = []
        for value in values[1:]:
            usable = value == value and value != 0 and values[0] == values[0]
            ratios.append(f"{values[0] / value:.2f}" if usable else "-")
        cells = []
        for name, value in zip(names, values, strict=True):
            cell = f"{value:,.2f}" if value == value else "-"
            low_high = (spread or {}).get(name, {}).get(key)
            if low_high is not None and value == value and low_high[0] != low_high[1]:
                cell += f" ({low_high[0]:,.2f} to {low_high[1]:,.2f})"
            cells.append(cell)
        rows.append([label, *cells, *ratios])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
