"""prefect.yaml as data: every entrypoint imports, names and parameters match, schedules parse."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


def _flow(entrypoint: str) -> Flow:
    module, name = entrypoint.split(":")
    loaded = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    assert isinstance(loaded, Flow), f"{entrypoint} is not a Prefect flow"
    return loaded


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_each_deployment_points_at_a_flow_with_its_parameters(deployment: dict) -> None:
    flow = _flow(deployment["entrypoint"])
    assert flow.name == deployment["name"]  # `prefect deployment run 'NAME/NAME'` in the README
    accepted = inspect.signature(flow.fn).parameters
    for parameter in deployment.get("parameters", {}):
        assert parameter in accepted, f"{deployment['name']}: unknown parameter {parameter}"
    for schedule in deployment.get("schedules", []):
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises if invalid
    assert deployment["work_pool"]["name"] == "nurture-process"


def test_scheduled_runs_never_overlap() -> None:
    for deployment in DEPLOYMENTS:
        if deployment.get("schedules"):
            assert deployment["concurrency_limit"] == {
                "limit": 1,
                "collision_strategy": "CANCEL_NEW",
            }


def test_names_are_unique() -> None:
    names = [d["name"] for d in DEPLOYMENTS]
    assert len(names) == len(set(names))
