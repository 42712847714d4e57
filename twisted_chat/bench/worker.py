"""A load-generating process: it holds a share of the benchmark's users and runs the
phases the coordinator asks for, over JSON lines on stdin (commands) and stdout
(events). Several run at once so that the generator is not the bottleneck.

Commands and the events that answer them:

- ``login`` (port, client kind, names, concurrency): ``progress`` now and then, then
  ``logged_in`` with each login's latency.
- ``direct`` (messages, window, seed): messages flat out between random pairs of this
  worker's users, ``window`` in flight; ``progress``, then ``direct`` with the counts
  and latencies.
- ``listen`` (marker, speaker), then ``send`` (to the speaker's worker): ``ready``,
  ``sent`` (when it was sent) and ``broadcast`` (when the last of our users had it).
- ``join`` (room): every user joins it; ``joined`` once all are in.
- ``history`` (speaker, room, stored, queries, limit): the speaker fills a room's
  history, then reads its newest messages again and again; ``history`` with how fast
  it was kept and each read's latency.
- ``close``: every connection is dropped and the process exits.

Times are ``time.monotonic()``: one clock for every process on the machine, so a
timestamp written by one worker can be compared by another.
"""

from __future__ import annotations

import json
import random
import resource
import time
from typing import Any

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver

from twisted_chat.bench.clients import CLIENTS, BenchClient, ChatBenchClient

PROGRESS_EVERY = 0.5
"""Seconds between progress events."""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Worker:
    """This process's users and the phase they are in."""

    def __init__(self, emit: Any, reactor: Any) -> None:
        self.emit = emit
        self.reactor = reactor
        self.clients: dict[str, BenchClient] = {}
        self._inbox: Any = lambda sender, recipient, text: None
        self._last_progress = 0.0

    def on_text(self, sender: str, recipient: str, text: str) -> None:
        self._inbox(sender, recipient, text)

    def progress(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self.emit({"event": "progress", "done": done})

    # --- phases ---------------------------------------------------------------------

    async def login(self, ports: list[int], kind: str, names: list[str], concurrency: int) -> None:
        """Log ``names`` in, spread over ``ports`` in turn (the nodes of a cluster)."""
        client_class = CLIENTS[kind]
        gate = DeferredSemaphore(concurrency)
        latencies: list[float] = []
        failures: list[str] = []

        async def one(index: int, name: str) -> None:
            started = time.monotonic()
            client = client_class(name, f"pw{name}", self.on_text)
            port = ports[index % len(ports)]
            try:
                endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", port, timeout=30)
                await connectProtocol(endpoint, client)
                await client.logged_in.addTimeout(120, self.reactor)
            except Exception as e:  # reported, and the run goes on without this user
                failures.append(f"{name}: {e}")
                return
            latencies.append(time.monotonic() - started)
            self.clients[name] = client
            self.progress(len(latencies))

        await gatherResults([gate.run(one, index, name) for index, name in enumerate(names)])
        self.emit({"event": "logged_in", "latencies": latencies, "failures": failures[:5]})

    async def direct(self, messages: int, window: int, seed: int, limit: float) -> None:
        rng = random.Random(seed)
        names = list(self.clients)
        sent: dict[int, tuple[str, str, float]] = {}
        seen: set[int] = set()
        latencies: list[float] = []
        counts = {"duplicated": 0, "misdelivered": 0}
        done: Deferred[None] = Deferred()
        state = {"in_flight": 0, "next": 0}

        def send_next() -> None:
            while state["in_flight"] < window and state["next"] < messages:
                seq = state["next"]
                state["next"] += 1
                sender, recipient = rng.sample(names, 2)
                at = time.monotonic()
                sent[seq] = (sender, recipient, at)
                state["in_flight"] += 1
                self.clients[sender].send_direct(recipient, f"dm {seq} {at:.6f}")

        def inbox(sender: str, recipient: str, text: str) -> None:
            if not text.startswith("dm "):
                return
            seq = int(text.split(" ", 2)[1])
            if seq in seen:
                counts["duplicated"] += 1
                return
            expected = sent.get(seq)
            if expected is None or expected[:2] != (sender, recipient):
                counts["misdelivered"] += 1
                return
            seen.add(seq)
            latencies.append(time.monotonic() - expected[2])
            state["in_flight"] -= 1
            self.progress(len(seen))
            if len(seen) == messages:
                if not done.called:
                    done.callback(None)
            else:
                send_next()

        self._inbox = inbox
        cpu0, started = cpu_seconds(), time.monotonic()
        send_next()

        def cut_short() -> None:
            if not done.called:
                done.callback(None)

        timeout = self.reactor.callLater(limit, cut_short)
        await done
        if timeout.active():
            timeout.cancel()
        elapsed = time.monotonic() - started
        self._inbox = lambda sender, recipient, text: None
        self.emit(
            {
                "event": "direct",
                "sent": state["next"],
                "received": len(seen),
                "elapsed": elapsed,
                "cpu": cpu_seconds() - cpu0,
                "latencies": latencies,
                **counts,
            }
        )

    async def offline(
        self, recipients: list[str], messages: int, window: int, seed: int, limit: float
    ) -> None:
        """Messages to users who are offline, ``window`` in flight, each with an id:
        counted when the server acknowledges it as stored (durable)."""
        rng = random.Random(seed)
        senders = [c for c in self.clients.values() if isinstance(c, ChatBenchClient)]
        done: Deferred[None] = Deferred()
        state = {"in_flight": 0, "next": 0, "acked": 0}

        def send_next() -> None:
            while state["in_flight"] < window and state["next"] < messages:
                seq = state["next"]
                state["next"] += 1
                state["in_flight"] += 1
                rng.choice(senders).send_stored(rng.choice(recipients), f"off {seq}", seq)

        def acked(_: int) -> None:
            state["acked"] += 1
            state["in_flight"] -= 1
            self.progress(state["acked"])
            if state["acked"] == messages:
                if not done.called:
                    done.callback(None)
            else:
                send_next()

        for sender in senders:
            sender.on_ack = acked
        cpu0, started = cpu_seconds(), time.monotonic()
        send_next()
        timeout = self.reactor.callLater(limit, _finish, done)
        await done
        if timeout.active():
            timeout.cancel()
        self.emit(
            {
                "event": "offline",
                "acked": state["acked"],
                "elapsed": time.monotonic() - started,
                "cpu": cpu_seconds() - cpu0,
            }
        )

    async def collect(
        self, port: int, kind: str, names: list[str], expected: int, limit: float
    ) -> None:
        """The offline users log in: how long until their stored mail has all come."""
        received = {"count": 0}
        done: Deferred[None] = Deferred()

        def inbox(sender: str, recipient: str, text: str) -> None:
            if text.startswith("off "):
                received["count"] += 1
                if received["count"] >= expected and not done.called:
                    done.callback(None)

        self._inbox = inbox
        started = time.monotonic()
        timeout = self.reactor.callLater(limit, _finish, done)
        await self.login([port], kind, names, concurrency=50)
        if expected == 0 and not done.called:
            done.callback(None)
        await done
        if timeout.active():
            timeout.cancel()
        self._inbox = lambda sender, recipient, text: None
        self.emit(
            {
                "event": "collect",
                "received": received["count"],
                "elapsed": time.monotonic() - started,
            }
        )

    def block(self, speaker: str, share: float, seed: int) -> None:
        """A ``share`` of this worker's users block ``speaker``; reported once the
        server has confirmed every block (our protocol only)."""
        rng = random.Random(seed)
        chosen = [
            client
            for name, client in self.clients.items()
            if name != speaker and isinstance(client, ChatBenchClient) and rng.random() < share
        ]
        waiting = {"left": len(chosen)}

        def confirmed(_: int) -> None:
            waiting["left"] -= 1
            if waiting["left"] == 0:
                self.emit({"event": "blocked", "blockers": [c.name for c in chosen]})

        for client in chosen:
            client.on_ok = confirmed
            client.send_block(speaker)
        if not chosen:
            self.emit({"event": "blocked", "blockers": []})

    def listen(self, marker: str, speaker: str, limit: float, blockers: list[str]) -> None:
        blocking = set(blockers)
        expected = {name for name in self.clients if name != speaker and name not in blocking}
        got: set[str] = set()
        leaked: set[str] = set()
        finished = {"done": False}

        def report() -> None:
            if not finished["done"]:
                finished["done"] = True
                self._inbox = lambda sender, recipient, text: None
                self.emit(
                    {
                        "event": "broadcast",
                        "last": time.monotonic(),
                        "got": len(got),
                        "expected": len(expected),
                        "leaked": len(leaked),
                    }
                )

        def inbox(sender: str, recipient: str, text: str) -> None:
            if text == marker and sender == speaker and recipient in blocking:
                leaked.add(recipient)  # a blocker must never get it
            elif text == marker and sender == speaker and recipient in expected:
                got.add(recipient)
                if len(got) == len(expected):
                    report()

        self._inbox = inbox
        if not expected:
            report()
            return
        self.reactor.callLater(limit, report)
        self.emit({"event": "ready"})

    def send(self, speaker: str, marker: str, room: str = "") -> None:
        """The speaker says ``marker`` to everyone online, or to ``room``."""
        self.emit({"event": "sent", "at": time.monotonic()})
        if room:
            client = self.clients[speaker]
            assert isinstance(client, ChatBenchClient)
            client.send_room(room, marker)
        else:
            self.clients[speaker].send_all(marker)

    def join(self, room: str) -> None:
        """Every user of this worker joins ``room``; ``joined`` once the server has
        confirmed every join (our protocol only)."""
        ours = [c for c in self.clients.values() if isinstance(c, ChatBenchClient)]
        waiting = {"left": len(ours)}

        def confirmed(_: int) -> None:
            waiting["left"] -= 1
            if waiting["left"] == 0:
                self.emit({"event": "joined", "members": len(ours)})

        for client in ours:
            client.on_ok = confirmed
            client.send_join(room)
        if not ours:
            self.emit({"event": "joined", "members": 0})

    async def history(self, speaker: str, room: str, stored: int, queries: int, limit: int) -> None:
        """``speaker`` joins ``room`` (alone) and says ``stored`` messages there, then
        asks for its last ``limit`` ``queries`` times, one at a time: how fast it was
        kept, and each answer's latency."""
        client = self.clients[speaker]
        assert isinstance(client, ChatBenchClient)
        answered: dict[str, Deferred[None]] = {}

        def on_history(request_id: str) -> None:
            waiting = answered.pop(request_id, None)
            if waiting is not None:
                waiting.callback(None)

        def asked(request_id: str) -> Deferred[None]:
            done: Deferred[None] = Deferred()
            answered[request_id] = done
            return done

        client.on_history = on_history
        joined: Deferred[None] = Deferred()
        client.on_ok = lambda _: joined.callback(None) if not joined.called else None
        client.send_join(room)
        await joined
        started = time.monotonic()
        window = 2000
        for n in range(stored):
            if n % window == window - 1 or n == stored - 1:
                # Every so often one with an id: the server's answer paces the sender.
                kept = asked(f"h-seed-{n}")
                client.send_room(room, f"kept {n}", f"h-seed-{n}")
                await kept
                self.progress(n + 1)
            else:
                client.send_room(room, f"kept {n}")
        seeded = time.monotonic() - started
        latencies = []
        for n in range(queries):
            request_id = f"h-read-{n}"
            answer = asked(request_id)
            began = time.monotonic()
            client.send_history(room, limit, request_id)
            await answer
            latencies.append(time.monotonic() - began)
        self.emit({"event": "history", "seeded_per_s": stored / seeded, "latencies": latencies})

    def close(self) -> None:
        problems = [p for c in self.clients.values() for p in c.problems]
        for client in self.clients.values():
            if client.transport is not None:
                client.transport.abortConnection()
        self.emit({"event": "closed", "problems": problems[:5], "problem_count": len(problems)})


def _finish(done: Deferred[None]) -> None:
    """A phase's time is up: it reports what it has."""
    if not done.called:
        done.callback(None)


class CommandReader(LineReceiver):
    """Commands from the coordinator, one JSON object a line on stdin."""

    delimiter = b"\n"
    MAX_LENGTH = 64 * 1024 * 1024  # a login command lists this worker's usernames

    def __init__(self, finished: Deferred[None], reactor: Any) -> None:
        self.worker = Worker(self.emit, reactor)
        self.finished = finished
        self.reactor = reactor

    def emit(self, event: dict[str, Any]) -> None:
        """An event for the coordinator (through StandardIO: never a blocking write)."""
        assert self.transport is not None
        self.transport.write(json.dumps(event).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        command = json.loads(line)
        name = command.pop("cmd")
        worker = self.worker
        if name == "login":
            Deferred.fromCoroutine(worker.login(**command)).addErrback(self._crash)
        elif name == "direct":
            Deferred.fromCoroutine(worker.direct(**command)).addErrback(self._crash)
        elif name == "offline":
            Deferred.fromCoroutine(worker.offline(**command)).addErrback(self._crash)
        elif name == "collect":
            Deferred.fromCoroutine(worker.collect(**command)).addErrback(self._crash)
        elif name == "block":
            worker.block(**command)
        elif name == "listen":
            worker.listen(**command)
        elif name == "send":
            worker.send(**command)
        elif name == "join":
            worker.join(**command)
        elif name == "history":
            Deferred.fromCoroutine(worker.history(**command)).addErrback(self._crash)
        elif name == "close":
            worker.close()
            self.reactor.callLater(0.1, self._finish)

    def connectionLost(self, reason: object = None) -> None:
        self._finish()  # the coordinator went away: so do we

    def _crash(self, failure: Any) -> None:
        self.worker.emit({"event": "crashed", "error": failure.getTraceback()})
        self._finish()

    def _finish(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)


async def main(reactor: Any) -> None:
    finished: Deferred[None] = Deferred()
    reader = CommandReader(finished, reactor)
    StandardIO(reader, reactor=reactor)
    await finished


def run() -> None:
    react(lambda r: Deferred.fromCoroutine(main(r)))


if __name__ == "__main__":
    run()
