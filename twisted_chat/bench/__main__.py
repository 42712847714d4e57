"""``python -m twisted_chat.bench``: the command line of the benchmark."""

from __future__ import annotations

import argparse

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from twisted_chat.bench import __doc__ as description
from twisted_chat.bench.coordinator import DEFAULT_PHASE_LIMIT, main
from twisted_chat.bench.targets import TARGETS


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m twisted_chat.bench", description=(description or "").split("\n\n")[0]
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=200, help="messages in flight")
    parser.add_argument("--rounds", type=int, default=5, help="broadcast rounds")
    parser.add_argument(
        "--offline-messages",
        type=int,
        default=None,
        help="messages to offline users (servers that store them), then collected at "
        "login [default: 20 per user]",
    )
    parser.add_argument(
        "--history-stored",
        type=int,
        default=100_000,
        help="messages kept in one room before its history is read (servers with history)",
    )
    parser.add_argument(
        "--history-queries", type=int, default=500, help="reads of that room's newest 50"
    )
    parser.add_argument("--workers", type=int, default=2, help="load-generating processes")
    parser.add_argument("--targets", default="ours,relay,words,ngircd")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--runs", type=int, default=1, help="rounds over the targets, interleaved (medians)"
    )
    parser.add_argument(
        "--hashed",
        action="store_true",
        help="store our accounts as argon2id hashes (logins then cost a hash check)",
    )
    parser.add_argument(
        "--our-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="an option for our servers, after the benchmark's own, e.g. "
        "--our-option=--history-days=0 (repeat for several)",
    )
    parser.add_argument(
        "--phase-limit",
        type=float,
        default=DEFAULT_PHASE_LIMIT,
        help="seconds a phase may take before the server under test is given up on",
    )
    args = parser.parse_args(argv)
    if args.offline_messages is None:
        args.offline_messages = 20 * args.users
    if not 1 <= args.offline_messages <= 10**6:
        parser.error("--offline-messages must be 1..1000000")
    if not 2 <= args.users <= 20000 or not 1 <= args.messages <= 10**6:
        parser.error("--users must be 2..20000 and --messages 1..1000000")
    if not 1 <= args.history_stored <= 10**6 or not 1 <= args.history_queries <= 10**5:
        parser.error("--history-stored must be 1..1000000 and --history-queries 1..100000")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be 1..20")
    if not 1 <= args.workers <= 16 or args.window < 1 or args.rounds < 1:
        parser.error("--workers must be 1..16; --window and --rounds at least 1")
    if not 1 <= args.phase_limit <= 3600:
        parser.error("--phase-limit must be 1..3600 seconds")
    unknown = set(args.targets.split(",")) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def run_cli() -> None:
    args = parse()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args)))


if __name__ == "__main__":
    run_cli()
