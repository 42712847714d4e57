"""The benchmark's coordinator: it starts each server under test, spreads the users
over worker processes (``twisted_chat.bench.worker``), runs the phases through them,
measures the server from outside (RSS and CPU from ``/proc``), shows progress, and
prints the side-by-side table."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import FirstError, gatherResults

from twisted_chat import launch
from twisted_chat.bench.results import bottleneck, combine, table
from twisted_chat.bench.targets import TARGETS, OurServer, Target
from twisted_chat.bench.workers import Progress, WorkerProcess, percentile, sleep

DEFAULT_PHASE_LIMIT = 300.0
"""Seconds any one phase may take before it is cut short (and says so)."""

LOGIN_CONCURRENCY = 50
"""Logins under way at once, over all workers."""


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
        cpu0 = self._server()[1]
        times = [
            await self._broadcast_once(f"all {n}", self.args.phase_limit / rounds)
            for n in range(rounds)
        ]
        self.results["broadcast_last_ms"] = statistics.median(times) * 1000
        copies = rounds * (self.args.users - 1)
        self.results["broadcast_us_per_copy"] = 1e6 * (self._server()[1] - cpu0) / copies

    async def room(self) -> None:
        """Every user joins one room, then one member speaks in it, ``--rounds``
        times: until the last member has it, and server CPU per copy delivered."""
        room = "#bench"
        for worker in self.workers:
            worker.command("join", room=room)
        await self.all("joined", self.args.phase_limit)
        rounds = self.args.rounds
        cpu0 = self._server()[1]
        times = [
            await self._broadcast_once(f"room {n}", self.args.phase_limit / rounds, room=room)
            for n in range(rounds)
        ]
        self.results["room_last_ms"] = statistics.median(times) * 1000
        copies = rounds * (self.args.users - 1)
        self.results["room_us_per_copy"] = 1e6 * (self._server()[1] - cpu0) / copies

    async def history(self) -> None:
        """A room's history filled with ``--history-stored`` messages, then its
        newest 50 read ``--history-queries`` times, one at a time."""
        stored, queries = self.args.history_stored, self.args.history_queries
        self.progress.phase("history", stored, self.workers[:1])
        self.workers[0].command(
            "history",
            speaker=self.shares[0][0],
            room="#archive",
            stored=stored,
            queries=queries,
            limit=50,
        )
        answer = await self.workers[0].next("history", self.args.phase_limit * 2)
        self.progress.end()
        latencies = sorted(answer["latencies"])
        self.results["history_stored_per_s"] = answer["seeded_per_s"]
        self.results["history_p50_ms"] = percentile(latencies, 0.5) * 1000
        self.results["history_p99_ms"] = percentile(latencies, 0.99) * 1000

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
        self, marker: str, limit: float, blockers: list[str] | None = None, room: str = ""
    ) -> float:
        """One user to all others (or to ``room``, whose members they all are):
        seconds until the last one has it (inf if not, or if anyone who blocks the
        speaker got it)."""
        speaker = self.shares[0][0]
        for worker in self.workers:
            worker.command(
                "listen", marker=marker, speaker=speaker, limit=limit, blockers=blockers or []
            )
        await self.all("ready")
        self.workers[0].command("send", speaker=speaker, marker=marker, room=room)
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
        + (f"; twisted-chat also given {' '.join(args.our_option)}" if args.our_option else "")
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
            target.extra_options = tuple(
                part for option in args.our_option for part in option.split("=", 1)
            )
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
            if target.rooms:
                say(f"{target.name}: a room of {args.users}")
                await run.room()
            if target.rooms and isinstance(target, OurServer) and target.keeps_history:
                say(f"{target.name}: history ({args.history_stored:,} kept, then read)")
                await run.history()
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
