"""Load and validate the config directory; every error names its file, line and what is expected.

Nothing runs on an invalid config: :func:`load_config` raises :class:`ConfigError` carrying
every problem found, not only the first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from tasks.config.models import (
    FILES,
    Cadences,
    FollowUps,
    Grading,
    Ingest,
    Owners,
    Pipeline,
    Rules,
    Sending,
    Strict,
)
from tasks.email.templates import Template, TemplateError, load_templates

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config"


def config_dir() -> Path:
    """``NURTURE_CONFIG_DIR``, else ``./config`` when it has our files, else the shipped one."""
    if env := os.environ.get("NURTURE_CONFIG_DIR"):
        return Path(env)
    local = Path.cwd() / "config"
    if (local / "rules.yaml").is_file():
        return local
    return REPO_CONFIG


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class NurtureConfig:
    directory: Path
    pipeline: Pipeline
    followups: FollowUps
    rules: Rules
    cadences: Cadences
    sending: Sending
    owners: Owners
    templates: dict[str, Template] = field(default_factory=dict)
    ingest: Ingest = field(default_factory=Ingest)
    grading: Grading = field(default_factory=Grading)


def load_config(directory: Path | str | None = None) -> NurtureConfig:
    directory = Path(directory) if directory else config_dir()
    if not directory.is_dir():
        raise ConfigError([Problem(str(directory), None, "config directory not found")])
    problems: list[Problem] = []
    models: dict[str, Strict] = {}
    lines: dict[str, Any] = {}
    for name, model in FILES.items():
        path = directory / name
        shown = _shown(path)
        if not path.is_file():
            problems.append(Problem(shown, None, "file is missing"))
            continue
        data, err = _read_yaml(path)
        if err:
            problems.append(err)
            continue
        lines[name] = data
        try:
            models[name] = model.model_validate(_plain(data))
        except ValidationError as exc:
            problems.extend(_problems(shown, data, exc))
    templates: dict[str, Template] = {}
    try:
        templates = load_templates(directory / "templates")
    except TemplateError as exc:
        problems.extend(Problem(_shown(Path(f)), line, msg) for f, line, msg in exc.problems)
    if not problems:
        problems.extend(_cross_checks(directory, models, lines, templates))
    if problems:
        raise ConfigError(problems)
    return NurtureConfig(
        directory=directory,
        pipeline=models["pipeline.yaml"],  # type: ignore[arg-type]
        followups=models["followups.yaml"],  # type: ignore[arg-type]
        rules=models["rules.yaml"],  # type: ignore[arg-type]
        cadences=models["cadences.yaml"],  # type: ignore[arg-type]
        sending=models["sending.yaml"],  # type: ignore[arg-type]
        owners=models["owners.yaml"],  # type: ignore[arg-type]
        templates=templates,
        ingest=models["ingest.yaml"],  # type: ignore[arg-type]
        grading=models["grading.yaml"],  # type: ignore[arg-type]
    )


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> tuple[Any, Problem | None]:
    yaml = YAML(typ="rt")
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.load(handle), None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        return None, Problem(_shown(path), line, f"not valid YAML: {exc.problem or exc.context}")
    except UnicodeDecodeError as exc:
        return None, Problem(_shown(path), None, f"not UTF-8 text: {exc.reason}")


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists (pydantic wants plain types)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest node of ``loc`` that exists in the YAML tree."""
    line: int | None = None
    node = data
    for key in loc:
        if isinstance(node, CommentedMap) and key in node:
            line = node.lc.key(key)[0] + 1
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and key < len(node):
            line = node.lc.item(key)[0] + 1
            node = node[key]
        else:
            break
    if line is None and hasattr(data, "lc"):
        line = data.lc.line + 1
    return line


def _problems(shown: str, data: Any, exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        # pydantic appends validator names (e.g. 'function-before[...]') to loc; keep real keys.
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or "[" not in str(p))
        where = _dotted(loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'"
            where = _dotted(loc[:-1])
        elif err["type"] == "missing":
            message = "is required but missing"
        out.append(Problem(shown, line_of(data, loc), f"{where}: {message}" if where else message))
    return out


def _dotted(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _cross_checks(
    directory: Path,
    models: dict[str, Strict],
    data: dict[str, Any],
    templates: dict[str, Template],
) -> list[Problem]:
    """References: templates, cadences and stages that must exist; regions the reps name."""
    problems: list[Problem] = []
    pipeline: Pipeline = models["pipeline.yaml"]  # type: ignore[assignment]
    followups: FollowUps = models["followups.yaml"]  # type: ignore[assignment]
    rules: Rules = models["rules.yaml"]  # type: ignore[assignment]
    cadences: Cadences = models["cadences.yaml"]  # type: ignore[assignment]

    def need_template(name: str, file: str, loc: tuple[int | str, ...]) -> None:
        if name not in templates:
            known = ", ".join(sorted(templates)) or "none"
            problems.append(
                Problem(
                    _shown(directory / file),
                    line_of(data[file], loc),
                    f"{_dotted(loc)}: no template '{name}' in templates/ (known: {known})",
                )
            )

    need_template(
        pipeline.dead_deals.exit_email.template,
        "pipeline.yaml",
        ("dead_deals", "exit_email", "template"),
    )
    need_template(followups.reopen.template, "followups.yaml", ("reopen", "template"))
    if followups.reopen.cadence not in cadences.cadences:
        problems.append(
            Problem(
                _shown(directory / "followups.yaml"),
                line_of(data["followups.yaml"], ("reopen", "cadence")),
                f"reopen.cadence: no cadence '{followups.reopen.cadence}' in cadences.yaml "
                f"(known: {', '.join(sorted(cadences.cadences))})",
            )
        )
    for i, rule in enumerate(rules.rules):
        for j, action in enumerate(rule.then):
            if action.send:
                need_template(action.send, "rules.yaml", ("rules", i, "then", j, "send"))
    stage_names = [s.name for s in pipeline.stages]
    for name, cadence in cadences.cadences.items():
        for k, step in enumerate(cadence.steps):
            need_template(
                step.template, "cadences.yaml", ("cadences", name, "steps", k, "template")
            )
        if cadence.exit_on_stage is not None and cadence.exit_on_stage not in stage_names:
            stage_loc: tuple[int | str, ...] = ("cadences", name, "exit_on_stage")
            problems.append(
                Problem(
                    _shown(directory / "cadences.yaml"),
                    line_of(data["cadences.yaml"], stage_loc),
                    f"{_dotted(stage_loc)}: no stage '{cadence.exit_on_stage}' in pipeline.yaml "
                    f"(there are: {', '.join(stage_names)})",
                )
            )
    owners: Owners = models["owners.yaml"]  # type: ignore[assignment]
    for loc, message in owners.region_problems():
        problems.append(
            Problem(
                _shown(directory / "owners.yaml"),
                line_of(data["owners.yaml"], loc),
                f"{_dotted(loc)}: {message}",
            )
        )
    return problems
