"""The README's ops path against a real Prefect server on loopback: start it, create the work pool,
deploy everything from prefect.yaml, trigger the daily deployment with parameters, let a process
worker run it, and find the run in our store. The PostgreSQL variant gives Prefect its own
PostgreSQL database too."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from tasks.store.db import make_engine
from tasks.store.models import Run, RunKind, StageBatch
from tasks.store.schema import upgrade
from tests.conftest import PG_ADMIN_URL

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A Prefect server (its database: SQLite, or PostgreSQL) and an empty Nurture store."""
    made: list[str] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               NURTURE_HOME=str(REPO), PYTHONUNBUFFERED="1")  # fmt: skip
    if request.param == "sqlite":
        store = f"sqlite:///{tmp_path / 'nurture.db'}"
    else:
        if os.environ.get("NURTURE_TEST_SKIP_PG"):
            pytest.skip("NURTURE_TEST_SKIP_PG is set")
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        names = [f"nurture_it_{uuid.uuid4().hex[:8]}", f"prefect_it_{uuid.uuid4().hex[:8]}"]
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        made += names
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        store = f"{base}/{names[0]}"
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = (
            f"{base.replace('+psycopg', '+asyncpg')}/{names[1]}"
        )
    upgrade(make_engine(store))
    env["NURTURE_DATABASE_URL"] = store
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("the Prefect server did not start within 90 s")
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if made:
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in made:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def prefect(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, (
        f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.mark.skipif(
    shutil.which(PREFECT) is None and not Path(PREFECT).exists(), reason="no prefect CLI"
)
def test_deploy_trigger_and_run_the_daily_deployment_on_a_real_server(
    stack: dict[str, str],
) -> None:
    prefect(stack, "work-pool", "create", "nurture-process", "--type", "process")
    deployed = prefect(stack, "--no-prompt", "deploy", "--all")
    for name in ("daily/daily", "backfill/backfill", "ingest/ingest", "ingest-folder/ingest-folder",
                 "webhook-events/webhook-events", "daily-worker/daily-worker"):  # fmt: skip
        assert name in deployed, deployed
    on_postgresql = stack["NURTURE_DATABASE_URL"].startswith("postgresql")
    # On PostgreSQL, two workers in the daily run and a second flow run joining the day: the
    # worker starts both at once, as a second machine's worker would.
    workers = "2" if on_postgresql else "1"
    prefect(stack, "deployment", "run", "daily/daily", "--param", "as_of=2026-03-02",
            "--param", "dry_run=false", "--param", f"workers={workers}")  # fmt: skip
    if on_postgresql:
        prefect(stack, "deployment", "run", "daily-worker/daily-worker")
    prefect(stack, "worker", "start", "--pool", "nurture-process", "--run-once", timeout=300)
    with Session(make_engine(stack["NURTURE_DATABASE_URL"])) as session:
        runs = session.execute(select(Run.kind, Run.as_of, Run.finished_at)).tuples().all()
        pending = session.scalar(select(func.count()).where(StageBatch.done_at.is_(None)))
    assert len(runs) == 1
    kind, as_of, finished = runs[0]
    assert (
        kind == RunKind.DAILY and as_of.date().isoformat() == "2026-03-02" and finished is not None
    )
    assert pending == 0
    # The runs triggered above all completed. The schedules' runs are not this test's: most
    # wait, SCHEDULED, but one that comes due meanwhile (webhook-events runs every 5 minutes)
    # is picked up by the worker too.
    flow_runs = httpx.post(f"{stack['PREFECT_API_URL']}/flow_runs/filter", json={}).json()
    ran = [r["state_type"] for r in flow_runs if not r["auto_scheduled"]]
    assert ran == ["COMPLETED"] * (2 if on_postgresql else 1)
