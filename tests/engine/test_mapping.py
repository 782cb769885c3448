"""Mappings: checked like rule files, and any CSV or .xlsx export read through one, exactly (Decimal, never a float)."""

from __future__ import annotations

import datetime as dt
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from engine import ledes
from engine.mapping import (
    LEDES_FIELDS,
    Mapping,
    MappingError,
    UnreadableFile,
    builtin_mappings,
    ledes_entries,
    load_mapping,
    load_mapping_text,
    read_mapped,
)
from engine.mapping.schema import FIELD_KINDS
from engine.mapping.values import DateFormats, Duration, NumberFormat, excel_date, format_problem
from engine.model import ENTRY_FIELDS, EntryKind, FeeBasis
from tests.conftest import REPO, locate

SAMPLES = REPO / "engine" / "data" / "samples"
LEDES_SAMPLES = REPO.parent / "shared" / "reference" / "ledes_samples"
HEADER = "Date,Matter,Who,Hours,Rate,Amount,Code,Narrative,Ref\n"
FIELDS = """\
  source_system: {value: firm}
  source_id: Ref
  entry_kind: {value: time}
  work_date: {column: Date, format: "%d/%m/%Y"}
  law_firm_matter_id: Matter
  timekeeper_name: Who
  hours_billed: Hours
  rate: Rate
  amount: Amount
  narrative: Narrative
"""


def mapping(fields: str = FIELDS, head: str = "") -> Mapping:
    return load_mapping_text(textwrap.dedent(head) + "fields:\n" + fields, "firm.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        load_mapping_text(text, "firm.yaml")
    return [str(p) for p in info.value.problems]


def csv_file(tmp_path: Path, text: str, name: str = "export.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# Values ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("numbers", "text", "expected"), [
    (NumberFormat(), "$1,234.50", "1234.50"),
    (NumberFormat(), "(1,234.50)", "-1234.50"),
    (NumberFormat(), "-$12.00", "-12.00"),
    (NumberFormat(), "1234.5", "1234.5"),
    (NumberFormat(), " 0.1 ", "0.1"),
    (NumberFormat(",", ".", ("€",)), "1.234,56 €", "1234.56"),
    (NumberFormat(",", " ", ()), "12 345,6", "12345.6"),
    (NumberFormat(".", "'", ("CHF",)), "CHF 1'250.00", "1250.00"),
    (NumberFormat(".", "", ()), "1250", "1250"),
])
def test_numbers_are_read_exactly(numbers: NumberFormat, text: str, expected: str) -> None:
    value = numbers.parse(text)
    assert isinstance(value, Decimal) and str(value) == expected


@pytest.mark.parametrize("text", ["1,23", "12.5.0", "1.234,50", "abc", "$", "1 234"])
def test_a_number_in_another_format_is_refused_not_guessed(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a number written with decimal separator '\.'"):
        NumberFormat().parse(text)


def test_xlsx_floats_are_taken_as_excel_shows_them() -> None:
    assert NumberFormat().parse(0.1) == Decimal("0.1")
    assert str(NumberFormat().parse(0.7 * 3)) == "2.1"  # 2.0999999999999996 in binary
    assert NumberFormat().parse(1250) == Decimal(1250)


def test_durations() -> None:
    assert Duration("minutes").hours("90") == Decimal("1.5")
    assert Duration("minutes").hours("7") == Decimal("0.1167")  # LEDES's four decimals where minutes do not divide
    assert Duration("units", 6).hours("3") == Decimal("0.3")
    assert Duration("h:mm").hours("1:45") == Decimal("1.75")
    assert Duration().hours("0.33333") == Decimal("0.33333")  # hours as written are never rounded
    assert Duration("minutes").seconds("7") == 420
    assert Duration("hours").seconds("0.1") == 360
    with pytest.raises(ValueError, match="negative duration"):
        Duration("minutes").hours("-6")
    with pytest.raises(ValueError, match="h:mm"):
        Duration("h:mm").hours("1.5")


def test_dates() -> None:
    formats = DateFormats(("%d/%m/%Y", "excel"))
    assert formats.parse("01/03/2026") == dt.date(2026, 3, 1)
    assert formats.parse("46082") == dt.date(2026, 3, 1)
    assert formats.parse(46082) == dt.date(2026, 3, 1)
    assert formats.parse(dt.datetime(2026, 3, 1, 9, 30)) == dt.date(2026, 3, 1)
    assert (excel_date(1), excel_date(59), excel_date(61)) == (dt.date(1900, 1, 1), dt.date(1900, 2, 28),
                                                               dt.date(1900, 3, 1))
    with pytest.raises(ValueError, match="not a date in the form %d/%m/%Y or excel"):
        formats.parse("31/02/2026")
    with pytest.raises(ValueError, match="is a number, not a date"):
        DateFormats(("%d/%m/%Y",)).parse(46082)
    assert format_problem("%d/%m/%Y") is None
    assert "does not give a whole date" in format_problem("%d/%m")
    assert "is not a date format" in format_problem("%d/%Q/%Y")


def test_every_canonical_field_is_mappable_or_ocgates_own() -> None:
    own = {"ingested_at", "connector_version", "data_quality_flags", "redacted_fields", "raw_payload"}
    assert set(FIELD_KINDS) | own == set(ENTRY_FIELDS)
    assert not set(FIELD_KINDS) & own


# Loading and checking a mapping ------------------------------------------------------------------------------

def test_builtins_load() -> None:
    assert set(builtin_mappings()) >= {"mattero-all-costs", "generic-time"}
    for name in builtin_mappings():
        assert load_mapping(name).rules


def test_a_mapping_file_is_found_before_a_builtin_and_an_unknown_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "firm.yaml"
    path.write_text("fields:\n" + FIELDS)
    assert load_mapping(path).name == str(path)
    with pytest.raises(MappingError, match=r"no built-in mapping of that name \(built-in: generic-time"):
        load_mapping("no-such-mapping")


BAD = {
    "unknown field": ("  work_dat: Date\n", "work_dat", "unknown canonical field 'work_dat' (did you mean "
                                                      "'work_date'?)"),
    "bad format": ('  work_date: {column: Date, format: "%d/%m"}\n', '"%d/%m"', "'%d/%m' does not give a whole "
                                                                             "date"),
    "duplicate column": ("  narrative: {columns: [Narrative, Narrative]}\n", "Narrative]",
                         "column 'Narrative' is listed twice"),
    "duplicate field": ("  rate: Rate\n  rate: Fee\n", "rate: Fee", "duplicate key 'rate'"),
    "option that does not fit": ("  rate: {column: Rate, unit: minutes}\n", "unit:",
                                 "'unit' does not apply to rate (a money field)"),
    "two sources": ("  rate: {column: Rate, value: 100}\n", "rate:", "give only one of: column, columns, value, "
                                                                       "hash"),
    "unknown table": ("  utbms_task_code: {column: Code, translate: tasks}\n", "tasks",
                      "unknown table 'tasks' (tables: none defined)"),
    "bad choice": ("  fee_basis: {column: Basis, translate: {Fixed: flat-fee}}\n", "flat-fee",
                   "'flat-fee' is not one of hourly, flat, fixed_template, contingency, unit"),
    "wrong kind of code": ("  utbms_activity_code: {column: Code, translate: {Copies: E101}}\n", "E101",
                           "E101 is a UTBMS expense code, not an activity code"),
    "bad constant": ("  billable: {value: maybe}\n", "maybe", "'maybe' is not yes or no"),
    "units without a length": ("  hours_billed: {column: Units, unit: units}\n", "units}",
                               "unit: units needs unit_minutes"),
    "bad time zone": ('  source_updated_at: {column: Modified, timezone: Mars/Olympus}\n', "Mars",
                      "unknown time zone 'Mars/Olympus'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_mapping_is_reported_where_it_is_wrong(case: str) -> None:
    extra, token, message = BAD[case]
    redefined = extra.split(":")[0] + ":"
    text = "fields:\n" + "".join(line for line in FIELDS.splitlines(keepends=True)
                                 if not line.startswith(redefined)) + extra
    found = problems(text)
    line, column = locate(text, token, occurrence=text.count(token))
    assert any(p.startswith(f"firm.yaml:{line}:") and message in p for p in found), found
    assert any(p.startswith(f"firm.yaml:{line}:{column}:") for p in found), (found, line, column)


def test_schema_and_required_fields_are_reported_together() -> None:
    text = "title: x\nfile: {delimiter: ':'}\nfields:\n  narrative: Narrative\n"
    found = problems(text)
    assert found[0].startswith("firm.yaml:2:19: file/delimiter: ':' is not one of")
    text = "fields:\n  narrative: Narrative\n"
    found = problems(text)
    assert [p.split(": ", 2)[-1] for p in found] == [
        f"missing required field {name!r}: every entry needs one (a column, or a constant value)"
        for name in sorted(("source_system", "source_id", "entry_kind", "work_date"))]
    assert problems("fields: [1]\n")[0].startswith("firm.yaml:1:1: fields: '[1]' is not of type 'object'")
    assert problems("fields:\n  rate: {column: Rate\n")[0].startswith("firm.yaml:3:1: YAML syntax: ")


# Reading CSV ---------------------------------------------------------------------------------------------

def test_csv_rows_become_entries_and_bad_rows_are_reported_and_left_out(tmp_path: Path) -> None:
    path = csv_file(tmp_path, HEADER + "\n".join([
        '01/03/2026,M-1,Ann,1.5,"$1,000.00","$1,500.00",,Drafted the brief,R1',
        "31/02/2026,M-1,Ann,1.5,100,150,,Bad date,R2",
        "02/03/2026,M-1,Ann,lots,100,150,,Bad hours,R3",
        "02/03/2026,M-1,Ann,0.1,100,12.00,,Does not reconcile,R4",
        "03/03/2026,M-1,Ann,0.2,100,20,,No id,",
    ]) + "\n")
    read = read_mapped(path, mapping())
    assert [e.source_id for e in read.entries] == ["R1", "R4"]
    first = read.entries[0]
    assert (first.work_date, first.hours_billed, first.quantity, first.rate, first.amount) == (
        dt.date(2026, 3, 1), Decimal("1.5"), Decimal("1.5"), Decimal("1000.00"), Decimal("1500.00"))
    assert first.entry_kind is EntryKind.TIME and first.data_quality_flags == []
    assert read.entries[1].data_quality_flags == ["AMOUNT_MISMATCH"]
    assert read.entries[1].amount == Decimal("12.00")  # the export's amount stands
    assert [str(p) for p in read.problems] == [
        f"{path}:3: Date: '31/02/2026' is not a date in the form %d/%m/%Y",
        f"{path}:4: Hours: 'lots' is not a number written with decimal separator '.' and thousands separator ','",
        f"{path}:6: Ref: Field required",
    ]
    assert (read.rows, read.skipped) == (5, 3)


def test_semicolons_decimal_commas_and_cp1252(tmp_path: Path) -> None:
    text = ("Date;Matter;Who;Hours;Rate;Amount;Code;Narrative;Ref\r\n"
            "01/03/2026;M-1;Zoë Müller;1,5;1.000,00 €;1.500,00 €;;Prüfung des Vertrags;R1\r\n")
    path = csv_file(tmp_path, text, encoding="cp1252")
    numbers = "numbers: {decimal: ',', thousands: '.', currency_symbols: ['€']}\n"
    read = read_mapped(path, mapping(head=numbers))
    assert read.described == "CSV, cp1252, delimiter ';'"
    entry = read.entries[0]
    assert (entry.timekeeper_name, entry.narrative) == ("Zoë Müller", "Prüfung des Vertrags")
    assert (entry.hours_billed, entry.rate, entry.amount) == (Decimal("1.5"), Decimal("1000.00"), Decimal("1500.00"))


@pytest.mark.parametrize(("encoding", "separator"), [("utf-8-sig", ","), ("utf-16", "\t"), ("utf-8", "|")])
def test_excel_encodings_and_delimiters_are_detected(tmp_path: Path, encoding: str, separator: str) -> None:
    text = (HEADER + "01/03/2026,M-1,Siobhán,0.5,400,200,,Call re “terms”,R1\n").replace(",", separator)
    read = read_mapped(csv_file(tmp_path, text, encoding=encoding), mapping())
    assert read.entries[0].timekeeper_name == "Siobhán" and read.entries[0].narrative == "Call re “terms”"


def test_an_explicit_encoding_that_does_not_fit_is_reported(tmp_path: Path) -> None:
    path = csv_file(tmp_path, HEADER + "01/03/2026,M-1,Zoë,1,1,1,,x,R1\n", encoding="cp1252")
    with pytest.raises(UnreadableFile, match=r"export.csv:2: not utf-8 text \(byte 0xeb\): set file.encoding"):
        read_mapped(path, mapping(head="file: {encoding: utf-8}\n"))


def test_missing_and_doubled_columns_are_reported_at_once(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "Date,Matter,Who,Who,Hrs,Rate,Amount,Narrative,Ref\n01/03/2026,M,A,B,1,1,1,x,R\n")
    with pytest.raises(UnreadableFile) as info:
        read_mapped(path, mapping())
    assert info.value.problems == [
        f"{path}:1: Who: the header has this column 2 times (columns 3, 4); name them apart",
        f"{path}:1: Hours: the column of hours_billed (firm.yaml:8:3) is not in the header; did you mean 'Hrs'?",
    ]


def test_header_names_match_whatever_their_case_and_spacing(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "title line\n" + HEADER.upper().replace("NARRATIVE", " narrative ") +
                    "01/03/2026,M,A,1,1,1,,x,R\n")
    read = read_mapped(path, mapping(head="file: {header_row: 2}\n"))
    assert [e.source_id for e in read.entries] == ["R"]


@pytest.mark.parametrize(("mode", "ids", "problems_found"), [
    ("skip", ["R1", "R2"], []), ("stop", ["R1"], []), ("error", ["R1", "R2"], ["3: row: a blank row"])])
def test_blank_rows(tmp_path: Path, mode: str, ids: list[str], problems_found: list[str]) -> None:
    path = csv_file(tmp_path, HEADER + "01/03/2026,M,A,1,1,1,,x,R1\n,,,,,,,,\n02/03/2026,M,A,1,1,1,,y,R2\n")
    read = read_mapped(path, mapping(head=f"file: {{blank_rows: {mode}}}\n"))
    assert [e.source_id for e in read.entries] == ids
    assert [str(p).removeprefix(f"{path}:") for p in read.problems] == [p + " (blank_rows: error)"
                                                                         for p in problems_found]


def test_an_id_used_twice_leaves_the_second_row_out(tmp_path: Path) -> None:
    path = csv_file(tmp_path, HEADER + "01/03/2026,M,A,1,1,1,,x,R1\n02/03/2026,M,A,1,1,1,,y,R1\n")
    read = read_mapped(path, mapping())
    assert [e.narrative for e in read.entries] == ["x"]
    assert [str(p) for p in read.problems] == [
        f"{path}:3: Ref: row 2 has the same id 'R1': an id is one row of a file; this row is left out"]


def test_hashed_ids_are_stable_and_identical_rows_are_numbered(tmp_path: Path) -> None:
    fields = FIELDS.replace("source_id: Ref", "source_id: {hash: [Date, Who, Narrative]}")
    row = "01/03/2026,M,A,0.1,100,10,,Call with client,\n"
    path = csv_file(tmp_path, HEADER + row + row + "01/03/2026,M,A,0.2,100,20,,Letter,\n")
    first = [e.source_id for e in read_mapped(path, mapping(fields)).entries]
    again = [e.source_id for e in read_mapped(path, mapping(fields)).entries]
    assert first == again and len(set(first)) == 3
    assert first[1] == first[0] + "-2" and first[0].startswith("h") and len(first[0]) == 21


def test_translations_flags_and_only_for(tmp_path: Path) -> None:
    fields = FIELDS.replace("entry_kind: {value: time}", "entry_kind: {column: Kind, translate: {T: time, "
                                                         "X: expense}, unlisted: error}") + """\
  fee_basis: {column: Basis, translate: {Time: hourly, Fixed: flat}, only_for: time}
  utbms_activity_code: {column: Code, translate: {Perusal: A104}, only_for: time}
  utbms_expense_code: {column: Code, translate: {Courier: E107, Copies: e101}, only_for: expense}
  written_off: {column: Written off}
"""
    header = "Date,Matter,Who,Hours,Rate,Amount,Code,Narrative,Ref,Kind,Basis,Written off\n"
    path = csv_file(tmp_path, header + "\n".join([
        "01/03/2026,M,A,0.5,400,200,perusal,Read file,R1,T,Time,No",
        "01/03/2026,M,A,2,400,1500,Perusal,Fixed-fee advice,R2,T,Fixed,yes",
        "01/03/2026,M,A,,,45,Courier,Courier,R3,X,Fixed,No",
        "01/03/2026,M,A,0.5,400,200,Telephone,Call,R4,T,Time,No",
        "01/03/2026,M,A,,,45,Courier,Courier,R5,Z,Time,No",
    ]) + "\n")
    read = read_mapped(path, mapping(fields))
    one, flat, courier, call = read.entries
    assert (one.utbms_activity_code, one.utbms_expense_code, one.fee_basis) == ("A104", None, FeeBasis.HOURLY)
    assert (flat.fee_basis, flat.quantity, flat.rate, flat.amount, flat.hours_billed, flat.written_off) == (
        FeeBasis.FLAT, Decimal(1), Decimal(1500), Decimal(1500), Decimal(2), True)
    assert flat.data_quality_flags == []  # a flat fee is one unit at its amount: nothing to reconcile
    assert (courier.entry_kind, courier.fee_basis, courier.utbms_expense_code) == (EntryKind.EXPENSE,
                                                                                   FeeBasis.UNIT, "E107")
    assert (call.utbms_activity_code, call.data_quality_flags) == (None, ["UNMAPPED_UTBMS_ACTIVITY_CODE"])
    assert [str(p) for p in read.problems] == [f"{path}:6: Kind: 'Z' is not in the translate table"]


def test_problems_on_the_entry_name_the_column(tmp_path: Path) -> None:
    fields = FIELDS + "  currency: {column: Currency}\n  hours_worked: {column: Minutes, unit: minutes}\n"
    path = csv_file(tmp_path, HEADER.replace("Ref\n", "Ref,Currency,Minutes\n") + "01/03/2026,M,A,1,1,1,,x,R1,,7\n")
    entry = read_mapped(path, mapping(fields)).entries[0]
    assert entry.currency is None and entry.hours_worked == Decimal("0.1167")


# Reading XLSX --------------------------------------------------------------------------------------------

def test_xlsx_cells_keep_their_types_and_money_stays_exact(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Costs")
    sheet.append(["Exported 2026-04-01"])
    sheet.append(HEADER.strip().split(","))
    sheet.append([dt.datetime(2026, 3, 1), "M-1", "Ann", 0.1, 1000, 100.1, None, "Call", 1700])
    sheet.append(["02/03/2026", "M-1", "Ann", "0.3", "1,000.00", 0.7 * 3 * 100, None, "Letter", "1701-A"])
    sheet.append([None] * 9)
    sheet.append([46083, "M-1", "Ann", 0.2, 1000, 200, None, "Serial date", "1702-A"])
    path = tmp_path / "export.xlsx"
    book.save(path)
    fields = FIELDS.replace('format: "%d/%m/%Y"', 'format: ["%d/%m/%Y", excel]')
    read = read_mapped(path, mapping(fields, head="file: {sheet: Costs, header_row: 2}\n"))
    assert read.described == "sheet 'Costs'" and read.problems == []
    first, second, third = read.entries
    assert (first.source_id, first.work_date, first.hours_billed, first.rate, first.amount) == (
        "1700", dt.date(2026, 3, 1), Decimal("0.1"), Decimal(1000), Decimal("100.1"))
    assert second.amount == Decimal("210") and second.hours_billed == Decimal("0.3")
    assert third.work_date == dt.date(2026, 3, 2)
    assert first.data_quality_flags == ["AMOUNT_MISMATCH"]  # 0.1 x 1000 is 100, not 100.1
    with pytest.raises(UnreadableFile, match=r"no sheet 'Time' \(sheets: Costs\)"):
        read_mapped(path, mapping(fields, head="file: {sheet: Time}\n"))


def test_a_broken_workbook_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UnreadableFile, match=r"not an \.xlsx workbook"):
        read_mapped(path, mapping())
    old = tmp_path / "export.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(UnreadableFile, match=r"save it as \.xlsx or CSV"):
        read_mapped(old, mapping())


# The built-in mappings ---------------------------------------------------------------------------------------

def test_mattero_sample_export() -> None:
    read = read_mapped(SAMPLES / "mattero-all-costs.csv", load_mapping("mattero-all-costs"))
    assert read.problems == [] and 100 <= len(read.entries) <= 300
    assert read.described == "CSV, utf-8-sig, delimiter ','"
    by_id = {e.source_id: e for e in read.entries}
    time = by_id["1700-A"]  # 40 minutes, 7 six-minute units at $240.00: $168.00 ex GST, GST $16.80
    assert (time.entry_kind, time.fee_basis, time.source_system, time.currency) == (
        EntryKind.TIME, FeeBasis.HOURLY, "mattero", "AUD")
    assert (time.duration_seconds_raw, time.hours_worked, time.hours_billed, time.quantity) == (
        2400, Decimal("0.6667"), Decimal("0.7"), Decimal("0.7"))
    assert (time.rate, time.amount, time.tax_amount, time.tax_inclusive) == (
        Decimal("240.00"), Decimal("168.00"), Decimal("16.80"), False)
    assert (time.utbms_activity_code, time.source_task_label, time.work_date) == ("A104", "Perusal",
                                                                                  dt.date(2026, 3, 2))
    flat = [e for e in read.entries if e.fee_basis in (FeeBasis.FLAT, FeeBasis.FIXED_TEMPLATE)]
    assert {e.fee_basis for e in flat} == {FeeBasis.FLAT, FeeBasis.FIXED_TEMPLATE}
    assert all(e.quantity == 1 and e.rate == e.amount for e in flat)
    expenses = [e for e in read.entries if e.entry_kind is EntryKind.EXPENSE]
    assert expenses and all(e.fee_basis is FeeBasis.UNIT and e.hours_billed is None for e in expenses)
    assert {e.tax_amount for e in expenses if e.utbms_expense_code == "E112"} == {Decimal("0.00")}  # GST-free
    mismatched = [e for e in read.entries if "AMOUNT_MISMATCH" in e.data_quality_flags]
    assert len(mismatched) == 3
    assert all(e.amount != e.quantity * e.rate for e in mismatched)
    unmapped = [e for e in read.entries if e.data_quality_flags == ["UNMAPPED_UTBMS_EXPENSE_CODE"]]
    assert unmapped and {e.source_task_label for e in unmapped} == {"Archive Retrieval"}
    assert any(e.written_off for e in read.entries)
    assert all(e.amount == e.quantity * e.rate for e in read.entries if e.entry_kind is EntryKind.TIME
               and not e.data_quality_flags)


def test_generic_time_export(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "\n".join([
        "Date,Timekeeper ID,Timekeeper,Classification,Client ID,Client,Matter ID,Client Matter ID,Matter,Task Code,"
        "Activity Code,Hours,Rate,Amount,Currency,Narrative,Billable",
        "2026-03-02,TK1002,\"Okafor, Daniel\",PARTNR,ACME01,Acme Corporation,2026-0017,ACME-LIT-7702,In re Acme,"
        "L210,A103,1.5,925.00,1387.50,USD,Drafted answer,Yes",
        "03/03/2026,TK1004,\"Reyes, Carlos\",ASSOC,ACME01,Acme Corporation,2026-0017,ACME-LIT-7702,In re Acme,"
        "l310,a103,0.4,600.00,240.00,usd,Drafted requests,No",
        "",
        "Total,,,,,,,,,,,1.9,,1627.50,,,",
    ]) + "\n")
    read = read_mapped(path, load_mapping("generic-time"))
    assert read.problems == [] and len(read.entries) == 2
    first, second = read.entries
    assert (first.source_system, first.timekeeper_ledes_id, first.ledes_client_id, first.client_matter_id) == (
        "pm-export", "TK1002", "ACME01", "ACME-LIT-7702")
    assert (second.work_date, second.utbms_task_code, second.currency, second.billable) == (
        dt.date(2026, 3, 3), "L310", "USD", False)
    assert first.source_id.startswith("h") and first.source_id != second.source_id


# LEDES files ------------------------------------------------------------------------------------------------

def test_ledes_lines_become_entries_and_adjustments_are_notes() -> None:
    line = ledes.LedesLine(1, "F", dt.date(2026, 3, 2), "2026-0017", Decimal("1.50"), Decimal("925.00"),
                           Decimal("-50.00"), Decimal("1337.50"), "Drafted answer", "L210", "", "A103", "TK1002",
                           "Okafor, Daniel", "PARTNR", "ACME-LIT-7702")
    copies = ledes.LedesLine(2, "E", dt.date(2026, 3, 3), "2026-0017", Decimal(120), Decimal("0.25"), Decimal(0),
                             Decimal("30.00"), "Copies", "", "E101", "", "", "", "", "ACME-LIT-7702")
    credit = ledes.LedesLine(3, "IF", dt.date(2026, 3, 31), "2026-0017", None, None, Decimal("-100.00"),
                             Decimal("-100.00"), "Courtesy discount")
    invoice = ledes.LedesInvoice(dt.date(2026, 4, 1), "HM000123", "ACME01", "12-3456789", Decimal("1267.50"),
                                 dt.date(2026, 3, 1), dt.date(2026, 3, 31), "March", (line, copies, credit))
    read = ledes_entries(ledes.write_1998b([invoice]), "march.txt")
    assert read.described == "LEDES 1998B" and read.problems == []
    fee, expense = read.entries
    assert fee.entry_uid == "ledes:12-3456789:HM000123:1"
    assert (fee.entry_kind, fee.hours_billed, fee.quantity, fee.rate, fee.amount, fee.adjustment_amount) == (
        EntryKind.TIME, Decimal("1.50"), Decimal("1.50"), Decimal("925.00"), Decimal("1387.50"), Decimal("-50.00"))
    assert (fee.timekeeper_ledes_id, fee.timekeeper_classification, fee.utbms_task_code, fee.invoice_ref) == (
        "TK1002", "PARTNR", "L210", "HM000123")
    assert (fee.ledes_client_id, fee.law_firm_matter_id, fee.client_matter_id, fee.currency) == (
        "ACME01", "2026-0017", "ACME-LIT-7702", None)
    assert (expense.entry_kind, expense.fee_basis, expense.quantity, expense.amount, expense.utbms_expense_code) == (
        EntryKind.EXPENSE, FeeBasis.UNIT, Decimal(120), Decimal("30.00"), "E101")
    assert read.notes == ["march.txt:5: invoice HM000123 line 3: an invoice-level adjustment on fees (IF, -100.00, "
                          "'Courtesy discount') is not an entry: it is not judged or stored"]


def test_a_broken_ledes_file_names_the_line_and_field() -> None:
    text = ledes.write_1998b([ledes.LedesInvoice(
        dt.date(2026, 4, 1), "HM1", "ACME01", "12-3456789", Decimal("10.00"), dt.date(2026, 3, 1),
        dt.date(2026, 3, 31), "", (ledes.LedesLine(1, "F", dt.date(2026, 3, 2), "M", Decimal(1), Decimal(10),
                                                   Decimal(0), Decimal("10.00")),))])
    with pytest.raises(UnreadableFile) as info:
        ledes_entries(text.replace("|10.00|20260302|", "|ten|20260302|"), "bad.txt")
    assert info.value.problems == ["bad.txt:3: field 13 (LINE_ITEM_TOTAL): LINE_ITEM_TOTAL 'ten' is not a number "
                                   "(digits, an optional leading '-' and decimal point, no thousands separators or "
                                   "currency symbols)"]


def test_the_ledes_table_covers_what_a_line_carries() -> None:
    assert {name for name, _, _ in LEDES_FIELDS} <= set(FIELD_KINDS)


@pytest.mark.skipif(not LEDES_SAMPLES.is_dir(), reason="the public LEDES samples are not beside the project")
@pytest.mark.parametrize("sample", sorted(p.name for p in LEDES_SAMPLES.glob("*.txt")) if LEDES_SAMPLES.is_dir()
                         else [])
def test_public_ledes_samples(sample: str) -> None:
    path = LEDES_SAMPLES / sample
    if "greedy_bad" in sample:
        with pytest.raises(UnreadableFile, match=rf"^{path}:1: the first line must be"):
            ledes_entries(path.read_bytes(), str(path))
        return
    read = ledes_entries(path.read_bytes(), str(path))
    assert read.entries
    fees = [e for e in read.entries if e.entry_kind is EntryKind.TIME][:1]
    for fee in fees:  # the LOC sample's first fee line: 2 hours at 350, a 70 write-down (plus VAT in 98BI) or none
        assert (fee.timekeeper_ledes_id, fee.rate, fee.quantity) == ("22547", Decimal(350), Decimal(2))
        assert fee.amount + (fee.adjustment_amount or 0) + (fee.tax_amount or 0) in (
            Decimal(630), Decimal("717.63"), Decimal(700))
    adjustments = [n for n in read.notes if "invoice-level adjustment" in n]
    assert len(adjustments) == (path.read_text(encoding="utf-8").count("|IF|")
                                + path.read_text(encoding="utf-8").count("|IE|"))
