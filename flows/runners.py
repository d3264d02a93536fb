"""Which task runner the daily flows use: threads by default, Dask on request.

Chosen by the environment of the process that runs the flow (a Prefect worker's job variables),
so deployments stay the same and the base install needs no Dask:

* ``NURTURE_TASK_RUNNER=threads`` (default): the day's worker tasks are threads of the flow run.
  Cheap to start, but a batch is about half Python, so threads share the interpreter's lock.
* ``NURTURE_TASK_RUNNER=processes``: Prefect's ``ProcessPoolTaskRunner`` with
  ``NURTURE_PROCESSES`` processes (default: the machine's cores), started with each flow run
  (a few seconds: worth it on big days).
* ``NURTURE_TASK_RUNNER=dask``: prefect-dask's ``DaskTaskRunner`` (``pip install -e '.[dask]'``);
  ``NURTURE_DASK_ADDRESS=tcp://host:8786`` uses a running Dask cluster (workers on several
  machines), else a local cluster of ``NURTURE_DASK_WORKERS`` processes (default 2).
"""

from __future__ import annotations

import os
from typing import Any, cast

from prefect.futures import PrefectFuture
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

CHOICES = ("threads", "processes", "dask")
Runner = TaskRunner[PrefectFuture[Any]]


def task_runner() -> Runner:
    choice = os.environ.get("NURTURE_TASK_RUNNER", "threads").strip().lower() or "threads"
    if choice == "threads":
        return cast(Runner, ThreadPoolTaskRunner())
    if choice == "processes":
        processes = _count("NURTURE_PROCESSES", str(os.cpu_count() or 2))
        return cast(Runner, ProcessPoolTaskRunner(max_workers=processes))
    if choice == "dask":
        workers = _count("NURTURE_DASK_WORKERS", "2")
        return dask_runner(os.environ.get("NURTURE_DASK_ADDRESS") or None, workers)
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


def _count(variable: str, default: str) -> int:
    raw = os.environ.get(variable, default)
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{variable}={raw!r}: expected a whole number of at least 1")
    return count
