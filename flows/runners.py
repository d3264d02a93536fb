"""Which task runner the daily flows use: threads by default, Dask on request.

Chosen by the environment of the process that runs the flow (a Prefect worker's job variables),
so deployments stay the same and the base install needs no Dask:

* ``NURTURE_TASK_RUNNER=threads`` (default): the day's worker tasks are threads of the flow run;
  the work is mostly in PostgreSQL, so threads share two cores well.
* ``NURTURE_TASK_RUNNER=dask``: prefect-dask's ``DaskTaskRunner`` (``pip install -e '.[dask]'``);
  ``NURTURE_DASK_ADDRESS=tcp://host:8786`` uses a running Dask cluster (workers on several
  machines), else a local cluster of ``NURTURE_DASK_WORKERS`` processes (default 2).
"""

from __future__ import annotations

import os
from typing import Any, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

CHOICES = ("threads", "dask")
Runner = TaskRunner[PrefectFuture[Any]]


def task_runner() -> Runner:
    choice = os.environ.get("NURTURE_TASK_RUNNER", "threads").strip().lower() or "threads"
    if choice == "threads":
        return cast(Runner, ThreadPoolTaskRunner())
    if choice == "dask":
        return dask_runner(os.environ.get("NURTURE_DASK_ADDRESS") or None, _dask_workers())
    raise ValueError(f"NURTURE_TASK_RUNNER={choice!r}: expected one of {', '.join(CHOICES)}")


def dask_runner(address: str | None = None, workers: int = 2, processes: bool = True) -> Runner:
    """A Dask task runner: on the cluster at ``address``, else a local one of ``workers``."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as missing:
        raise ImportError(
            "NURTURE_TASK_RUNNER=dask needs prefect-dask: pip install -e '.[dask]'"
        ) from missing
    if address:
        return cast(Runner, DaskTaskRunner(address=address))
    kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": processes}
    return cast(Runner, DaskTaskRunner(cluster_kwargs=kwargs))


def _dask_workers() -> int:
    raw = os.environ.get("NURTURE_DASK_WORKERS", "2")
    try:
        workers = int(raw)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(f"NURTURE_DASK_WORKERS={raw!r}: expected a whole number of at least 1")
    return workers
