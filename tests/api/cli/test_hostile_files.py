"""Malformed and hostile files thrown at ``validate``, ``ingest``, ``rules check``, CSV mappings and the LEDES
reader: each run ends with exit 0, 1 or 2, a refused file is named with a line (and column where there is
one), nothing raises, and an ingest that refuses its file writes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, func, select
from sqlalchemy.orm import Session, sessionmaker

from api.cli import main
from tests.conftest import REPO

SAMPLE = REPO / "engine" / "data" / "samples" / "acme-2026-03.jsonl"
RECORDS = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:3]]
RULES = REPO / "rules" / "acme-corp.yaml"
RULES_TEXT = RULES.read_text()
PERIOD = ("--as-of", "2026-04-06", "--period-start", "2026-03-01", "--period-end", "2026-03-31")
BOUNDED = settings(max_examples=40, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# The known past failures, and their relatives.
NUMBERS = ["1e999999", "-1e999999", "1E+999999999", "NaN", "-Infinity", "sNaN", "1e-999999", "0x10", "1_000",
           "١٢٣", "9" * 5000, "0." + "1" * 300, "1e12", "999999999999.9999999999", "-0", "1,,2", " ", "1e"]
DEEP = ["[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "[" * 40 + "]" * 40, "1" * 5000]
TEXTS = st.text(max_size=40) | st.sampled_from(["\x00", "\ud800", "\u202e", "'; drop table entries; --", "=cmd|'/c'"])
VALUES = (st.sampled_from(NUMBERS) | TEXTS | st.integers() | st.booleans() | st.none()
          | st.floats(allow_nan=True) | st.lists(st.integers(), max_size=3) | st.dictionaries(TEXTS, TEXTS, max_size=2))
FIELDS = sorted({k for r in RECORDS for k in r} | {"raw_payload", "duration_seconds_raw", "data_quality_flags"})


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))  # a traceback fails the test here
    out, err = capsys.readouterr()
    assert code in (0, 1, 2), (code, out, err)
    return code, out + err


def positioned(output: str, path: Path) -> bool:
    return re.search(re.escape(str(path)) + r":\d+", output) is not None


@st.composite
def entry_lines(draw: st.DrawFn) -> str:
    """A JSON lines file: sample records with hostile values, and hostile lines among them."""
    lines = []
    for record in draw(st.lists(st.sampled_from(RECORDS), min_size=1, max_size=3)):
        record = dict(record)
        for name, value in draw(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3)).items():
            record[name] = value
        lines.append(json.dumps(record, ensure_ascii=draw(st.booleans())).replace("NaN", draw(
            st.sampled_from(["NaN", "1e999999", "[" * 3000]))))
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(DEEP) | st.text(max_size=60)))
    return "\n".join(lines)


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


@given(text=entry_lines(), suffix=st.sampled_from([".jsonl", ".json", ".txt"]))
@BOUNDED
def test_validate_hostile_entry_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str,
                                     suffix: str) -> None:
    path = write(tmp_path / f"entries{suffix}", text if suffix != ".json" else f"[{text.replace(chr(10), ',')}]")
    code, output = cli(capsys, "validate", str(path), "-r", str(RULES), "--format", "summary", *PERIOD)
    if code == 2:
        assert positioned(output, path), output


@pytest.mark.parametrize("text", DEEP + [json.dumps({**RECORDS[0], "hours_billed": n}) for n in NUMBERS[:8]])
def test_the_known_past_failures_are_refused_with_a_position(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           text: str) -> None:
    for name in ("entries.jsonl", "entries.json"):
        path = write(tmp_path / name, text)
        code, output = cli(capsys, "validate", str(path), "-r", str(RULES), *PERIOD)
        assert code == 2 and positioned(output, path), output


@st.composite
def rule_files(draw: st.DrawFn) -> str:
    """The bundled rule file with a line replaced or a value made hostile, or nested far too deep."""
    lines = RULES_TEXT.splitlines()
    choice = draw(st.integers(0, 3))
    if choice == 0:
        at = draw(st.integers(0, len(lines) - 1))
        lines[at] = draw(st.sampled_from(["  - " + "[" * 3000, "x: " + "{a: " * 3000, "rules: *nowhere",
                                          "a: &a [*a]", "\t- id: 1", "  max: 1e999999", "  max: .nan"])
                         | st.text(max_size=40))
    elif choice == 1:
        numbers = [i for i, line in enumerate(lines) if re.search(r": \d", line)]
        at = draw(st.sampled_from(numbers))
        lines[at] = re.sub(r": \S.*", ": " + draw(st.sampled_from(NUMBERS)), lines[at])
    elif choice == 2:
        return "rules:\n" + "  " + "- " * draw(st.integers(60, 3000)) + "x\n"
    else:
        return "\n".join(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" if p else f"{c}: &{c} [x, x, x, x, x]"
                         for p, c in zip(" abcdefg", "abcdefgh", strict=True))
    return "\n".join(lines)


@given(text=rule_files())
@BOUNDED
def test_rules_check_hostile_rule_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "rules.yaml", text)
    code, output = cli(capsys, "rules", "check", str(path))
    assert code in (0, 2)
    if code == 2:
        assert re.search(re.escape(str(path)) + r":\d+:\d+:", output), output


CSV_HEADER = "Date,Timekeeper ID,Timekeeper,Client ID,Matter ID,Task Code,Activity Code,Hours,Rate,Amount,Narrative"
CSV_ROW = "2026-03-02,TK1002,\"Okafor, Daniel\",ACME01,2026-0017,L210,A103,1.5,925.00,1387.50,Drafted answer"


@st.composite
def csv_exports(draw: st.DrawFn) -> bytes:
    cells = CSV_ROW.split(",")
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        row = list(cells)
        for at in draw(st.lists(st.integers(0, len(row) - 1), max_size=3)):
            row[at] = draw(st.sampled_from(NUMBERS) | st.text(max_size=30))
        rows.append(",".join(row))
    text = "\n".join([CSV_HEADER, *rows])
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))] + draw(st.sampled_from(['"', "\x00", "\r", "\ufeff", ",,,,"]))
    data = text.encode("utf-8", "surrogatepass")
    return data if draw(st.integers(0, 4)) else data + draw(st.binary(max_size=20))


@given(data=csv_exports())
@BOUNDED
def test_validate_hostile_csv_through_a_mapping(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                data: bytes) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    code, output = cli(capsys, "validate", str(path), "-r", str(RULES), "--mapping", "generic-time", *PERIOD)
    if code == 2:
        assert positioned(output, path), output


LEDES = "\n".join([
    "LEDES1998B[]",
    "INVOICE_DATE|INVOICE_NUMBER|CLIENT_ID|LAW_FIRM_MATTER_ID|INVOICE_TOTAL|BILLING_START_DATE|BILLING_END_DATE|"
    "INVOICE_DESCRIPTION|LINE_ITEM_NUMBER|EXP/FEE/INV_ADJ_TYPE|LINE_ITEM_NUMBER_OF_UNITS|LINE_ITEM_ADJUSTMENT_AMOUNT|"
    "LINE_ITEM_TOTAL|LINE_ITEM_DATE|LINE_ITEM_TASK_CODE|LINE_ITEM_EXPENSE_CODE|LINE_ITEM_ACTIVITY_CODE|"
    "TIMEKEEPER_ID|LINE_ITEM_DESCRIPTION|LAW_FIRM_ID|LINE_ITEM_UNIT_COST|TIMEKEEPER_NAME|TIMEKEEPER_CLASSIFICATION|"
    "CLIENT_MATTER_ID[]",
    "20260401|HM7|ACME01|2026-0017|1950.00|20260301|20260331|March|1|F|2.00|0|1850.00|20260302|L210||A103|TK1002|"
    "Drafted answer|12-3456789|925.00|Okafor, Daniel|PARTNR|ACME-7702[]",
    "20260401|HM7|ACME01|2026-0017|1950.00|20260301|20260331|March|2|E|1|0|100.00|20260303||E107|||Courier|"
    "12-3456789|100.00|||ACME-7702[]",
])


@st.composite
def ledes_files(draw: st.DrawFn) -> bytes:
    lines = LEDES.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        fields = lines[at].split("|")
        where = draw(st.integers(0, len(fields) - 1))
        hostile = st.sampled_from([*NUMBERS, "", "[]", "|||", "99999999", "20261399"]) | st.text(max_size=20)
        fields[where] = draw(hostile)
        lines[at] = "|".join(fields)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(DEEP) | st.text(max_size=50)))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@given(data=ledes_files())
@BOUNDED
def test_validate_hostile_ledes_files(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "invoice.txt"
    path.write_bytes(data)
    code, output = cli(capsys, "validate", str(path), "-r", str(RULES), *PERIOD)
    if code == 2:
        assert positioned(output, path), output


def counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    tables = MetaData()
    with sessions() as session:
        tables.reflect(session.get_bind())
        return {name: session.scalar(select(func.count()).select_from(table)) or 0
                for name, table in tables.tables.items() if name != "alembic_version"}


@given(text=entry_lines(), csv=csv_exports(), through_mapping=st.booleans())
@settings(BOUNDED, max_examples=25)
def test_ingest_of_a_hostile_file_writes_all_or_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       sessions: sessionmaker[Session], db_url: str,
                                                       monkeypatch: pytest.MonkeyPatch, text: str, csv: bytes,
                                                       through_mapping: bool) -> None:
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    if through_mapping:
        path = tmp_path / "export.csv"
        path.write_bytes(csv)
        argv = ["ingest", str(path), "--mapping", "generic-time", "--as-of", "2026-04-06"]
    else:
        path = write(tmp_path / "entries.jsonl", text)
        argv = ["ingest", str(path), "--as-of", "2026-04-06"]
    before = counts(sessions)
    code, output = cli(capsys, *argv)
    after = counts(sessions)
    if code == 2:
        assert positioned(output, path), output
        assert after == before  # nothing half-written
    else:
        assert code == 0, output
        assert re.search(r"batch \d+: \d+ received", output), output


def test_an_ingest_refused_late_leaves_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               sessions: sessionmaker[Session], db_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Good records first, one hostile record last: the file is refused as a whole and nothing is stored."""
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    lines = SAMPLE.read_text().splitlines()[:50] + ["[" * 5000 + "]" * 5000]
    path = write(tmp_path / "entries.jsonl", "\n".join(lines))
    before = counts(sessions)
    code, output = cli(capsys, "ingest", str(path), "--as-of", "2026-04-06")
    assert code == 2 and f"{path}:51:" in output, output
    assert counts(sessions) == before
    path = write(tmp_path / "entries.jsonl", "\n".join(lines[:50]))
    assert cli(capsys, "ingest", str(path), "--as-of", "2026-04-06")[0] == 0
    assert counts(sessions) != before  # the same records without the hostile one do land
