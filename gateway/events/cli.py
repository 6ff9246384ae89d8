"""``trellis dlq list|show|replay|discard``: dead-letter operations without a running gateway.

The commands open the same store the gateway uses (the SQLite file in ``data_dir``, Redis
when ``redis_url`` is set, PostgreSQL when ``database_url`` is); a replayed letter is
delivered by the next gateway that runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from .records import DeadLetter, DeadLetterQuery, DeadLetterStatus

Command = Callable[[argparse.Namespace], int]


def _settings(args: argparse.Namespace) -> Any:
    from gateway.settings import ConfigError, load_settings

    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"trellis: invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _run(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    from .component import open_store

    async def main() -> int:
        store = open_store(_settings(args))
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _print_json(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        sys.stdout.write(value.model_dump_json(indent=2) + "\n")
    else:
        data = (
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
            if isinstance(value, list)
            else value
        )
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _row(letter: DeadLetter) -> str:
    last = letter.errors[-1].error if letter.errors else ""
    return (
        f"{letter.id}  {letter.created_at:%Y-%m-%d %H:%M:%S}  {letter.status.value:<17} "
        f"{letter.type:<16} {letter.subscriber:<26} {letter.attempts}x  {(last or '')[:60]}"
    )


def cmd_list(args: argparse.Namespace) -> int:
    query = DeadLetterQuery(
        type=args.type,
        subscriber=args.subscriber,
        since=args.since,
        until=args.until,
        status=None if args.status == "all" else DeadLetterStatus(args.status),
        limit=args.limit,
    )

    async def work(store: Any) -> int:
        letters: list[DeadLetter] = await store.dead_letters(query)
        if args.json:
            _print_json(letters)
        else:
            for letter in letters:
                print(_row(letter))
            print(f"{len(letters)} dead letter(s)", file=sys.stderr)
        return 0

    return _run(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    async def work(store: Any) -> int:
        letter = await store.dead_letter(args.id)
        if letter is None:
            print(f"trellis: no dead letter {args.id}", file=sys.stderr)
            return 1
        _print_json(letter)
        return 0

    return _run(args, work)


def cmd_replay(args: argparse.Namespace) -> int:
    async def work(store: Any) -> int:
        results = await store.replay(args.ids)
        for r in results:
            print(f"{r.id}  {r.outcome.value}")
        settled = ("replayed", "already_delivered")
        return 0 if all(r.outcome.value in settled for r in results) else 1

    return _run(args, work)


def cmd_discard(args: argparse.Namespace) -> int:
    async def work(store: Any) -> int:
        letter = await store.discard(args.id, args.reason)
        if letter is None:
            print(f"trellis: no dead letter {args.id}", file=sys.stderr)
            return 1
        if letter.status is not DeadLetterStatus.DISCARDED or letter.reason != args.reason:
            print(f"trellis: {args.id} is already {letter.status.value}", file=sys.stderr)
            return 1
        print(f"{letter.id}  discarded")
        return 0

    return _run(args, work)


def _when(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give a time zone, e.g. 2025-01-31T12:00:00+00:00")
    return parsed


def add_dlq_commands(subparsers: Any) -> None:
    """Register ``dlq`` and its subcommands on the ``trellis`` parser's subparsers."""
    dlq = subparsers.add_parser("dlq", help="inspect, replay or discard dead-lettered events")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=None, help="config directory (default: ./config)")

    ls = sub.add_parser("list", help="dead letters, newest first")
    common(ls)
    ls.add_argument("--type", default=None)
    ls.add_argument("--subscriber", default=None)
    ls.add_argument("--since", type=_when, default=None)
    ls.add_argument("--until", type=_when, default=None)
    ls.add_argument(
        "--status", default="dead", choices=[*(s.value for s in DeadLetterStatus), "all"]
    )
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one dead letter with its attempts, as JSON")
    common(show)
    show.add_argument("id")
    show.set_defaults(func=cmd_show)

    replay = sub.add_parser("replay", help="send dead letters back through delivery")
    common(replay)
    replay.add_argument("ids", nargs="+")
    replay.set_defaults(func=cmd_replay)

    discard = sub.add_parser("discard", help="give up on a dead letter, with a reason")
    common(discard)
    discard.add_argument("id")
    discard.add_argument("--reason", required=True)
    discard.set_defaults(func=cmd_discard)
