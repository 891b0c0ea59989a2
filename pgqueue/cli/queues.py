"""Queues from the command line: `queues` (their counts), `pause Q`, `resume Q`."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from pgqueue import reports
from pgqueue.cli.common import Exit, json_line, seconds_text, table
from pgqueue.queue import Queue


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `queues`, `pause` and `resume`."""
    queues = commands.add_parser("queues", help="per-queue counts, and whether it is paused")
    queues.add_argument("--json", action="store_true", help="one JSON object per line")
    queues.set_defaults(handler=list_queues)
    pause = commands.add_parser("pause", help="no worker or drain starts the queue's jobs")
    pause.add_argument("queue", type=_queue_name, metavar="Q")
    pause.set_defaults(handler=pause_queue)
    resume = commands.add_parser("resume", help="workers start the queue's jobs again")
    resume.add_argument("queue", type=_queue_name, metavar="Q")
    resume.set_defaults(handler=resume_queue)


async def list_queues(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`queues`: the columns of `pgqueue.queue_stats`, plus paused, oldest wait, recent rate."""
    queues = await Queue(conn).queues()
    if args.json:
        for info in queues:
            print(json_line(queue_fields(info)))
        return Exit.OK
    rows = [
        (
            info.queue,
            "paused" if info.paused else "-",
            info.stats.waiting,
            info.stats.delayed,
            info.stats.active,
            info.stats.completed,
            info.stats.failed,
            info.stats.cancelled,
            None if info.oldest_waiting_s is None else seconds_text(info.oldest_waiting_s),
            info.finished_last_5m,
        )
        for info in queues
    ]
    headers = (
        "QUEUE",
        "PAUSED",
        "WAITING",
        "DELAYED",
        "ACTIVE",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "OLDEST WAIT",
        "DONE 5M",
    )
    print(table(rows, headers) if rows else "no queues yet")
    return Exit.OK


async def pause_queue(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`pause Q`: running jobs finish; nothing new starts until `resume Q`."""
    info = await Queue(conn).pause(args.queue)
    print(f"paused queue {info.queue}: {info.stats.active} running job(s) finish, none starts")
    return Exit.OK


async def resume_queue(args: argparse.Namespace, conn: asyncpg.Connection) -> Exit:
    """`resume Q`: its workers are woken at once."""
    info = await Queue(conn).resume(args.queue)
    print(f"resumed queue {info.queue}: {info.stats.waiting} job(s) waiting")
    return Exit.OK


def queue_fields(info: reports.QueueInfo) -> dict[str, Any]:
    """A queue as `--json` prints it: `queue` (also as `name`, the HTTP API's key), the counts
    of `pgqueue.queue_stats`, `paused`, and the overview's two figures."""
    stats = info.stats
    return {
        "queue": info.queue,
        "name": info.queue,
        "paused": info.paused,
        "waiting": stats.waiting,
        "delayed": stats.delayed,
        "active": stats.active,
        "completed": stats.completed,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "paused_at": info.paused_at,
        "oldest_waiting_s": info.oldest_waiting_s,
        "finished_last_5m": info.finished_last_5m,
    }


def _queue_name(text: str) -> str:
    if not 1 <= len(text) <= 128:
        raise argparse.ArgumentTypeError("a queue name is 1-128 characters")
    return text
