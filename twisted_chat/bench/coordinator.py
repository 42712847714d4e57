"""The benchmark's coordinator: it starts each server under test, spreads the users
over worker processes (``twisted_chat.bench.worker``), runs the phases through them,
measures the server from outside (RSS and CPU from ``/proc``), shows progress, and
prints the side-by-side table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure

from twisted_chat import launch
from twisted_chat.bench.targets import TARGETS, OurServer, Target

DEFAULT_PHASE_LIMIT = 300.0
"""Seconds any one phase may take before it is cut short (and says so)."""

LOGIN_CONCURRENCY = 50
"""Logins under way at once, over all workers."""


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class WorkerProcess(ProcessProtocol):
    """One load-generating process, driven over its stdin and stdout."""

    def __init__(self, index: int, reactor: Any) -> None:
        self.index = index
        self._reactor = reactor
        self.done = 0
        """The worker's latest progress count."""
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._stderr = b""
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._waiting: dict[str, Deferred[dict[str, Any]]] = {}

    def command(self, cmd: str, **fields: Any) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")

    def next(self, event: str, wait: float) -> Deferred[dict[str, Any]]:
        """The next ``event`` from this worker (an error after ``wait`` seconds)."""
        queued = self._events.get(event)
        if queued:
            return succeed(queued.pop(0))
        d: Deferred[dict[str, Any]] = Deferred()
        self._waiting[event] = d
        return d.addTimeout(wait, self._reactor)

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            name = event["event"]
            if name == "progress":
                self.done = event["done"]
            elif name == "crashed":
                self._fail(RuntimeError(f"worker {self.index} crashed:\n{event['error']}"))
            elif name in self._waiting:
                self._waiting.pop(name).callback(event)
            else:
                self._events.setdefault(name, []).append(event)

    def errReceived(self, data: bytes) -> None:
        self._stderr = (self._stderr + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        if not reason.check(ProcessDone):
            stderr = self._stderr.decode("utf-8", "replace")
            self._fail(RuntimeError(f"worker {self.index} ended: {reason.value}\n{stderr}"))
        self.ended.callback(None)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(error)

    def kill(self) -> None:
        """End the worker by its PID if it is still running."""
        if self.transport is not None and not self.ended.called:
            with contextlib.suppress(ProcessExitedAlready):
                self.transport.signalProcess("KILL")


class Progress:
    """What the run is doing, redrawn in place on a terminal, a line every 10 s in a
    log."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.interactive = sys.stdout.isatty()
        self.label = ""
        self.total = 0
        self.workers: list[WorkerProcess] = []
        self._last_line = 0.0
        self._loop = LoopingCall(self._show)

    def phase(self, label: str, total: int, workers: list[WorkerProcess]) -> None:
        self.end()
        self.label, self.total, self.workers = label, total, workers
        for worker in workers:
            worker.done = 0
        self._last_line = time.monotonic()
        self._loop.start(0.5, now=False)

    def end(self) -> None:
        if self._loop.running:
            self._loop.stop()
            if self.interactive:
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()

    def _show(self) -> None:
        done = sum(w.done for w in self.workers)
        text = f"  {self.label}: {done:,}/{self.total:,}"
        if self.interactive:
            sys.stdout.write("\r\x1b[K" + text)
            sys.stdout.flush()
        elif time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            self.say(text)


class Run:
    """Every workload against one target, through ``workers`` generator processes."""

    def __init__(self, target: Target, args: argparse.Namespace, progress: Progress) -> None:
        self.target = target
        self.reactor = target.reactor
        self.args = args
        self.progress = progress
        self.names = [f"b{n:05d}" for n in range(args.users)]
        self.offline_names = [f"z{n:05d}" for n in range(max(2, args.users // 10))]
        """Accounts that stay offline until the offline-mail phase (ours only)."""
        random.Random(args.seed).shuffle(self.names)  # no worker gets a sorted slice
        count = max(1, min(args.workers, args.users // 2))
        self.shares = [self.names[k::count] for k in range(count)]
        self.workers: list[WorkerProcess] = []
        self.results: dict[str, float] = {"workers": count}

    def start_workers(self) -> None:
        for index in range(len(self.shares)):
            worker = WorkerProcess(index, self.reactor)
            argv = [sys.executable, "-m", "twisted_chat.bench.worker"]
            self.reactor.spawnProcess(worker, argv[0], argv, env=launch.environment())
            self.workers.append(worker)

    async def all(self, event: str, wait: float | None = None) -> list[dict[str, Any]]:
        """``event`` from every worker; an error naming the phase if one does not come
        within ``wait`` seconds (by default the phase limit, plus time to report)."""
        if wait is None:
            wait = self.args.phase_limit + 30
        try:
            events: list[dict[str, Any]] = await gatherResults(
                [w.next(event, wait) for w in self.workers], consumeErrors=True
            )
        except FirstError as e:
            done = sum(w.done for w in self.workers)
            raise RuntimeError(
                f"no {event!r} from every worker within {wait:.0f} s "
                f"(progress: {done:,}): {type(e.subFailure.value).__name__}"
            ) from None
        return events

    def _server(self) -> tuple[int, float]:
        """(RSS in KiB, CPU seconds) of the server: all its processes."""
        stats = [launch.proc_stat(pid) for pid in self.target.pids]
        return sum(rss for rss, _ in stats), sum(cpu for _, cpu in stats)

    def _redis_cpu(self) -> float:
        pid = self.target.redis_pid
        return launch.proc_stat(pid)[1] if pid is not None else 0.0

    async def login(self) -> None:
        self.results["rss_empty_kib"] = self._server()[0]
        self.progress.phase("login", len(self.names), self.workers)
        started = time.monotonic()
        concurrency = max(1, LOGIN_CONCURRENCY // len(self.workers))
        for worker, share in zip(self.workers, self.shares, strict=True):
            worker.command(
                "login",
                ports=self.target.ports or [self.target.port],
                kind=self.target.client,
                names=share,
                concurrency=concurrency,
            )
        events = await self.all("logged_in")
        elapsed = time.monotonic() - started
        self.progress.end()
        latencies = [x for e in events for x in e["latencies"]]
        failures = [f for e in events for f in e["failures"]]
        if failures:
            raise RuntimeError(f"{len(self.names) - len(latencies)} logins failed: {failures}")
        self.results["logins_per_s"] = len(latencies) / elapsed
        self.results["login_p99_ms"] = percentile(latencies, 0.99) * 1000
        self.results["login_all_s"] = elapsed

    async def idle(self, seconds: float = 5.0) -> None:
        await sleep(self.reactor, 2)  # let the presence fan-out settle
        rss, cpu0 = self._server()
        await sleep(self.reactor, seconds)
        cpu1 = self._server()[1]
        self.results["rss_per_user_kib"] = (rss - self.results["rss_empty_kib"]) / len(self.names)
        self.results["idle_cpu_pct"] = 100 * (cpu1 - cpu0) / seconds

    async def direct(self) -> None:
        count = len(self.workers)
        messages, window = self.args.messages, self.args.window
        self.progress.phase("direct messages", messages, self.workers)
        server_cpu0 = self._server()[1]
        redis_cpu0 = self._redis_cpu()
        each0 = {pid: launch.proc_stat(pid)[1] for pid in self.target.pids}
        machine0 = launch.machine_busy()
        started = time.monotonic()
        for k, worker in enumerate(self.workers):
            worker.command(
                "direct",
                messages=messages // count + (1 if k < messages % count else 0),
                window=max(1, window // count),
                seed=self.args.seed + k,
                limit=self.args.phase_limit,
            )
        events = await self.all("direct")
        wall = time.monotonic() - started
        self.progress.end()
        elapsed = max(e["elapsed"] for e in events)
        received = sum(e["received"] for e in events)
        latencies = [x for e in events for x in e["latencies"]]
        self.results["dm_per_s"] = received / elapsed
        self.results["dm_p50_ms"] = percentile(latencies, 0.5) * 1000
        self.results["dm_p99_ms"] = percentile(latencies, 0.99) * 1000
        self.results["dm_lost"] = messages - received
        self.results["dm_duplicated"] = sum(e["duplicated"] for e in events)
        self.results["dm_misdelivered"] = sum(e["misdelivered"] for e in events)
        server_cpu = self._server()[1] - server_cpu0
        self.results["server_cpu_pct"] = 100 * server_cpu / wall
        busy, existed = (b - a for a, b in zip(machine0, launch.machine_busy(), strict=True))
        if existed > 0:  # a phase shorter than the kernel's tick has no figure
            self.results["machine_busy_pct"] = 100 * busy / existed * (os.cpu_count() or 1)
        self.results["server_busiest_pct"] = max(
            100 * (launch.proc_stat(pid)[1] - cpu0) / wall for pid, cpu0 in each0.items()
        )
        # The figure that survives a noisy machine: server CPU per delivered message.
        self.results["server_us_per_msg"] = 1e6 * server_cpu / received if received else 0.0
        if self.target.redis_pid is not None:
            self.results["redis_cpu_pct"] = 100 * (self._redis_cpu() - redis_cpu0) / wall
        cpu = [e["cpu"] / e["elapsed"] * 100 for e in events]
        self.results["generator_cpu_pct"] = sum(cpu)
        self.results["generator_busiest_pct"] = max(cpu)

    async def offline(self) -> None:
        """Messages to offline users, acknowledged only once durable (a server without
        offline storage skips this), then those users log in and collect them."""
        messages = self.args.offline_messages
        count = len(self.workers)
        self.progress.phase("offline mail", messages, self.workers)
        server_cpu0 = self._server()[1]
        for k, worker in enumerate(self.workers):
            worker.command(
                "offline",
                recipients=self.offline_names,
                messages=messages // count + (1 if k < messages % count else 0),
                window=max(1, self.args.window // count),
                seed=self.args.seed + 100 + k,
                limit=self.args.phase_limit,
            )
        events = await self.all("offline")
        self.progress.end()
        acked = sum(e["acked"] for e in events)
        elapsed = max(e["elapsed"] for e in events)
        self.results["offline_stored_per_s"] = acked / elapsed
        self.results["offline_lost"] = messages - acked
        self.results["offline_us_per_msg"] = (
            1e6 * (self._server()[1] - server_cpu0) / acked if acked else 0.0
        )
        first = self.workers[0]
        first.command(
            "collect",
            port=self.target.port,
            kind=self.target.client,
            names=self.offline_names,
            expected=acked,
            limit=self.args.phase_limit,
        )
        collected = await first.next("collect", self.args.phase_limit + 30)
        self.results["offline_collect_s"] = collected["elapsed"]
        self.results["offline_missing"] = acked - collected["received"]

    async def broadcast(self) -> None:
        rounds = self.args.rounds
        times = [
            await self._broadcast_once(f"all {n}", self.args.phase_limit / rounds)
            for n in range(rounds)
        ]
        self.results["broadcast_last_ms"] = statistics.median(times) * 1000

    async def broadcast_blocked(self) -> None:
        """A broadcast with a block list in force: a tenth of the users block the
        speaker first; the others must all get it, the blockers none."""
        speaker = self.shares[0][0]
        for k, worker in enumerate(self.workers):
            worker.command("block", speaker=speaker, share=0.1, seed=self.args.seed + k)
        blocked = await self.all("blocked", 60)
        blockers = [name for e in blocked for name in e["blockers"]]
        times = [
            await self._broadcast_once(f"blocked {n}", self.args.phase_limit, blockers)
            for n in range(self.args.rounds)
        ]
        self.results["broadcast_blocked_ms"] = statistics.median(times) * 1000

    async def _broadcast_once(
        self, marker: str, limit: float, blockers: list[str] | None = None
    ) -> float:
        """One user to all others: seconds until the last one has it (inf if not, or
        if anyone who blocks the speaker got it)."""
        speaker = self.shares[0][0]
        for worker in self.workers:
            worker.command(
                "listen", marker=marker, speaker=speaker, limit=limit, blockers=blockers or []
            )
        await self.all("ready")
        self.workers[0].command("send", speaker=speaker, marker=marker)
        sent = await self.workers[0].next("sent", 30)
        reports = await self.all("broadcast", limit + 30)
        if any(r["got"] != r["expected"] or r.get("leaked") for r in reports):
            return float("inf")
        return float(max(r["last"] for r in reports) - sent["at"])

    async def close(self) -> None:
        for worker in self.workers:
            if not worker.ended.called:
                worker.command("close")
        try:
            closed = await self.all("closed", 30)
            problems = [p for e in closed for p in e["problems"]]
            count = sum(e["problem_count"] for e in closed)
            if count:
                print(f"{self.target.name}: {count} problem(s) after login, e.g. {problems}")
        finally:
            for worker in self.workers:
                worker.kill()
            await gatherResults([w.ended for w in self.workers])


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


async def main(reactor: Any, args: argparse.Namespace) -> None:
    def say(text: str) -> None:
        print(text, flush=True)

    progress = Progress(say)
    runs: dict[str, list[dict[str, float]]] = {}
    unfinished: dict[str, str] = {}
    # Runs interleaved (each target once per round) so that a machine's slow minute
    # falls on every target alike.
    for round_number in range(args.runs):
        if args.runs > 1:
            say(f"--- round {round_number + 1} of {args.runs}")
        await _one_round(reactor, args, say, progress, runs, unfinished)
    say("")
    say(
        f"users {args.users}, direct messages {args.messages} ({args.window} in flight), "
        f"broadcast rounds {args.rounds}, seed {args.seed}, runs {args.runs} (interleaved; "
        "medians, min-max in brackets); flood limits raised on every server that has them; "
        "twisted-chat's durable storage on"
        + ("; twisted-chat's accounts stored as argon2id hashes" if args.hashed else "")
    )
    combined = {name: combine(done) for name, done in runs.items()}
    results = {name: medians for name, (medians, _) in combined.items()}
    if results:
        say(table(results, {name: low_high for name, (_, low_high) in combined.items()}))
        for name, medians in results.items():
            say(bottleneck(name, medians))
    for name, why in unfinished.items():
        say(f"{name}: did not finish: {why}")
    if "twisted-chat" in unfinished:
        raise SystemExit(1)


async def _one_round(
    reactor: Any,
    args: argparse.Namespace,
    say: Callable[[str], None],
    progress: Progress,
    runs: dict[str, list[dict[str, float]]],
    unfinished: dict[str, str],
) -> None:
    for key in args.targets.split(","):
        target = TARGETS[key](reactor)
        if isinstance(target, OurServer):
            target.hashed = args.hashed
        why_not = target.available()
        if why_not:
            say(f"{target.name}: {why_not}")
            continue
        run = Run(target, args, progress)
        say(f"{target.name}: starting, {args.users} users, {len(run.shares)} generator processes")
        try:
            await target.start(run.names + (run.offline_names if target.durable else []))
            run.start_workers()
            await run.login()
            say(
                f"{target.name}: {args.users} logged in in {run.results['login_all_s']:.1f} s; idle"
            )
            await run.idle()
            say(f"{target.name}: direct messages")
            await run.direct()
            say(f"{target.name}: broadcast")
            await run.broadcast()
            if target.durable:
                say(f"{target.name}: broadcast with a block list")
                await run.broadcast_blocked()
                say(f"{target.name}: offline mail")
                await run.offline()
            runs.setdefault(target.name, []).append(run.results)
        except Exception as e:  # one server failing must not lose the others' figures
            unfinished[target.name] = str(e).splitlines()[0] if str(e) else repr(e)
            say(f"{target.name}: did not finish: {unfinished[target.name]}")
        finally:
            progress.end()
            await run.close()
            await target.stop()
