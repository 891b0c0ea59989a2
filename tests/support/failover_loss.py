"""What a kill -9 of the primary costs in acknowledged enqueues, with a synchronous standby
and with an asynchronous one: `python -m tests.support.failover_loss [--rounds N]`.

Each round: clients enqueue through the cluster's multi-host URL as fast as they can (one
`Queue.enqueue` per transaction, each client on its own connection),
the primary's keeper and Postgres are killed (kill -9: the machine is lost), the standby is
promoted, and every id whose commit was acknowledged is looked up on the new primary. The killed
node then rejoins as the standby, so rounds alternate between the two nodes.
The figures of docs/deploying.md, "Failover", come from this.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from pgqueue import Queue
from tests.support import autofailover, db
from tests.support.autofailover import Cluster
from tests.support.processes import Processes
from tests.support.wait import wait_for

CLIENTS = 16
LOAD_BEFORE_KILL_S = 2.0  # enqueues flowing before the kill
PROMOTION_TIMEOUT_S = 60.0
FOUND = "SELECT id FROM pgqueue.jobs WHERE id = ANY($1::bigint[])"
QUEUE = "failover-probe"


@dataclasses.dataclass(slots=True)
class Round:
    """One kill: how many enqueues were acknowledged, and how many of those the new primary
    does not have."""

    synchronous: bool
    acknowledged: int
    lost: int


async def _client(url: str, acknowledged: list[int], stop: asyncio.Event) -> None:
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(url, timeout=2)
            job = await Queue(conn).enqueue("failover.probe", {}, queue=QUEUE)
            acknowledged.append(job.id)
        except Exception:  # the kill and the promotion: reconnect, through the multi-host URL
            if conn is not None:
                conn.terminate()
            conn = None
            await asyncio.sleep(0.05)  # between connection attempts, not a wait on a state
    if conn is not None:
        await conn.close()


async def kill_round(cluster: Cluster) -> Round:
    """One round on a healthy cluster (see the module's docstring)."""
    old = await cluster.wait_healthy()
    synchronous = await cluster.synchronous_standby_names() != ""
    acknowledged: list[int] = []
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_client(cluster.url, acknowledged, stop)) for _ in range(CLIENTS)
    ]
    try:
        await wait_for(lambda: len(acknowledged) > 100, 30, "enqueues flowing")
        await asyncio.sleep(LOAD_BEFORE_KILL_S)  # a measured stretch of load, then the kill
        await cluster.kill(old)
        new = next(node for node in cluster.nodes if node is not old)
        await cluster.wait_states({new.name: "wait_primary"}, PROMOTION_TIMEOUT_S)
        started = len(acknowledged)
        await wait_for(lambda: len(acknowledged) > started + 100, 30, "enqueues after")
    finally:
        stop.set()
        await asyncio.gather(*clients)
    conn = await asyncpg.connect(cluster.url)
    try:
        found = {row["id"] for row in await conn.fetch(FOUND, acknowledged)}
    finally:
        await conn.close()
    await cluster.restart(old)
    await cluster.wait_healthy()
    return Round(synchronous, len(acknowledged), len(set(acknowledged) - found))


async def measure(
    rounds: int, log_dir: Path, modes: tuple[bool, ...] = (True, False)
) -> list[Round]:
    """`rounds` kills per mode: with a synchronous standby (True), an asynchronous one (False)."""
    harness = Processes(log_dir)
    results: list[Round] = []
    with autofailover.cluster_directory() as base:
        cluster = Cluster(base, harness)
        try:
            await cluster.start()
            await asyncio.to_thread(db.migrate, cluster.url)
            for synchronous in modes:
                await cluster.set_synchronous(synchronous)
                for _ in range(rounds):
                    results.append(await kill_round(cluster))
                    print(results[-1], flush=True)
        finally:
            autofailover.stop(cluster)
            harness.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="kills per mode (default 5)")
    parser.add_argument(
        "--standby", choices=("sync", "async", "both"), default="both", help="which mode(s)"
    )
    args = parser.parse_args()
    modes = {"sync": (True,), "async": (False,), "both": (True, False)}[args.standby]
    autofailover.check_available()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="failover-loss-logs-") as logs:
        results = asyncio.run(measure(args.rounds, Path(logs), modes))
    for synchronous in modes:
        mine = [r for r in results if r.synchronous is synchronous]
        lost = [r.lost for r in mine]
        print(
            f"{'synchronous' if synchronous else 'asynchronous'} standby: "
            f"{sum(lost)} of {sum(r.acknowledged for r in mine)} acknowledged enqueues lost "
            f"in {len(mine)} kills (per kill: {lost}); {CLIENTS} clients"
        )
    print(f"took {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
