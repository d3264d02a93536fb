"""The daily run at scale, and what Prefect's orchestration costs on top of the work itself.

    python benchmarks/daily.py --leads 100000 --database postgresql+psycopg://postgres@127.0.0.1/nurture_bench

N leads with 200 days of history (the rules benchmark's builder: emails, replies, meetings,
owners, enrolments) are built once into ``<database>_seed``; every run starts from a fresh copy
of it (``CREATE DATABASE ... TEMPLATE``), so the database given is dropped and recreated: use a
scratch one. Then, for each number of workers (``--workers 1 2``), alternating:

* ``flow``: the ``daily`` Prefect flow (plan the day's batches, ``workers`` tasks sharing them,
  the send task and the report) against a real Prefect server started for the benchmark (its
  start is not counted); one worker on the default task runner, several on a Dask cluster of
  that many worker processes, started before the timings as a production cluster would be;
* ``plain``: the very same work as plain function calls (the batches shared by ``workers``
  processes of a pool started beforehand), no Prefect at all: the lower bound.

Prints the medians of ``--repeat`` runs of each and the share of the flow's time spent in
orchestration ((flow - plain) / flow; the goal at 100k leads is <= 5%).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rules import build

from tasks.config.loader import load_config
from tasks.store.db import make_engine
from tasks.store.schema import upgrade

AS_OF = dt.datetime(2026, 7, 20, 23, 0, tzinfo=dt.UTC)


def fresh(url: str, leads: int) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade(engine)
    build(engine, leads, load_config())
    engine.dispose()


def seed_url(url: str) -> str:
    """The sibling database the data is built in once: ``<database>_seed``."""
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_seed").render_as_string(hide_password=False)


def _admin(url: str) -> Engine:
    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def build_seed(url: str, leads: int) -> None:
    """Build the data once, in ``<database>_seed``: each run then starts from a copy of it."""
    seed = make_url(seed_url(url)).database
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{seed}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{seed}"'))
    admin.dispose()
    fresh(seed_url(url), leads)


def restore(url: str) -> None:
    """The run's database as a copy of the seed: PostgreSQL copies the files, seconds where
    building a million leads again takes minutes. Workers' pooled connections to the old
    database are cut (their engines ping before use, so they reconnect to the new one)."""
    target, seed = make_url(url).database, make_url(seed_url(url)).database
    admin = _admin(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target}" TEMPLATE "{seed}"'))
    admin.dispose()


def _work_day(url: str, run_id: int) -> int:
    """One worker process's share of a day (a pool process: imports already paid)."""
    from tasks.batches import work_day
    from tasks.stages import STAGES, current_config

    return len(work_day(make_engine(url), run_id, STAGES, current_config()))


def _import_once() -> None:
    import tasks.stages  # noqa: F401


def plain(url: str, workers: int, pool: Any) -> float:
    """The day as the flow does it (planned batches shared by ``workers`` worker processes, then
    sending and the report), as plain function calls: no Prefect at all."""
    from tasks.email.senders import OutboxOnlySender
    from tasks.email.sending import send_due_emails
    from tasks.reports.summary import pipeline_summary
    from tasks.runs import finish_run
    from tasks.stages import current_config, plan_run
    from tasks.store.db import session_scope
    from tasks.store.models import Run

    engine = make_engine(url)
    config = current_config()
    started = time.perf_counter()
    with session_scope(engine=engine) as session:
        run_id = plan_run(session, AS_OF)
    pool.starmap(_work_day, [(url, run_id)] * workers)
    counts = {
        "sending": asdict(send_due_emails(engine, OutboxOnlySender(), as_of=AS_OF, config=config))
    }
    with session_scope(engine=engine) as session:
        pipeline_summary(session)
        run = session.get(Run, run_id)
        assert run is not None
        finish_run(session, run, counts)
    return time.perf_counter() - started


def flow(url: str, workers: int, dask_address: str) -> float:
    """The daily flow: one worker on the default task runner; several on a Dask cluster of
    worker processes already running (NURTURE_DASK_ADDRESS, as in production)."""
    from flows.daily import daily
    from flows.runners import dask_runner

    run = daily if workers == 1 else daily.with_options(task_runner=dask_runner(dask_address))
    started = time.perf_counter()
    run(as_of=AS_OF.isoformat(), workers=workers)
    return time.perf_counter() - started


def empty_flow_runs(runs: int = 5) -> float:
    """The median time of an empty flow run (the first, the client's one-time set-up in this
    process, not counted): Prefect's fixed cost per flow run on this machine. Most of it is the
    flow engine joining its heartbeat thread, which sleeps in whole seconds."""
    from prefect import flow as prefect_flow

    @prefect_flow
    def nothing() -> None:
        pass

    nothing()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        nothing()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A real Prefect server on loopback (its own SQLite database in ``home``), as ops run one:
    worker processes report to it through PREFECT_API_URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(180):
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the Prefect server did not start within 90 s")
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--database", required=True, help="a scratch PostgreSQL database URL")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, medians reported")
    args = parser.parse_args()
    os.environ["NURTURE_DATABASE_URL"] = args.database
    os.environ.pop("SENDGRID_API_KEY", None)  # the outbox only: nothing leaves this machine
    started = time.perf_counter()
    build_seed(args.database, args.leads)
    print(f"built {args.leads:,} leads in {time.perf_counter() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as home, prefect_server(Path(home)) as api:
        os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=home)
        empty = empty_flow_runs()
        print(f"an empty flow run: {empty:.2f} s (median of 5)", flush=True)
        from distributed import LocalCluster

        most = max(args.workers)
        context = multiprocessing.get_context("spawn")
        with (
            LocalCluster(n_workers=most, threads_per_worker=1, processes=True) as cluster,
            context.Pool(most, initializer=_import_once) as pool,
        ):
            for workers in args.workers:
                _measure(args, workers, pool, cluster.scheduler_address)


def _measure(args: argparse.Namespace, workers: int, pool: Any, dask_address: str) -> None:
    times: dict[str, list[float]] = {"plain": [], "flow": []}
    for _ in range(args.repeat):
        # Alternated, each on a fresh copy of the same data, so drift on the machine hits both.
        restore(args.database)
        times["plain"].append(plain(args.database, workers, pool))
        restore(args.database)
        times["flow"].append(flow(args.database, workers, dask_address))
    base, orchestrated = statistics.median(times["plain"]), statistics.median(times["flow"])
    share = (orchestrated - base) / orchestrated
    print(f"daily run, {args.leads:,} leads on PostgreSQL, {workers} worker(s): "
          f"flow {orchestrated:.1f} s, plain {base:.1f} s, orchestration "
          f"{100 * share:.1f}% of the flow's time (runs: flow "
          f"{', '.join(f'{t:.1f}' for t in times['flow'])}; plain "
          f"{', '.join(f'{t:.1f}' for t in times['plain'])})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
