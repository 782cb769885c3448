"""Reading and writing entries: JSON lines, JSON arrays and CSV, with exact decimals and positioned errors."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from engine import ledes
from engine.entry_io import EntryFileError, entry_record, read_entries, read_file, write_jsonl
from engine.mapping import load_mapping
from engine.model import Entry, EntryKind
from engine.samples import generate
from tests.conftest import make_entry

TIME = '"source_system": "s", "entry_kind": "time", "work_date": "2026-03-01"'


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(EntryFileError) as info:
        read_entries(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# JSON lines ----------------------------------------------------------------------------------------

def test_jsonl_reads_every_record_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", "\n".join([
        f'{{{TIME}, "source_id": 1, "hours_billed": "0.1", "rate": "250.00"}}',
        "",
        f'{{{TIME}, "source_id": "2", "hours_billed": "0.2", "narrative": "Drafted reply"}}',
        "   ",
    ]) + "\n")
    entries = read_entries(path)
    assert [e.source_id for e in entries] == ["1", "2"]
    assert all(isinstance(e, Entry) and e.entry_kind is EntryKind.TIME for e in entries)
    assert entries[0].rate == Decimal("250.00") and str(entries[0].rate) == "250.00"
    assert entries[0].hours_billed + entries[1].hours_billed == Decimal("0.3")
    assert entries[1].narrative == "Drafted reply"


def test_json_floats_are_read_as_exact_decimals(tmp_path: Path) -> None:
    """A JSON number such as 0.1 is parsed straight to Decimal (parse_float=Decimal), never via float."""
    path = write(tmp_path, "e.jsonl", "\n".join([
        f'{{{TIME}, "source_id": "1", "hours_billed": 0.1, "rate": 1234.567891}}',
        f'{{{TIME}, "source_id": "2", "hours_billed": 0.2, "rate": 2}}',
    ]) + "\n")
    first, second = read_entries(path)
    assert isinstance(first.hours_billed, Decimal)
    assert first.hours_billed + second.hours_billed == Decimal("0.3")
    assert first.rate == Decimal("1234.567891") and str(first.rate) == "1234.567891"
    assert second.rate == Decimal(2)


def test_jsonl_bad_records_are_all_reported_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", "\n".join([
        f'{{{TIME}, "source_id": "ok1"}}',
        "",
        f'{{{TIME}, "source_id": "bad-kind", "entry_kind": "tim"}}',
        "[1, 2]",
        "{not json",
        f'{{{TIME}, "source_id": "ok2"}}',
        '{"source_system": "s", "source_id": "no-date", "entry_kind": "time"}',
    ]) + "\n")
    found = problems(path)
    assert found[0] == f"{path}:3: entry_kind: Input should be 'time' or 'expense'"
    assert found[1] == f"{path}:4: expected an object with the entry's fields"
    assert found[2].startswith(f"{path}:5:2: invalid JSON: ")
    assert found[3] == f"{path}:7: work_date: Field required"
    assert len(found) == 4


def test_float_money_in_a_python_dict_is_refused_but_json_float_is_not(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", f'{{{TIME}, "source_id": "1", "amount": 12.5}}\n')
    assert read_entries(path)[0].amount == Decimal("12.5")
    with pytest.raises(ValueError, match="floats are not accepted"):
        Entry.model_validate(json.loads(path.read_text()))  # what a plain json.loads would have produced


@pytest.mark.parametrize(("name", "text"), [
    ("e.jsonl", f'{{{TIME}, "source_id": "1", "hours_billed": "1.5"}}\n'
                f'{{{TIME}, "source_id": "2", "hours_billed": "abc"}}\n'),
    ("e.csv", "source_system,source_id,entry_kind,work_date,hours_billed\ns,1,time,2026-03-01,1.5\n"
              "s,2,time,2026-03-01,12.5.0\n"),
])
def test_non_numeric_hours_are_reported_not_raised(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    found = problems(path)
    assert len(found) == 1
    lines = text.splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if "abc" in line or "12.5.0" in line)
    assert found[0].startswith(f"{path}:{bad_line}: hours_billed: ")


def test_problems_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", "[1]\n" * 60)
    with pytest.raises(EntryFileError) as info:
        read_entries(path, max_problems=5)
    assert len(info.value.problems) == 6
    assert info.value.problems[-1] == f"{path}: stopped after 5 problems"
    assert info.value.problems[4] == f"{path}:5: expected an object with the entry's fields"


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    found = problems(missing)
    assert len(found) == 1 and found[0].startswith(f"{missing}: cannot read")


# JSON array ----------------------------------------------------------------------------------------

def test_json_array(tmp_path: Path) -> None:
    path = write(tmp_path, "e.json", "[\n"
                 f' {{{TIME}, "source_id": 1, "hours_billed": 0.1}},\n'
                 f' {{{TIME}, "source_id": 2, "hours_billed": "0.2"}}\n'
                 "]\n")
    first, second = read_entries(path)
    assert (first.source_id, second.source_id) == ("1", "2")
    assert first.hours_billed + second.hours_billed == Decimal("0.3")


def test_json_array_detected_without_the_json_suffix(tmp_path: Path) -> None:
    path = write(tmp_path, "entries.txt", f'  [{{{TIME}, "source_id": "1"}}]')
    assert [e.source_id for e in read_entries(path)] == ["1"]


def test_json_array_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "e.json", '[\n {"source_id": "1",}\n]\n')
    (problem,) = problems(path)
    # Python 3.13 points at the trailing comma (column 19), earlier versions just after it (column 20).
    assert re.match(rf"{re.escape(str(path))}:2:(19|20): invalid JSON: ", problem), problem


def test_json_array_bad_record_reports_its_line(tmp_path: Path) -> None:
    """``file:line`` must be a line of the file, not the record's position in the array."""
    path = write(tmp_path, "e.json", "[\n"
                 f'  {{{TIME}, "source_id": "1"}},\n'
                 f'  {{{TIME}, "source_id": "2"}},\n'
                 '  {"source_system": "s", "source_id": "3", "work_date": "2026-03-01"}\n'
                 "]\n")
    (problem,) = problems(path)
    assert problem == f"{path}:4: entry_kind: Field required"


# CSV ---------------------------------------------------------------------------------------------------

CSV_HEADER = "source_system,source_id,entry_kind,work_date,hours_billed,rate,redacted_fields,narrative,currency"


def test_csv_with_header(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "\n".join([
        CSV_HEADER,
        's,1,time,2026-03-01,0.1,"1,250.00",narrative;rate,"Drafted motion, reviewed reply",usd',
        "s,2,time,2026-03-01,0.2,,,,",
    ]) + "\n")
    first, second = read_entries(path)
    assert first.hours_billed + second.hours_billed == Decimal("0.3")
    assert first.rate == Decimal("1250.00")
    assert first.redacted_fields == ["narrative", "rate"]
    assert first.narrative == "Drafted motion, reviewed reply"
    assert first.currency == "USD"
    assert (second.rate, second.redacted_fields, second.narrative, second.currency) == (None, [], "", None)


def test_csv_bad_rows_report_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "\n".join([
        CSV_HEADER,
        "s,1,time,2026-03-01,0.1,,,,",
        "s,2,time,2026-13-01,0.1,,,,",
        ",3,time,2026-03-01,1.5,,,,",
        "s,4,hourly,2026-03-01,0.1,,,,",
        "s,5,time,2026-03-01,0.1,,,,",
    ]) + "\n")
    found = problems(path)
    assert found[0].startswith(f"{path}:3: work_date: ")
    assert found[1] == f"{path}:4: source_system: Field required"
    assert found[2] == f"{path}:5: entry_kind: Input should be 'time' or 'expense'"
    assert len(found) == 3


def test_csv_quoted_newline_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", 'source_system,source_id,entry_kind,work_date,narrative\n'
                 's,1,time,2026-03-01,"Drafted motion.\nReviewed reply."\n')
    (entry,) = read_entries(path)
    assert entry.narrative == "Drafted motion.\nReviewed reply."


def test_csv_row_with_more_values_than_the_header_is_not_silently_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "source_system,source_id,entry_kind,work_date,narrative\n"
                 "s,1,time,2026-03-01,Drafted motion, reviewed reply\n")
    try:
        entries = read_entries(path)
    except EntryFileError as exc:
        assert exc.problems[0].startswith(f"{path}:2:")
    else:
        assert entries[0].narrative == "Drafted motion, reviewed reply", "part of the row was dropped"


def test_csv_invalid_raw_payload_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", "source_system,source_id,entry_kind,work_date,raw_payload\n"
                 's,1,time,2026-03-01,"{""id"": 1}"\n'
                 "s,2,time,2026-03-01,{broken\n")
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:3: raw_payload")


# writing ---------------------------------------------------------------------------------------------

def test_write_jsonl_round_trips(tmp_path: Path) -> None:
    entries = list(generate(40, seed=3))
    entries.append(make_entry(
        source_id="x", source_line_id="2", source_tenant="firm", hours_billed="1.10", rate="0.000001",
        source_updated_at="2026-03-01T10:00:00+00:00", raw_payload={"a": 1, "b": [1, "2"]},
        redacted_fields=["narrative"], narrative="héllo\n“world”", currency="usd",
    ))
    out = io.StringIO()
    assert write_jsonl(entries, out) == len(entries)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(entries)
    path = write(tmp_path, "round.jsonl", out.getvalue())
    back = read_entries(path)
    assert back == entries
    assert back[-1].hours_billed == Decimal("1.10") and str(back[-1].hours_billed) == "1.10"
    last = json.loads(lines[-1])
    assert last["hours_billed"] == "1.10" and last["rate"] == "0.000001"  # decimals written as strings
    assert "héllo" in lines[-1]  # not escaped


def test_entry_record_leaves_out_unset_fields_and_never_writes_floats() -> None:
    record = entry_record(make_entry(hours_billed="2.5", rate="300"))
    assert "amount" not in record and "matter_name" not in record
    assert record["hours_billed"] == "2.5" and record["quantity"] == "2.5" and record["rate"] == "300"
    assert not any(isinstance(v, float) for v in record.values())


# LEDES invoices and mapped exports --------------------------------------------------------------------------

LEDES_FILE = "\n".join([
    "LEDES1998B[]",
    "|".join(ledes.FIELDS_1998B) + "[]",
    "20260401|HM7|ACME01|2026-0017|1950.00|20260301|20260331|March|1|F|2.00|0|1850.00|20260302|L210||A103|TK1002|"
    "Drafted answer|12-3456789|925.00|Okafor, Daniel|PARTNR|ACME-7702[]",
    "20260401|HM7|ACME01|2026-0017|1950.00|20260301|20260331|March|2|E|1|0|100.00|20260303||E107|||Courier|"
    "12-3456789|100.00|||ACME-7702[]",
])


def test_a_ledes_invoice_is_known_by_its_first_line_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "invoice.txt"
    path.write_bytes(b"\xef\xbb\xbf" + LEDES_FILE.encode())
    read = read_file(path)
    assert read.described == "LEDES 1998B" and read.skipped == [] and read.notes == []
    assert [e.entry_uid for e in read.entries] == ["ledes:12-3456789:HM7:1", "ledes:12-3456789:HM7:2"]
    assert read_entries(path) == read.entries


def test_a_broken_ledes_invoice_is_reported_not_raised(tmp_path: Path) -> None:
    path = write(tmp_path, "invoice.txt", LEDES_FILE.replace("|20260303|", "|2026-03-03|"))
    assert problems(path) == [f"{path}:4: field 14 (LINE_ITEM_DATE): LINE_ITEM_DATE '2026-03-03' is not a date in "
                              "the form YYYYMMDD"]


GENERIC_HEADER = ("Date,Timekeeper ID,Timekeeper,Classification,Client ID,Client,Matter ID,Client Matter ID,Matter,"
                  "Task Code,Activity Code,Hours,Rate,Amount,Currency,Narrative,Billable\n")


def test_read_entries_is_all_or_nothing_and_read_file_leaves_bad_rows_out(tmp_path: Path) -> None:
    mapping = load_mapping("generic-time")
    header = GENERIC_HEADER
    path = write(tmp_path, "export.csv", header + "2026-03-02,TK1,A,,C,,M,,,,,1.0,100,100,USD,Call,yes\n"
                                                  "2026-03-32,TK1,A,,C,,M,,,,,1.0,100,100,USD,Letter,yes\n")
    read = read_file(path, mapping)
    assert len(read.entries) == 1 and read.skipped_rows == 1
    assert read.skipped == [f"{path}:3: Date: '2026-03-32' is not a date in the form %Y-%m-%d or %m/%d/%Y or excel"]
    with pytest.raises(EntryFileError) as info:
        read_entries(path, mapping)
    assert info.value.problems == read.skipped


def test_a_mapped_file_none_of_whose_rows_can_be_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "export.csv", GENERIC_HEADER + "03.02.2026,TK1,A,,C,,M,,,,,1.0,100,100,USD,Call,yes\n")
    found = problems_of(lambda: read_file(path, load_mapping("generic-time")))
    assert found[-1] == f"{path}: none of its 1 rows could be read"


def test_a_workbook_needs_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    path.write_bytes(b"PK\x03\x04")
    assert problems(path) == [f"{path}: a workbook is read through a mapping that says which column is which field "
                              "(--mapping; docs/mappings.md)"]


def problems_of(read: object) -> list[str]:
    with pytest.raises(EntryFileError) as info:
        read()  # type: ignore[operator]
    return info.value.problems
