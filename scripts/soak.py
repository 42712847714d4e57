"""A bounded soak on 127.0.0.1: many clients log in, message each other, drop abruptly
and come back, for a while; then the books must balance.

It starts its own server (``twistd chatserver``, durable store, default limits) in a
temporary directory with ``--clients`` generated accounts, and runs every client in this
one process over real TCP:

- ``stable`` clients stay logged in the whole time;
- the others churn: log in, send messages, drop the TCP connection abruptly (abort, no
  logout) and come back a little later.

Every message is to a random user. The server acknowledges each one, as delivered to
an online user or as stored for an offline one. At the end every churner logs in once
more to collect what was stored, and the script checks the books:

- each message acknowledged as delivered to a stable user arrived, exactly once
  (churners may drop mid-delivery, which is why the check is on stable recipients);
- each message acknowledged as stored arrived at the recipient's next login, exactly
  once, in order;
- the server logged no error, and its memory at the start and at the end.

    .venv/bin/python scripts/soak.py [--clients 1000] [--stable 200] [--duration 120]

Bounded in count and time; ends the server by its PID; talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater, react

from twisted_chat import launch, wire
from twisted_chat.client.link import ServerError, ServerGone, ServerLink

GRACE = 30.0
"""Seconds allowed after the run for the last deliveries and the final logins."""


def rss_kib(pid: int) -> int:
    return launch.proc_stat(pid)[0]


class Account:
    """One user: the link while logged in, and what they received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.link: ServerLink | None = None
        self.received: list[str] = []
        self.stored_received: list[str] = []
        self.pending_link: ServerLink

    # LinkListener
    def link_made(self, link: ServerLink) -> None:
        self.pending_link = link

    def event_received(self, event: wire.Frame) -> None:
        if isinstance(event, wire.Message):
            (self.stored_received if event.stored else self.received).append(event.text)
        elif isinstance(event, wire.StoredDone):  # as the real client does
            self.pending_link.request(wire.Received(event.upto)).addErrback(
                lambda f: f.trap(ServerError, ServerGone)
            )

    def server_lost(self, why: str = "") -> None:
        self.link = None


class Soak:
    def __init__(self, port: int, names: list[str], stable: int, rng: random.Random) -> None:
        self.port = port
        self.rng = rng
        self.accounts = {name: Account(name) for name in names}
        self.stable = set(names[:stable])
        self.churners = names[stable:]
        self.delivered_to: defaultdict[str, list[str]] = defaultdict(list)
        """Texts the server acknowledged as delivered at once, by recipient."""
        self.stored_for: defaultdict[str, list[str]] = defaultdict(list)
        """Texts the server acknowledged as stored, by recipient, in order."""
        self.unknown: set[str] = set()
        """Texts whose sender dropped before the server acknowledged them."""
        self.sent = 0
        self.refused: Counter[str] = Counter()
        self.logins = 0
        self.drops = 0
        self.running = True

    async def login(self, account: Account) -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        link = await connectProtocol(endpoint, ServerLink(account))
        await link.request(wire.Hello(wire.PROTOCOL_VERSION))
        await link.request(wire.Login(account.name))
        await link.request(wire.Password("pw-" + account.name))
        account.link = link
        self.logins += 1

    def send_one(self, sender: Account) -> None:
        if sender.link is None:
            return
        recipient = self.rng.choice(list(self.accounts))
        if recipient == sender.name:
            return
        self.sent += 1
        text = f"{sender.name}->{recipient} #{self.sent}"

        def acknowledged(result: dict[str, Any]) -> None:
            book = self.stored_for if result.get("stored") else self.delivered_to
            book[recipient].append(text)

        def refused(failure: Any) -> None:
            failure.trap(ServerError, ServerGone)
            self.refused[getattr(failure.value, "code", "gone")] += 1
            if failure.check(ServerGone):
                # The sender dropped before the answer came: stored, delivered or not,
                # the sender cannot know. Such a message may arrive; it is not owed.
                self.unknown.add(text)

        sender.link.request(wire.SendMessage(recipient, text)).addCallbacks(acknowledged, refused)

    async def talk(self, account: Account, until: float) -> None:
        """A stable user: a message every 1-4 s until the end."""
        while time.monotonic() < until:
            self.send_one(account)
            await deferLater(reactor, self.rng.uniform(1, 4), lambda: None)

    async def churn(self, account: Account, until: float) -> None:
        """A churner: log in, talk a little, drop abruptly, stay away a little."""
        while time.monotonic() < until:
            await self.login(account)
            for _ in range(self.rng.randint(0, 4)):
                self.send_one(account)
                await deferLater(reactor, self.rng.uniform(0.5, 3), lambda: None)
            link = account.link
            if link is not None and link.transport is not None:
                link.transport.abortConnection()  # no logout: the server must notice
                self.drops += 1
            await deferLater(reactor, self.rng.uniform(1, 8), lambda: None)


async def run(_reactor: Any, clients: int, stable: int, duration: float, seed: int) -> None:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="twisted-chat-soak-"))
    names = [f"user{n:05d}" for n in range(clients)]
    (workdir / "credentials.txt").write_text("".join(f"{n} pw-{n}\n" for n in names))
    # Every soak client comes from 127.0.0.1: the per-address limit is lifted.
    server, port = await launch.start_server(
        reactor, workdir, "--timeout", "3600", "--max-per-ip", "100000"
    )
    server_pid = server.pid
    assert server_pid is not None
    try:
        rss_start_empty = rss_kib(server_pid)
        soak = Soak(port, names, stable, rng)
        gate = DeferredSemaphore(50)  # log in 50 at a time
        started = time.monotonic()
        await gatherResults(
            [
                gate.run(lambda a=soak.accounts[n]: Deferred.fromCoroutine(soak.login(a)))
                for n in names[:stable]
            ]
        )
        print(f"{stable} stable users logged in in {time.monotonic() - started:.1f} s")
        rss_start = rss_kib(server_pid)
        until = time.monotonic() + duration
        work = [Deferred.fromCoroutine(soak.talk(soak.accounts[n], until)) for n in names[:stable]]
        work += [Deferred.fromCoroutine(soak.churn(soak.accounts[n], until)) for n in soak.churners]
        while time.monotonic() < until:
            await deferLater(reactor, min(10.0, until - time.monotonic()), lambda: None)
            print(
                f"  {until - time.monotonic():5.0f} s left: {soak.sent} messages sent, "
                f"{soak.logins} logins, {soak.drops} abrupt drops, "
                f"server RSS {rss_kib(server_pid) / 1024:.1f} MiB",
                flush=True,
            )
        await gatherResults(work)
        rss_end_busy = rss_kib(server_pid)
        # Everyone collects: churners log in (their stored mail comes at login).
        for account in soak.accounts.values():
            if account.link is not None and account.name not in soak.stable:
                account.link.transport.abortConnection()
        await deferLater(reactor, 2, lambda: None)
        await gatherResults(
            [
                gate.run(lambda a=soak.accounts[n]: Deferred.fromCoroutine(soak.login(a)))
                for n in soak.churners
            ]
        )
        deadline = time.monotonic() + GRACE
        while time.monotonic() < deadline and not books_balance(soak, quiet=True):
            await deferLater(reactor, 0.5, lambda: None)
        ok = books_balance(soak, quiet=False)
        errors = [
            line
            for line in (server.output + server.errors).splitlines()
            if "#error]" in line or "#critical]" in line or "Traceback" in line
        ]
        rss_end = rss_kib(server_pid)
        delivered = sum(len(v) for v in soak.delivered_to.values())
        stored = sum(len(v) for v in soak.stored_for.values())
        print(
            f"clients: {clients} ({stable} stable, {clients - stable} churning); "
            f"duration {duration:.0f} s; seed {seed}"
        )
        print(
            f"messages sent: {soak.sent}; sender dropped before the answer: "
            f"{len(soak.unknown)}; acknowledged delivered: {delivered}, "
            f"stored: {stored}; refused: {dict(soak.refused) or 'none'}"
        )
        print(
            f"logins: {soak.logins}; abrupt drops: {soak.drops}; stored messages "
            f"delivered again after a drop before acknowledging: {redeliveries(soak)}"
        )
        print(f"books balance: {'yes' if ok else 'NO'}")
        print(f"server errors logged: {len(errors)}")
        for line in errors[:10]:
            print("   ", line)
        print(
            f"server RSS: {rss_start_empty / 1024:.1f} MiB empty, {rss_start / 1024:.1f} MiB "
            f"with {stable} users, {rss_end_busy / 1024:.1f} MiB at the end of the run, "
            f"{rss_end / 1024:.1f} MiB with all {clients} logged in"
        )
        if not ok or errors:
            raise SystemExit(1)
    finally:
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def books_balance(soak: Soak, quiet: bool) -> bool:
    """Every acknowledged message arrived; nothing arrived that was never sent."""
    ok = True
    for name in soak.stable:
        expected = Counter(soak.delivered_to.get(name, []))
        got = Counter(soak.accounts[name].received)
        missing = expected - got
        extra = Counter({t: n for t, n in (got - expected).items() if t not in soak.unknown})
        if missing or extra:
            ok = False
            if not quiet:
                print(f"  {name}: {sum(missing.values())} missing, {sum(extra.values())} extra")
    for name, texts in soak.stored_for.items():
        first_arrivals = list(dict.fromkeys(soak.accounts[name].stored_received))
        # At-least-once: a client that drops between receiving its stored messages and
        # acknowledging them gets them again; none may be lost. Order: what one sender
        # sent comes in the order it was sent (acknowledgements to different senders
        # reach this process on different connections, so their relative order here
        # says nothing about the order the server stored them in).
        owed, arrived = set(texts), set(first_arrivals)
        in_order = all(
            [t for t in first_arrivals if t.startswith(sender + "->") and t in owed]
            == [t for t in texts if t.startswith(sender + "->")]
            for sender in {t.split("->")[0] for t in texts}
        )
        strays = arrived - owed - soak.unknown
        if not owed <= arrived or strays or not in_order:
            ok = False
            if not quiet:
                print(
                    f"  {name}: {len(owed - arrived)} stored messages missing, "
                    f"{len(strays)} never sent, in order per sender: {in_order}"
                )
    return ok


def redeliveries(soak: Soak) -> int:
    return sum(len(a.stored_received) - len(set(a.stored_received)) for a in soak.accounts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--stable", type=int, default=200)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of churn")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 0 < args.stable < args.clients or args.duration > 1800:
        parser.error("need 0 < --stable < --clients and --duration <= 1800")
    react(
        lambda r: Deferred.fromCoroutine(
            run(r, args.clients, args.stable, args.duration, args.seed)
        )
    )


if __name__ == "__main__":
    main()
