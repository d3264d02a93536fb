from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config.loader import load_config
from tests.conftest import config_problems

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_is_valid_and_says_what_the_seeds_say() -> None:
    config = load_config(REPO / "config")
    first = config.rules.rules[0]
    assert first.name == "five_unanswered_emails"
    assert [a.kind for a in first.then] == ["disqualify", "send", "follow_up"]
    assert config.followups.default_delay.days == 60
    assert config.followups.delay_for(None).days == 60
    assert {s.name for s in config.pipeline.stages} >= {"discovery", "negotiation"}
    assert "breakup" in config.templates


def test_errors_name_file_line_and_expectation(cfg_dir: Path) -> None:
    rules = cfg_dir / "rules.yaml"
    text = rules.read_text().replace("unanswered_emails >= 5", "unanswerd_emails >= 5")
    rules.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "unanswerd_emails" in row)
    pipeline = cfg_dir / "pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace("rot_after: 21 days", "rot_after: tomorrow"))
    found = config_problems(cfg_dir)
    assert any(
        p.endswith(
            f"rules.yaml, line {line}: rules[0].when: unknown fact 'unanswerd_emails'; "
            "did you mean 'unanswered_emails'? (known facts: authority, budget, country, "
            "days_since_last_reply, days_since_last_touch, emails_sent, grade, "
            "missed_meetings, need, owner_idle_days, score, source, status, tags, timing, "
            "unanswered_emails)"
        )
        for p in found
    ), found
    assert any(
        "pipeline.yaml, line 5: stages[0].rot_after: expected a duration" in p for p in found
    )


def test_unknown_keys_and_bad_yaml(cfg_dir: Path) -> None:
    sending = (cfg_dir / "sending.yaml").read_text()
    (cfg_dir / "sending.yaml").write_text(sending + "colour: red\n")
    (cfg_dir / "owners.yaml").write_text("owners: [\n")
    found = config_problems(cfg_dir)
    line = len(sending.splitlines()) + 1
    assert any(f"sending.yaml, line {line}: unknown key 'colour'" in p for p in found), found
    assert any("owners.yaml" in p and "not valid YAML" in p for p in found), found


def test_references_between_files_are_checked(cfg_dir: Path) -> None:
    (cfg_dir / "templates" / "breakup.txt").unlink()
    found = config_problems(cfg_dir)
    assert any(
        "rules.yaml, line 10: rules[0].then[1].send: no template 'breakup'" in p for p in found
    ), found


def test_template_syntax_errors_have_lines(cfg_dir: Path) -> None:
    (cfg_dir / "templates" / "welcome.txt").write_text(
        "subject: Hi\n---\nHello\n{{ lead.first_name \n"
    )
    found = config_problems(cfg_dir)
    assert any("welcome.txt, line 4" in p for p in found), found


def test_cli_validate_exits_non_zero_and_prints_each_problem(cfg_dir: Path) -> None:
    (cfg_dir / "followups.yaml").write_text(
        (cfg_dir / "followups.yaml")
        .read_text()
        .replace("default_delay: 60 days", "default_delay: 60")
    )
    result = CliRunner().invoke(app, ["config", "validate", str(cfg_dir)])
    assert result.exit_code == 1
    assert "followups.yaml, line 3: default_delay: expected a duration" in result.output
    ok = CliRunner().invoke(app, ["config", "validate", str(REPO / "config")])
    assert ok.exit_code == 0, ok.output
    assert "ok (5 rules" in ok.output


def test_a_follow_up_on_an_unknown_date_fact_names_file_and_line(cfg_dir: Path) -> None:
    rules = cfg_dir / "rules.yaml"
    text = rules.read_text().replace(
        "follow_up: named_followup_date or 4 months", "follow_up: named_folowup_date or 4 months"
    )
    rules.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "named_folowup_date" in row)
    found = config_problems(cfg_dir)
    assert any(
        f"rules.yaml, line {line}: rules[1].then[1].follow_up: " in p
        and "unknown date fact 'named_folowup_date'" in p
        for p in found
    ), found


def test_json_schemas_are_current_and_describe_the_shipped_config() -> None:
    """The committed schemas are what the models generate (`nurture config schema`), every
    config file names its schema, and the shipped config passes its schema."""
    import json

    import jsonschema
    from ruamel.yaml import YAML

    from tasks.config.models import FILES
    from tasks.config.schemas import modeline, schemas

    directory = REPO / "config"
    for name, text in schemas().items():
        assert (directory / "schemas" / name).read_text() == text, (
            f"{name}: run `nurture config schema`"
        )
    for file in FILES:
        source = (directory / file).read_text()
        assert source.splitlines()[0] == modeline(file)
        schema = json.loads(
            (directory / "schemas" / file.replace(".yaml", ".schema.json")).read_text()
        )
        jsonschema.validate(_as_editors_see_it(YAML(typ="safe").load(source)), schema)
    # And the schema does catch a mistake an editor should flag.
    cadences = json.loads((directory / "schemas" / "cadences.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"cadences": {"x": {"steps": [{"wait": "soon", "template": "t"}]}}}, cadences
        )


def _as_editors_see_it(value: object) -> object:
    """YAML dates as the strings an editor's schema check sees (the loader makes them dates)."""
    import datetime as dt

    if isinstance(value, dict):
        return {k: _as_editors_see_it(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_editors_see_it(v) for v in value]
    return value.isoformat() if isinstance(value, dt.date) else value
