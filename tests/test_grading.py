"""Grades and scores from grading.yaml, on both stores: each rule, order, score parts, decay."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tasks.config.loader import NurtureConfig
from tasks.config.models import Grading, Rule, Rules
from tasks.grading import (
    GRADING,
    SourceConversion,
    grade_and_score,
    source_conversion,
    suggested_source_weights,
)
from tasks.store.models import (
    ActivityKind,
    Decision,
    DecisionAction,
    Lead,
    LeadStatus,
    OpportunityStatus,
    RuleEpisode,
)
from tests.builders import activity, days, deal, lead, sent_email
from tests.conftest import AS_OF, config_problems

SEEDS: dict[str, Any] = {
    "grades": [
        {
            "grade": "A",
            "when": 'authority == "yes" and need == "yes" and budget == "yes" and timing == "yes"',
        },
        {"grade": "D", "when": 'need == "no" or budget == "no"'},
        {"grade": "B", "when": 'need == "yes" and budget == "yes"'},
    ],
    "default": "C",
}


def with_grading(config: NurtureConfig, **grading: Any) -> NurtureConfig:
    return dataclasses.replace(config, grading=Grading.model_validate(grading))


def score_only(config: NurtureConfig, **score: Any) -> NurtureConfig:
    return with_grading(config, score=score)


def graded(session: Session, lead_id: int) -> tuple[str | None, int]:
    row = session.execute(select(Lead.grade, Lead.score).where(Lead.id == lead_id)).one()
    return row.grade, row.score


def grade_decisions(session: Session) -> list[Decision]:
    return list(
        session.scalars(
            select(Decision)
            .where(Decision.action == DecisionAction.SET_GRADE, Decision.rule == GRADING)
            .order_by(Decision.id)
        )
    )


# --- grades ----------------------------------------------------------------------------------


def test_each_grade_rule_and_the_default(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = with_grading(config, **SEEDS)
    t = AS_OF - days(1)
    a = lead(session, t, authority="yes", need="yes", budget="yes", timing="yes")
    d_need = lead(session, t, need="no", budget="yes")
    d_budget = lead(session, t, budget="no", need="yes")
    b = lead(session, t, need="yes", budget="yes", timing="no")
    c = lead(session, t, need="unknown")
    counts = grade_and_score(session, cfg, AS_OF, run_id=run_id)
    got = {x.id: graded(session, x.id)[0] for x in (a, d_need, d_budget, b, c)}
    assert got == {a.id: "A", d_need.id: "D", d_budget.id: "D", b.id: "B", c.id: "C"}
    assert counts["grades_changed"] == 5
    assert (counts["to_A"], counts["to_B"], counts["to_C"], counts["to_D"]) == (1, 1, 1, 2)


def test_a_grade_decision_shows_the_facts_as_people_read_them(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    # Plain facts go into the decision by SQL, a days fact by Python: the same shape either way.
    x = lead(session, AS_OF - days(3))
    x.tags = ["vip"]
    by_days = with_grading(
        config, grades=[{"grade": "A", "when": "'vip' in tags and days_since_last_touch <= 10"}]
    )
    grade_and_score(session, by_days, AS_OF, run_id=run_id)
    plain = with_grading(config, grades=[{"grade": "B", "when": "'vip' in tags and score >= 0"}])
    grade_and_score(session, plain, AS_OF + days(1), run_id=run_id)
    first, second = grade_decisions(session)
    assert first.facts == {
        "from": None, "to": "A", "by": "grades[0]", "days_since_last_touch": 3, "tags": ["vip"]
    }  # fmt: skip
    score = graded(session, x.id)[1]
    assert second.facts == {"from": "A", "to": "B", "by": "grades[0]", "score": score,
                            "tags": ["vip"]}  # fmt: skip
    assert list(second.facts) == ["from", "to", "by", "score", "tags"]
    assert second.dedupe_key == f"grade:{x.id}:{(AS_OF + days(1)).isoformat()}"
    assert (second.reason, second.lead_id, second.run_id) == ("B", x.id, run_id)
    assert second.action is DecisionAction.SET_GRADE and second.as_of == AS_OF + days(1)


def test_the_first_condition_that_holds_wins(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    both = lead(session, AS_OF - days(1), need="yes", budget="no")
    grades = [{"grade": "B", "when": 'need == "yes"'}, {"grade": "D", "when": 'budget == "no"'}]
    grade_and_score(session, with_grading(config, grades=grades), AS_OF, run_id=run_id)
    assert graded(session, both.id)[0] == "B"
    first_d = with_grading(config, grades=grades[::-1])
    grade_and_score(session, first_d, AS_OF + days(1), run_id=run_id)
    assert graded(session, both.id)[0] == "D"


def test_a_grade_condition_reads_the_score_just_computed(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    hot = lead(session, AS_OF - days(1))
    hot.source = "referral"
    cold = lead(session, AS_OF - days(1))
    cfg = with_grading(
        config,
        grades=[{"grade": "B", "when": "score >= 30"}],
        default="C",
        score={"source": {"referral": 30}},
    )
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, hot.id) == ("B", 30)
    assert graded(session, cold.id) == ("C", 0)


def test_a_grade_change_is_recorded_once_and_a_rerun_records_nothing(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = with_grading(config, **SEEDS)
    x = lead(session, AS_OF - days(1), need="yes", budget="yes")
    first = grade_and_score(session, cfg, AS_OF, run_id=run_id)
    again = grade_and_score(session, cfg, AS_OF, run_id=run_id)
    later = grade_and_score(session, cfg, AS_OF + days(1), run_id=run_id)
    assert first["grades_changed"] == 1
    assert again["grades_changed"] == later["grades_changed"] == 0
    [decision] = grade_decisions(session)
    assert decision.dedupe_key == f"grade:{x.id}:{AS_OF.isoformat()}"
    assert decision.reason == "B" and decision.lead_id == x.id and decision.run_id == run_id
    assert decision.facts["from"] is None and decision.facts["to"] == "B"
    assert decision.facts["by"] == "grades[2]"
    assert decision.facts["need"] == "yes" and decision.facts["budget"] == "yes"

    # The prospect says no: one more decision, from B to D.
    session.execute(Lead.__table__.update().where(Lead.id == x.id).values(need="no"))
    moved = grade_and_score(session, cfg, AS_OF + days(2), run_id=run_id)
    assert moved["grades_changed"] == 1
    last = grade_decisions(session)[-1]
    assert (last.facts["from"], last.facts["to"], last.facts["by"]) == ("B", "D", "grades[1]")
    assert len(grade_decisions(session)) == 2


def test_score_changes_are_not_decisions(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = with_grading(config, **SEEDS, score={"engagement": {"touch": 50, "half_life": "1 day"}})
    x = lead(session, AS_OF)
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, x.id) == ("C", 50)
    counts = grade_and_score(session, cfg, AS_OF + days(1), run_id=run_id)
    assert counts["scores_changed"] == 1 and graded(session, x.id) == ("C", 25)
    assert len(grade_decisions(session)) == 1


def test_only_the_named_leads_and_only_leads_in_play(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = with_grading(config, **SEEDS)
    named = lead(session, AS_OF - days(1), need="no")
    other = lead(session, AS_OF - days(1), need="no")
    won = lead(session, AS_OF - days(1), need="no", status=LeadStatus.CUSTOMER)
    future = lead(session, AS_OF + days(1), need="no")
    grade_and_score(session, cfg, AS_OF, run_id=run_id, lead_ids=[named.id, won.id])
    assert graded(session, named.id)[0] == "D"
    assert graded(session, other.id)[0] is None
    assert graded(session, won.id)[0] is None
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, other.id)[0] == "D"
    assert graded(session, future.id)[0] is None  # not yet a lead as of then
    assert grade_and_score(session, cfg, AS_OF, run_id=run_id, lead_ids=[]) == {
        "scores_changed": 0,
        "grades_changed": 0,
    }


def test_a_grade_a_rule_set_holds_while_its_episode_is_open(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    rule = Rule.model_validate(
        {"name": "vip", "when": "'vip' in tags", "then": [{"set_grade": "A"}]}
    )
    cfg = dataclasses.replace(with_grading(config, **SEEDS), rules=Rules(rules=[rule]))
    x = lead(session, AS_OF - days(1), need="no", grade="A")
    episode = RuleEpisode(rule="vip", lead_id=x.id, started_at=AS_OF - days(1))
    session.add(episode)
    session.flush()
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, x.id)[0] == "A"
    episode.ended_at = AS_OF
    session.flush()
    grade_and_score(session, cfg, AS_OF + days(1), run_id=run_id)
    assert graded(session, x.id)[0] == "D"


# --- score -----------------------------------------------------------------------------------


def test_source_points_with_a_default(session: Session, config: NurtureConfig, run_id: int) -> None:
    known = lead(session, AS_OF - days(1))
    known.source = "trade_show"
    unknown = lead(session, AS_OF - days(1))
    unknown.source = "carrier_pigeon"
    cfg = score_only(config, source={"trade_show": 14}, other_sources=3)
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, known.id)[1] == 14
    assert graded(session, unknown.id)[1] == 3


def test_completeness_counts_fields_present(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    full = lead(session, AS_OF - days(1), phone="+14155550100", company="Acme", employees=40)
    bare = lead(session, AS_OF - days(1), company="")
    cfg = score_only(config, completeness={"email": 5, "phone": 4, "company": 3, "employees": 2})
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, full.id)[1] == 14
    assert graded(session, bare.id)[1] == 5  # an empty company is no company


def test_fit_to_the_ideal_customer_profile(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = score_only(
        config,
        fit={
            "countries": {"points": 8, "values": ["US", "DE"]},
            "industries": {"points": 7, "values": ["Software"]},
            "sizes": [{"min": 50, "max": 999, "points": 10}, {"min": 1000, "points": 6}],
            "titles": {"points": 5, "keywords": ["vp", "cto", "vice president"]},
        },
    )
    t = AS_OF - days(1)
    ideal = lead(session, t, country="US", industry="software", employees=50, title="VP, Sales")
    big = lead(session, t, country="DE", employees=5000, title="Vice President Sales")
    off = lead(session, t, country="FR", industry="Retail", employees=20, title="Director")
    empty = lead(session, t)
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, ideal.id)[1] == 8 + 7 + 10 + 5
    assert graded(session, big.id)[1] == 8 + 6 + 5
    assert graded(session, off.id)[1] == 0  # "cto" is not a word of "Director"
    assert graded(session, empty.id)[1] == 0


def test_engagement_halves_every_half_life(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = score_only(config, engagement={"half_life": "10 days", "reply": 40})
    fresh = lead(session, AS_OF - days(30))
    activity(session, fresh.id, ActivityKind.REPLY, AS_OF)
    old = lead(session, AS_OF - days(30))
    activity(session, old.id, ActivityKind.REPLY, AS_OF - days(20))
    auto = lead(session, AS_OF - days(30))
    activity(session, auto.id, ActivityKind.AUTO_REPLY, AS_OF)  # not a reply
    later = lead(session, AS_OF - days(30))
    activity(session, later.id, ActivityKind.REPLY, AS_OF + days(1))  # not yet, as of then
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, fresh.id)[1] == 40
    assert graded(session, old.id)[1] == 10  # two half-lives: a quarter
    assert graded(session, auto.id)[1] == 0
    assert graded(session, later.id)[1] == 0


def test_unanswered_emails_cost_points_and_the_score_is_clamped(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    cfg = score_only(
        config,
        source={"webinar": 90, "referral": 10},
        completeness={"email": 30},
        engagement={"unanswered_email": -4},
    )
    top = lead(session, AS_OF - days(30))
    ignored = lead(session, AS_OF - days(30))
    ignored.source = "referral"
    for i in range(3):
        sent_email(session, ignored.id, AS_OF - days(10 - i))
    sunk = lead(session, AS_OF - days(30))
    sunk.source = "referral"
    for i in range(12):
        sent_email(session, sunk.id, AS_OF - days(20 - i))
    grade_and_score(session, cfg, AS_OF, run_id=run_id)
    assert graded(session, top.id)[1] == 100  # 120, clamped
    assert graded(session, ignored.id)[1] == 10 + 30 - 12
    assert graded(session, sunk.id)[1] == 0  # 40 - 48, clamped


def test_the_shipped_config_scores_and_grades(
    session: Session, config: NurtureConfig, run_id: int
) -> None:
    x = lead(session, AS_OF - days(1), authority="yes", need="yes", budget="yes", timing="yes")
    x.source = "referral"
    counts = grade_and_score(session, config, AS_OF, run_id=run_id)
    grade, score = graded(session, x.id)
    assert grade == "A" and 20 < score <= 100
    assert counts["to_A"] == 1


# --- conversion by source ----------------------------------------------------------------------


def test_conversion_by_source_and_suggested_weights(session: Session) -> None:
    for i in range(4):
        x = lead(session, AS_OF - days(30))
        x.source = "referral"
        if i == 0:
            deal(session, x.id, "discovery", AS_OF - days(20), status=OpportunityStatus.WON,
                 closed_at=AS_OF - days(5))  # fmt: skip
        if i == 1:
            x.status = LeadStatus.CUSTOMER
    for _ in range(6):
        x = lead(session, AS_OF - days(30))
        x.source = "purchased_list"
    late = lead(session, AS_OF + days(1))
    late.source = "referral"
    session.flush()
    rows = source_conversion(session, AS_OF)
    assert rows == [SourceConversion("purchased_list", 6, 0), SourceConversion("referral", 4, 2)]
    assert rows[1].rate == 0.5
    weights = suggested_source_weights(rows, top_points=20, prior_leads=10)
    # overall 2/10: referral (2 + 2) / 14, purchased_list (0 + 2) / 16
    assert weights == {"referral": 20, "purchased_list": round(20 * (2 / 16) / (4 / 14))}
    assert suggested_source_weights([]) == {}
    assert session.scalar(select(func.count()).select_from(Lead)) == 11
    # The report shows them beside conversion (all leads, whatever their date).
    from tasks.reports.summary import pipeline_summary

    shown = {
        r["source"]: r["suggested_points"]
        for r in pipeline_summary(session)["conversion_by_source"]
    }
    assert shown == suggested_source_weights(source_conversion(session, None))
    assert shown["referral"] == 20 and 0 < shown["purchased_list"] < 20


# --- config ----------------------------------------------------------------------------------


def test_a_bad_grade_condition_names_file_and_line(cfg_dir: Path) -> None:
    path = cfg_dir / "grading.yaml"
    text = path.read_text().replace('need == "no" or budget', 'nede == "no" or budget')
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "nede ==" in row)
    found = config_problems(cfg_dir)
    expected = f"grading.yaml, line {line}: grades[1].when: unknown fact 'nede'; did you mean"
    assert any(expected in p for p in found), found


def test_grading_errors_name_the_line_of_the_bad_value(cfg_dir: Path) -> None:
    path = cfg_dir / "grading.yaml"
    text = (
        path.read_text()
        .replace("half_life: 30 days", "half_life: 0 days")
        .replace("default: C", "default: E")
        .replace("{min: 1000, points: 6}", "{min: 1000, max: 10, points: 6}")
    )
    path.write_text(text)

    def line(needle: str) -> int:
        return next(n for n, row in enumerate(text.splitlines(), 1) if needle in row)

    found = config_problems(cfg_dir)
    assert any(f"grading.yaml, line {line('half_life')}: score.engagement.half_life: "
               "half_life must be longer than 0 days" in p for p in found), found  # fmt: skip
    assert any(f"grading.yaml, line {line('default: E')}: default:" in p for p in found), found
    assert any(f"grading.yaml, line {line('min: 1000')}: score.fit.sizes[1]: max (10) is below"
               in p for p in found), found  # fmt: skip


def test_a_missing_grading_file_is_an_error_and_code_may_omit_it(
    cfg_dir: Path, config: NurtureConfig
) -> None:
    (cfg_dir / "grading.yaml").unlink()
    assert any(p.endswith("grading.yaml: file is missing") for p in config_problems(cfg_dir))
    older = NurtureConfig(
        directory=cfg_dir,
        pipeline=config.pipeline,
        followups=config.followups,
        rules=config.rules,
        cadences=config.cadences,
        sending=config.sending,
        owners=config.owners,
    )
    assert older.grading == Grading() and older.grading.default == "C"
