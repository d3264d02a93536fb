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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

Kind = Literal["lead", "opportunity", "activity"]

SNIFF_BYTES = 8192
DELIMITERS = ",;\t|"
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class IngestFileError(Exception):
    """A file the importer cannot read as a table: says which file, which line and why."""

    def __init__(self, file: str | Path, line: int | None, message: str):
        self.file, self.line, self.message = str(file), line, message
        where = f"{self.file}, line {line}" if line else self.file
        super().__init__(f"{where}: {message}")


class Record(NamedTuple):
    """One data row: ``(row_number, line_number, fields, raw)``.

    ``row_number`` counts data rows from 1 (blank lines skipped); ``line_number`` is the physical
    line where the row starts (a quoted field may span lines). ``fields`` holds the canonical
    fields that have a value; ``raw`` keeps every column as given, unknown ones included.
    """

    row_number: int
    line_number: int
    fields: dict[str, str]
    raw: dict[str, Any]


def header_key(header: str) -> str:
    """Case, space and punctuation do not matter: "E-mail", "email" and "E Mail" are one."""
    return re.sub(r"[^a-z0-9]", "", header.casefold())


# Canonical field -> the headers exporters use for it (HubSpot, Salesforce, Pipedrive, forms).
_ALIASES: dict[Kind, dict[str, tuple[str, ...]]] = {
    "lead": {
        "email": ("Email", "Email Address", "E-mail", "Work Email", "Business Email",
                  "Primary Email", "Contact Email", "Email - Work", "Email - Other"),
        "first_name": ("First Name", "Firstname", "Given Name", "Forename"),
        "last_name": ("Last Name", "Lastname", "Surname", "Family Name"),
        "full_name": ("Full Name", "Name", "Contact Name", "Person Name", "Lead Name"),
        "phone": ("Phone", "Phone Number", "Mobile Phone", "Mobile", "Mobile Phone Number",
                  "Telephone", "Work Phone", "Business Phone", "Phone - Work", "Phone - Mobile",
                  "Cell Phone"),
        "company": ("Company", "Company Name", "Organization", "Organisation", "Account Name",
                    "Organization - Name", "Organization Name", "Employer"),
        "title": ("Title", "Job Title", "Position", "Job Function"),
        "website": ("Website", "Website URL", "Company Website", "Company Domain Name",
                    "Company Domain", "Domain", "URL", "Web Site"),
        "industry": ("Industry", "Company Industry", "Sector"),
        "employees": ("Employees", "Number of Employees", "No. of Employees", "Company Size",
                      "Employee Count", "Headcount"),
        "country": ("Country", "Country/Region", "Country Code", "Country Region",
                    "Mailing Country"),
        "source": ("Lead Source", "Original Source", "Source", "Channel"),
        "created": ("Create Date", "Created", "Created At", "Created Date", "Created Time",
                    "Add Time", "Added", "Date Created"),
        "budget": ("Budget",),
        "authority": ("Authority",),
        "need": ("Need",),
        "timing": ("Timing", "Timeline"),
        "tags": ("Tags", "Labels", "Label"),
    },
    "opportunity": {
        "external_id": ("Deal ID", "Opportunity ID", "Record ID", "id"),
        "email": ("Email", "Contact Email", "Lead Email", "Email Address"),
        "lead_id": ("Lead ID",),
        "name": ("Deal Name", "Opportunity Name", "Name", "Deal Title", "Title"),
        "stage": ("Stage", "Deal Stage", "Stage Name", "Pipeline Stage"),
        "stage_entered_at": ("Stage Entered", "Stage Date", "Stage Entered At",
                             "Last Stage Change"),
        "created": ("Create Date", "Created", "Created At", "Created Date", "Deal Created"),
        "amount": ("Amount", "Value", "Deal Value"),
        "status": ("Status", "Deal Status"),
        "lost_reason": ("Lost Reason", "Closed Lost Reason", "Loss Reason"),
        "competitor": ("Competitor",),
        "lost_notes": ("Lost Notes", "Notes", "Closed Lost Notes"),
        "closed_at": ("Close Date", "Closed At", "Closed Date", "Close Time"),
    },
    "activity": {
        "external_id": ("Activity ID", "id"),
        "email": ("Email", "Contact Email", "Lead Email", "Email Address"),
        "lead_id": ("Lead ID",),
        "deal_id": ("Deal ID", "Opportunity ID"),
        "kind": ("Type", "Activity Type", "Kind"),
        "occurred_at": ("Date", "Occurred At", "Timestamp", "Activity Date", "Due Date"),
        "followup_on": ("Follow Up On", "Follow-up Date", "Followup On", "Follow Up Date"),
        "reason": ("Reason",),
        "competitor": ("Competitor",),
        "notes": ("Notes", "Note", "Description"),
    },
}  # fmt: skip
ALIASES: dict[Kind, dict[str, str]] = {
    kind: {
        header_key(alias): field for field, aliases in fields.items() for alias in (field, *aliases)
    }
    for kind, fields in _ALIASES.items()
}
# Pipedrive prefixes the entity: "Person - Email", "Deal - Stage". The prefix says nothing the
# file kind does not (an organisation's name is listed explicitly, as it is not a person's name).
_ENTITY_PREFIXES = ("person", "contact", "lead", "deal", "opportunity", "activity")
# Each group needs at least one of its fields as a column, or no row could be used.
REQUIRED: dict[Kind, tuple[tuple[str, ...], ...]] = {
    "lead": (("email", "phone"),),
    "opportunity": (("external_id",), ("email", "lead_id"), ("stage",)),
    "activity": (("email", "lead_id"), ("kind",), ("occurred_at",)),
}


def canonical_field(kind: Kind, header: str, columns: Mapping[str, str] = {}) -> str | None:
    """The Nurture field a column holds: the config's own mapping first, then the aliases."""
    if columns and (field := columns.get(header_key(header))):
        return field
    aliases = ALIASES[kind]
    if field := aliases.get(header_key(header)):
        return field
    prefix, dash, rest = header.partition(" - ")
    if dash and header_key(prefix) in _ENTITY_PREFIXES:
        return aliases.get(header_key(rest))
    return None


def _check_columns(path: Path, kind: Kind, mapped: set[str]) -> None:
    for group in REQUIRED[kind]:
        if not mapped & set(group):
            expected = ", ".join(a for f in group for a in _ALIASES[kind][f][:3])
            raise IngestFileError(
                path, 1, f"no {' or '.join(group)} column (expected one of: {expected}, ...)"
            )


def _canonical(fields: list[str | None], values: list[Any]) -> dict[str, str]:
    mapped: dict[str, str] = {}
    for field, value in zip(fields, values, strict=True):
        text = _text(value)
        # Two columns for one field ("Email", "Work Email"): the first one with a value wins.
        if field and text and field not in mapped:
            mapped[field] = text
    return mapped


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ";".join(t for t in map(_text, value) if t)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value).strip()


# --- encodings ---------------------------------------------------------------------------------


def _undecodable_line(path: Path, encoding: str) -> int | None:
    """The line of the first byte ``encoding`` cannot decode, or None when all of it decodes."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return line + chunk[: max(exc.start, 0)].count(b"\n")
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return line
    return None


def detect_encoding(path: Path) -> str:
    """UTF-8 (BOM or not) when the whole file decodes as UTF-8, else Windows-1252.

    The file is scanned in chunks, never held in memory. A UTF-16 BOM (Excel's "Unicode text")
    is honoured too. Bytes that are neither UTF-8 nor Windows-1252 are a structural error.
    """
    with path.open("rb") as handle:
        head = handle.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _undecodable_line(path, "utf-8") is None:
        return "utf-8"
    line = _undecodable_line(path, "cp1252")
    if line is None:
        return "cp1252"
    raise IngestFileError(
        path, line, "neither UTF-8 nor Windows-1252 text; pass the file's encoding (--encoding)"
    )


def resolve_encoding(path: Path, encoding: str | None) -> str:
    if encoding is None:
        return detect_encoding(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise IngestFileError(path, None, f"unknown encoding {encoding!r}") from None
    return encoding


def _decode_error(path: Path, encoding: str) -> IngestFileError:
    return IngestFileError(
        path, _undecodable_line(path, encoding), f"not {encoding} text; try another --encoding"
    )


# --- readers -----------------------------------------------------------------------------------


def read_records(
    path: Path, kind: Kind, encoding: str | None = None, columns: Mapping[str, str] | None = None
) -> Iterator[Record]:
    """Stream the data rows of a CSV or JSONL file (``.jsonl``/``.ndjson``), one at a time.

    ``columns`` maps further headers to fields (``config/ingest.yaml``), beyond the aliases.
    """
    columns = {header_key(h): f for h, f in (columns or {}).items()}
    path = Path(path)
    if not path.is_file():
        raise IngestFileError(path, None, "no such file")
    chosen = resolve_encoding(path, encoding)
    try:
        if path.suffix.lower() in JSONL_SUFFIXES:
            yield from _read_jsonl(path, kind, chosen, columns)
        else:
            yield from _read_csv(path, kind, chosen, columns)
    except UnicodeDecodeError:
        raise _decode_error(path, chosen) from None


def _sniff_delimiter(sample: str, kind: Kind, columns: Mapping[str, str]) -> str:
    # Only the delimiter is taken from the sniffer: its guesses of quote character and escaping
    # are easily fooled by names such as O'Brien.
    if len(sample) >= SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # a cut line would mislead the sniffer
    try:
        sniffed: str | None = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    header = sample.splitlines()[0] if sample else ""

    def known_columns(delimiter: str) -> int:
        cells = next(csv.reader([header], delimiter=delimiter), [])
        return sum(canonical_field(kind, c, columns) is not None for c in cells)

    # The sniffer votes on consistency alone; a header that maps to more known columns under
    # another candidate (a ";" file whose values are full of commas) overrules it.
    ranked = sorted(DELIMITERS, key=lambda d: (known_columns(d), d == sniffed, header.count(d)))
    best = ranked[-1]
    if sniffed and known_columns(sniffed) >= known_columns(best):
        return sniffed
    return best if header.count(best) else (sniffed or ",")


def _read_csv(
    path: Path, kind: Kind, encoding: str, columns: Mapping[str, str]
) -> Iterator[Record]:
    with path.open(encoding=encoding, newline="") as handle:
        delimiter = _sniff_delimiter(handle.read(SNIFF_BYTES), kind, columns)
        handle.seek(0)
        # strict: a stray quote or a quoted field left open to the end is an error, not a row.
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise IngestFileError(path, 1, "empty file: expected a header row")
            header = [h.strip() for h in header]
            fields = [canonical_field(kind, h, columns) for h in header]
            _check_columns(path, kind, {f for f in fields if f})
            raw_names = _unique_names(header)
            row_number, last_line = 0, reader.line_num
            for values in reader:
                start, last_line = last_line + 1, reader.line_num
                if not any(v.strip() for v in values):
                    continue  # blank lines and rows of bare delimiters carry nothing
                if len(values) != len(header):
                    raise IngestFileError(
                        path, start, f"{len(values)} fields where the header has {len(header)}"
                    )
                row_number += 1
                yield Record(
                    row_number,
                    start,
                    _canonical(fields, values),
                    dict(zip(raw_names, values, strict=True)),
                )
        except csv.Error as exc:
            raise IngestFileError(path, reader.line_num or 1, f"not valid CSV: {exc}") from None


def _unique_names(header: list[str]) -> list[str]:
    """Raw column names made unique, so a repeated header keeps both values in the raw record."""
    seen: dict[str, int] = {}
    names = []
    for i, name in enumerate(header, 1):
        name = name or f"column {i}"
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def _read_jsonl(
    path: Path, kind: Kind, encoding: str, columns: Mapping[str, str]
) -> Iterator[Record]:
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
                raise IngestFileError(
                    path, line_number, f"expected a JSON object per line, got {type(obj).__name__}"
                )
            names = [str(n) for n in obj]
            fields = [canonical_field(kind, n, columns) for n in names]
            if row_number == 0:
                # Keys are the columns: the first record must have the ones every row needs.
                try:
                    _check_columns(path, kind, {f for f in fields if f})
                except IngestFileError as exc:
                    raise IngestFileError(path, line_number, exc.message) from None
            row_number += 1
            yield Record(row_number, line_number, _canonical(fields, list(obj.values())), obj)
