"""The in-memory block keys of an import: found while it runs, drained in key order."""

from __future__ import annotations

import random

from tasks.ingest.keylog import KeyLog


def test_holders_are_found_across_runs_and_drained_in_order() -> None:
    rng = random.Random(7)
    log = KeyLog()
    expected: dict[int, set[int]] = {}
    lead = 0
    for _ in range(40):  # batches of different sizes: runs merge, and some stay apart
        pairs = []
        for _ in range(rng.randrange(1, 300)):
            lead += 1
            for key in rng.sample(range(-500, 500), 3):
                pairs.append((key, lead))
                expected.setdefault(key, set()).add(lead)
        log.add([k for k, _ in pairs], [lead for _, lead in pairs])
    assert len(log) == sum(len(leads) for leads in expected.values())
    wanted = [*range(-600, 600, 7), 10**18]
    found, crowded = log.holders(wanted)
    assert {k: set(v) for k, v in found.items()} == {
        k: expected[k] for k in wanted if k in expected
    }
    assert all(len(v) == len(set(v)) for v in found.values()) and not crowded
    # Keys with 25 holders or more (their pairs spread over several runs) are only named.
    full = {k for k in wanted if len(expected.get(k, ())) >= 25}
    assert 0 < len(full) < len(found) and len(log._runs) > 1
    listed, crowded = log.holders(wanted, full=25)
    assert crowded == full
    assert {k: set(v) for k, v in listed.items()} == {
        k: expected[k] for k in wanted if k in expected and k not in full
    }
    drained = [
        pair
        for keys, leads in log.drain(size=1000)
        for pair in zip(keys.tolist(), leads.tolist(), strict=True)
    ]
    assert drained == sorted((k, lead) for k, leads in expected.items() for lead in leads)
    assert len(log) == 0 and log.holders(wanted) == ({}, set())


def test_an_empty_log_finds_nothing_and_drains_nothing() -> None:
    log = KeyLog()
    log.add([], [])
    assert log.holders([1, 2]) == ({}, set()) and list(log.drain(10)) == []
