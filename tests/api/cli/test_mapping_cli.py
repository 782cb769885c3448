"""``ocgate validate`` and ``ocgate ingest`` of LEDES invoices and of exports read through a mapping."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from api.cli import main
from engine import ledes
from tests.api.cli.test_cli import PERIOD, cli
from tests.conftest import BUNDLED_RULES, REPO, locate

SAMPLE = REPO / "engine" / "data" / "samples" / "mattero-all-costs.csv"
SAMPLE_ROWS = 173
LONG_ENTRIES = """\
id: long-entries
version: 1
rules:
  - id: LONG-001
    title: More than two hours in one entry
    type: max_hours_per_entry
    severity: error
    params: {max_hours: 2}
"""


@pytest.fixture
def long_rules(tmp_path: Path) -> Path:
    path = tmp_path / "long.yaml"
    path.write_text(LONG_ENTRIES, encoding="utf-8")
    return path


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    yield db_url


def broken_copy(tmp_path: Path) -> Path:
    """The sample export with a date that is no date on row 3 and an amount that is no number on row 6."""
    lines = SAMPLE.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    lines[2] = lines[2].replace("02/03/2026", "31/02/2026", 1)
    lines[5] = lines[5].replace(",$", ",AUD x", 1)
    path = tmp_path / "all-costs.csv"
    path.write_text("".join(lines), encoding="utf-8-sig")
    return path


def test_validate_an_export_through_a_builtin_mapping(capsys: pytest.CaptureFixture[str], long_rules: Path) -> None:
    code, out, err = cli(capsys, "validate", str(SAMPLE), "--mapping", "mattero-all-costs", "-r", str(long_rules),
                         *PERIOD)
    # Nothing on stderr but, on a Python without durable-rules, the once-per-process notice of the fallback.
    assert code == 1 and [line for line in err.splitlines() if "durable-rules is not available" not in line] == []
    lines = out.splitlines()
    assert lines[0].split() == ["ENTRY", "RULE", "SEVERITY", "MESSAGE"]
    assert all(row.split()[1] == "LONG-001" for row in lines[1:-3] if row)
    assert lines[-2].startswith(f"{SAMPLE_ROWS} entries checked, ")
    assert lines[-1] == (f"{SAMPLE}: 5 entries with data-quality flags: AMOUNT_MISMATCH 3, "
                         "UNMAPPED_UTBMS_EXPENSE_CODE 2")


def test_rows_that_cannot_be_read_are_listed_and_the_rest_checked(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path, long_rules: Path) -> None:
    path = broken_copy(tmp_path)
    code, out, err = cli(capsys, "validate", str(path), "-m", "mattero-all-costs", "-r", str(long_rules),
                         "--format", "summary", *PERIOD)
    assert code == 1
    assert err.splitlines() == [
        f"{path}:3: Date: '31/02/2026' is not a date in the form %d/%m/%Y or excel",
        f"{path}:6: Rate: 'AUD x195.00' is not a number written with decimal separator '.' and thousands separator "
        "','",
    ]
    assert f"{SAMPLE_ROWS - 2} entries checked:" in out
    assert f"{path}: 2 row(s) left out, each listed on stderr with its row and column" in out


def test_a_bad_mapping_exits_2_with_positions(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = ("fields:\n  source_system: {value: firm}\n  source_id: Ref\n  entry_kind: {value: time}\n"
            "  work_date: {column: Date, format: '%d/%m'}\n  narative: Narrative\n")
    mapping = tmp_path / "firm.yaml"
    mapping.write_text(text, encoding="utf-8")
    code, out, err = cli(capsys, "validate", str(SAMPLE), "-m", str(mapping), "-r", str(BUNDLED_RULES))
    assert code == 2 and out == ""
    line, column = locate(text, "narative")  # the schema's findings come first; the meaning is checked after
    assert err == f"{mapping}:{line}:{column}: fields/narative: unknown canonical field 'narative' (did you mean " \
                  "'narrative'?)\n"
    mapping.write_text(text.replace("narative", "narrative"), encoding="utf-8")
    code, out, err = cli(capsys, "ingest", str(SAMPLE), "-m", str(mapping))
    line, column = locate(text, "'%d/%m'")
    assert (code, out) == (2, "")
    assert err == f"{mapping}:{line}:{column}: fields/work_date/format: '%d/%m' does not give a whole date: it " \
                  "needs a day, a month and a year (for example %d/%m/%Y)\n"
    code, _, err = cli(capsys, "validate", str(SAMPLE), "-m", "mattero", "-r", str(BUNDLED_RULES))
    assert code == 2 and "no built-in mapping of that name (built-in: generic-time, mattero-all-costs)" in err


def test_a_file_the_mapping_does_not_fit_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "validate", str(SAMPLE), "-m", "generic-time", "-r", str(BUNDLED_RULES))
    assert code == 2 and out == ""
    assert err.startswith(f"{SAMPLE}:1: Timekeeper ID: the column of source_id (generic-time:")


def acme_invoice() -> str:
    acme = dict(law_firm_matter_id="2026-0017", client_matter_id="ACME-LIT-7702")
    lines = (
        ledes.LedesLine(1, "F", dt.date(2026, 3, 10), units=Decimal("1.5"), unit_cost=Decimal("1200.00"),
                        adjustment=Decimal(0), total=Decimal("1800.00"), description="Drafted answer to counterclaim",
                        task_code="L210", activity_code="A103", timekeeper_id="TK1002",
                        timekeeper_name="Okafor, Daniel", timekeeper_classification="PARTNR", **acme),
        ledes.LedesLine(2, "IF", dt.date(2026, 3, 31), units=None, unit_cost=None, adjustment=Decimal("-100.00"),
                        total=Decimal("-100.00"), description="Courtesy discount", **acme),
    )
    invoice = ledes.LedesInvoice(dt.date(2026, 4, 1), "HM42", "ACME01", "12-3456789", Decimal("1700.00"),
                                 dt.date(2026, 3, 1), dt.date(2026, 3, 31), "March 2026", lines)
    return ledes.write_1998b([invoice])


def test_validate_a_ledes_invoice_before_it_is_uploaded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "HM42.txt"
    path.write_text(acme_invoice(), encoding="utf-8")
    code, out, err = cli(capsys, "validate", str(path), "-r", str(BUNDLED_RULES), *PERIOD)
    assert code == 1
    assert "HM42:1  ACME-RATE-001  error" in out
    assert err == (f"{path}:4: invoice HM42 line 2: an invoice-level adjustment on fees (IF, -100.00, 'Courtesy "
                   "discount') is not an entry: it is not judged or stored\n")
    broken = tmp_path / "broken.txt"
    broken.write_text(acme_invoice().replace("|1.50|", "|1,50|"), encoding="utf-8")
    code, out, err = cli(capsys, "validate", str(broken), "-r", str(BUNDLED_RULES))
    assert code == 2 and out == ""
    assert err.startswith(f"{broken}:3: field 11 (LINE_ITEM_NUMBER_OF_UNITS): LINE_ITEM_NUMBER_OF_UNITS '1,50' is "
                          "not a number")


def test_ingest_an_export_and_again(capsys: pytest.CaptureFixture[str], database: str, tmp_path: Path) -> None:
    path = broken_copy(tmp_path)
    code, out, err = cli(capsys, "ingest", str(path), "--mapping", "mattero-all-costs", *PERIOD)
    assert code == 0 and len(err.splitlines()) == 2
    received = SAMPLE_ROWS - 2
    assert out.startswith(f"batch 1: {received} received, {received} new, 0 changed, 0 unchanged")
    assert f"{path}: 2 row(s) left out, each listed on stderr with its row and column" in out
    assert "5 entries with data-quality flags" in out
    shutil.copy(SAMPLE, path)  # the firm fixes the export and imports it again: only the two rows are new
    code, out, _ = cli(capsys, "ingest", str(path), "-m", "mattero-all-costs", *PERIOD)
    assert code == 0
    assert out.startswith(f"batch 2: {SAMPLE_ROWS} received, 2 new, 0 changed, {received} unchanged")
    code, out, _ = cli(capsys, "queue")
    assert code == 0 and "in_review" in out


def test_ingest_a_workbook(capsys: pytest.CaptureFixture[str], database: str, tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("All Costs")
    with SAMPLE.open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.reader(handle):
            sheet.append([int(cell) if cell.isdigit() else cell for cell in row])
    path = tmp_path / "all-costs.xlsx"
    book.save(path)
    code, out, err = cli(capsys, "ingest", str(path), "-m", "mattero-all-costs", *PERIOD)
    assert (code, err) == (0, "")
    assert out.startswith(f"batch 1: {SAMPLE_ROWS} received, {SAMPLE_ROWS} new")
