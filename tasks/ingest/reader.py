"""Stream records from CSV or JSONL exports: encoding detected, delimiter sniffed, headers mapped.

Structural problems (a ragged row, a line that is not a JSON object, no usable column, bytes in
no known encoding) raise :class:`IngestFileError` naming the file and line: the caller writes
nothing. Problems with a value (a bad email) are not structural: the row is kept and judged.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["lead", "opportunity", "activity"]


class IngestFileError(Exception):
    def __init__(self, file: str | Path, line: int | None, message: str):
        self.file, self.line, self.message = str(file), line, message
        where = f"{self.file}, line {line}" if line else self.file
        super().__init__(f"{where}: {message}")


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.casefold())


_ALIASES: dict[Kind, dict[str, tuple[str, ...]]] = {
    "lead": {
        "email": ("Email", "Email Address", "E-mail", "Work Email", "Business Email"),
        "first_name": ("First Name", "Firstname", "Given Name"),
        "last_name": ("Last Name", "Lastname", "Surname", "Family Name"),
        "full_name": ("Full Name", "Name", "Contact Name", "Person Name"),
        "phone": ("Phone", "Phone Number", "Mobile Phone", "Mobile", "Telephone", "Work Phone"),
        "company": ("Company", "Company Name", "Organization", "Organisation", "Account Name"),
        "title": ("Title", "Job Title"),
        "country": ("Country", "Country/Region", "Country Code"),
        "source": ("Lead Source", "Original Source", "Source"),
        "created": ("Create Date", "Created", "Created At", "Created Date", "Created Time"),
        "budget": ("Budget",),
        "authority": ("Authority",),
        "need": ("Need",),
        "timing": ("Timing",),
        "tags": ("Tags", "Labels"),
    },
    "opportunity": {
        "external_id": ("Deal ID", "Opportunity ID", "Record ID", "id"),
        "email": ("Email", "Contact Email", "Lead Email"),
        "lead_id": ("Lead ID",),
        "name": ("Deal Name", "Opportunity Name", "Name"),
        "stage": ("Stage", "Deal Stage"),
        "stage_entered_at": ("Stage Entered", "Stage Date", "Stage Entered At"),
        "created": ("Create Date", "Created", "Created At"),
        "amount": ("Amount", "Value"),
        "status": ("Status",),
        "lost_reason": ("Lost Reason", "Closed Lost Reason"),
        "competitor": ("Competitor",),
        "lost_notes": ("Lost Notes", "Notes"),
        "closed_at": ("Close Date", "Closed At"),
    },
    "activity": {
        "external_id": ("Activity ID", "id"),
        "email": ("Email", "Contact Email", "Lead Email"),
        "lead_id": ("Lead ID",),
        "deal_id": ("Deal ID", "Opportunity ID"),
        "kind": ("Type", "Activity Type", "Kind"),
        "occurred_at": ("Date", "Occurred At", "Timestamp"),
        "followup_on": ("Follow Up On", "Follow-up Date", "Followup On"),
        "reason": ("Reason",),
        "competitor": ("Competitor",),
        "notes": ("Notes",),
    },
}
ALIASES: dict[Kind, dict[str, str]] = {
    kind: {_key(alias): field for field, aliases in fields.items() for alias in (field, *aliases)}
    for kind, fields in _ALIASES.items()
}
REQUIRED: dict[Kind, tuple[tuple[str, ...], ...]] = {
    "lead": (("email", "phone"),),
    "opportunity": (("email", "lead_id"), ("stage",)),
    "activity": (("email", "lead_id"), ("kind",), ("occurred_at",)),
}


@dataclass(frozen=True)
class Record:
    row_number: int  # 1-based data row
    line_number: int  # physical line where the row starts
    fields: dict[str, str]
    raw: dict[str, Any]


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, else Windows-1252."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        head = handle.read(3)
        if head == codecs.BOM_UTF8:
            return "utf-8-sig"
        try:
            decoder.decode(head)
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8"


def _check_columns(path: Path, kind: Kind, mapped: set[str]) -> None:
    for group in REQUIRED[kind]:
        if not mapped & set(group):
            expected = ", ".join(a for f in group for a in _ALIASES[kind][f][:3])
            raise IngestFileError(
                path, 1, f"no {' or '.join(group)} column (expected one of: {expected})"
            )


def read_records(path: Path, kind: Kind, encoding: str | None = None) -> Iterator[Record]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, kind, encoding or "utf-8-sig")
    else:
        yield from _read_csv(path, kind, encoding or detect_encoding(path))


def _read_csv(path: Path, kind: Kind, encoding: str) -> Iterator[Record]:
    aliases = ALIASES[kind]
    try:
        with path.open(encoding=encoding, newline="") as handle:
            sample = handle.read(16384)
            handle.seek(0)
            try:
                dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            reader = csv.reader(handle, dialect)
            header = next(reader, None)
            if not header:
                raise IngestFileError(path, 1, "empty file: expected a header row")
            fields = [aliases.get(_key(h)) for h in header]
            _check_columns(path, kind, {f for f in fields if f})
            row_number, line = 0, reader.line_num
            for values in reader:
                start, line = line + 1, reader.line_num
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise IngestFileError(
                        path, start, f"{len(values)} fields where the header has {len(header)}"
                    )
                row_number += 1
                mapped = {
                    f: v.strip() for f, v in zip(fields, values, strict=True) if f and v.strip()
                }
                yield Record(row_number, start, mapped, dict(zip(header, values, strict=True)))
    except UnicodeDecodeError as exc:
        raise IngestFileError(
            path, None, f"not {encoding} text ({exc.reason}); try --encoding"
        ) from None
    except csv.Error as exc:
        raise IngestFileError(path, None, f"not valid CSV: {exc}") from None


def _read_jsonl(path: Path, kind: Kind, encoding: str) -> Iterator[Record]:
    aliases = ALIASES[kind]
    seen_columns: set[str] = set()
    row_number = 0
    with path.open(encoding=encoding) as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IngestFileError(path, line_number, f"not valid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise IngestFileError(path, line_number, "expected a JSON object per line")
            mapped = {}
            for name, value in obj.items():
                field = aliases.get(_key(str(name)))
                if field and value not in (None, ""):
                    mapped[field] = (
                        ";".join(map(str, value)) if isinstance(value, list) else str(value).strip()
                    )
            seen_columns |= {aliases[_key(str(n))] for n in obj if _key(str(n)) in aliases}
            if row_number == 0:
                _check_columns(path, kind, seen_columns)
            row_number += 1
            yield Record(row_number, line_number, mapped, obj)
