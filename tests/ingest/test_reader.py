"""Reading exports as people have them: encodings, delimiters, header aliases, line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.ingest.reader import IngestFileError, Record, detect_encoding, read_records
from tests.ingest.conftest import FIXTURES


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_hubspot_headers_with_a_bom_map_to_canonical_fields() -> None:
    path = FIXTURES / "hubspot_contacts.csv"
    assert detect_encoding(path) == "utf-8-sig"
    first = next(read_records(path, "lead"))
    row_number, line_number, fields, raw = first  # a record is the tuple the brief promises
    assert (row_number, line_number) == (1, 2)
    assert fields == {
        "email": "ana.silva@acme.example", "first_name": "ANA", "last_name": "SILVA",
        "phone": "(415) 555-0134 x12", "company": "Acme Corp", "title": "VP Sales",
        "country": "United States", "source": "Paid Search", "created": "2026-02-10",
        "budget": "yes", "authority": "Unknown", "need": "YES", "timing": "maybe",
    }  # fmt: skip
    # Unknown columns are not fields, but the raw record keeps them; the BOM is not in a name.
    assert raw["Record ID"] == "101" and raw["Lifecycle Stage"] == "lead"
    assert "Email" in raw


def test_salesforce_and_pipedrive_headers() -> None:
    salesforce = list(read_records(FIXTURES / "salesforce_leads.csv", "lead"))
    assert salesforce[0].fields["email"] == "MIA.WONG@globex.example"
    assert salesforce[0].fields["full_name"] == "Mia Wong"
    assert salesforce[0].fields["phone"] == "+44 7911 123456"
    assert salesforce[0].fields["created"] == "2026-02-20"
    assert "lead_id" not in salesforce[0].fields  # a lead file's own ids are kept raw only


def test_cp1252_with_semicolons_and_commas_inside_values() -> None:
    path = FIXTURES / "pipedrive_persons.csv"
    assert detect_encoding(path) == "cp1252"
    rows = list(read_records(path, "lead"))
    assert [r.fields["full_name"] for r in rows] == ["Jürgen Weiß", "José Núñez", "Ana Silva"]
    # The sniffer must not split "Empresa, S.A." on its comma.
    assert rows[1].fields["company"] == "Empresa, S.A. de C.V."
    assert rows[1].fields["country"] == "México"
    assert [r.line_number for r in rows] == [2, 3, 4]


def test_pipedrive_entity_prefixes_tabs_and_pipes(tmp_path: Path) -> None:
    tabbed = write(
        tmp_path / "persons.tsv",
        "Person - Name\tPerson - Email\tOrganization - Name\tPerson - Phone\n"
        "Lee Park\tlee@umbrella.example\tUmbrella\t+82 2 312 3456\n",
    )
    [record] = read_records(tabbed, "lead")
    assert record.fields == {
        "full_name": "Lee Park",
        "email": "lee@umbrella.example",
        "company": "Umbrella",
        "phone": "+82 2 312 3456",
    }
    piped = write(tmp_path / "deals.csv", "Deal - ID|Deal - Title|Deal - Stage|Person - Email\n7|Pilot|Demo|a@b.example\n")  # fmt: skip
    [deal] = read_records(piped, "opportunity")
    assert deal.fields == {"external_id": "7", "name": "Pilot", "stage": "Demo", "email": "a@b.example"}  # fmt: skip


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "leads.csv",
        'Email,Notes\n\na@x.example,"two\nlines"\n,\nb@x.example,one\n',
    )
    records = list(read_records(path, "lead"))
    assert [(r.row_number, r.line_number) for r in records] == [(1, 3), (2, 6)]
    assert records[0].raw == {"Email": "a@x.example", "Notes": "two\nlines"}


def test_jsonl_records_and_their_lines() -> None:
    records = list(read_records(FIXTURES / "tradeshow_scans.jsonl", "lead"))
    assert [(r.row_number, r.line_number) for r in records] == [(1, 1), (2, 3), (3, 4)]
    assert records[0].fields["created"] == "2026-02-25"
    assert "phone" not in records[0].fields  # null is no value
    assert records[0].raw["badge"] == {"id": 7}
    assert records[2].fields["tags"] == "vip;apac"


def test_a_ragged_row_names_file_and_line() -> None:
    path = FIXTURES / "malformed.csv"
    with pytest.raises(IngestFileError) as caught:
        list(read_records(path, "lead"))
    # The quoted field spans lines 3-4, so the ragged row starts on line 5.
    assert str(caught.value) == f"{path}, line 5: 3 fields where the header has 2"
    assert (caught.value.file, caught.value.line) == (str(path), 5)


def test_a_file_without_a_contact_column_is_refused_at_its_header(tmp_path: Path) -> None:
    path = write(tmp_path / "leads.csv", "Name,Company\nAna,Acme\n")
    with pytest.raises(IngestFileError) as caught:
        list(read_records(path, "lead"))
    assert str(caught.value).startswith(
        f"{path}, line 1: no email or phone column (expected one of: Email, Email Address,"
    )


def test_jsonl_lines_that_are_not_objects(tmp_path: Path) -> None:
    not_object = write(tmp_path / "a.jsonl", '{"email": "a@b.example"}\n[1, 2]\n')
    with pytest.raises(IngestFileError, match=r"a\.jsonl, line 2: expected a JSON object"):
        list(read_records(not_object, "lead"))
    broken = write(tmp_path / "b.jsonl", '{"email": "a@b.example"}\n\n{"email": \n')
    with pytest.raises(IngestFileError, match=r"b\.jsonl, line 3: not valid JSON"):
        list(read_records(broken, "lead"))


def test_bytes_in_no_known_encoding_name_their_line(tmp_path: Path) -> None:
    # 0x81 is undefined in Windows-1252 and, alone, invalid UTF-8.
    path = tmp_path / "odd.csv"
    path.write_bytes(b"Email,Name\na@x.example,A\nb@x.example,B\x81\n")
    with pytest.raises(IngestFileError, match=r"odd\.csv, line 3: neither UTF-8 nor Windows-1252"):
        list(read_records(path, "lead"))
    with pytest.raises(IngestFileError, match=r"odd\.csv, line 3: not utf-8 text"):
        list(read_records(path, "lead", encoding="utf-8"))
    with pytest.raises(IngestFileError, match="unknown encoding"):
        list(read_records(path, "lead", encoding="klingon"))


def test_an_unclosed_quote_is_structural(tmp_path: Path) -> None:
    path = write(tmp_path / "open.csv", 'Email,Name\na@x.example,"Ana\nb@x.example,Bo\n')
    with pytest.raises(IngestFileError, match=r"open\.csv, line \d+: not valid CSV"):
        list(read_records(path, "lead"))


def test_forced_encoding_wins_over_detection(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.csv", "Email,Name\na@x.example,Zoë\n", "latin-1")
    [as_latin] = read_records(path, "lead", encoding="latin-1")
    assert as_latin.fields["full_name"] == "Zoë"
    assert isinstance(as_latin, Record)
