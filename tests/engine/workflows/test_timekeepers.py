"""The firm's timekeeper table: importing CSV files (positions, all or nothing, idempotent, in place), rates by
effective date, and the directory connectors use to enrich canonical entries."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import NotFound
from engine.model import Entry
from engine.store.db import transaction
from engine.store.models import Timekeeper, TimekeeperRate, TimekeeperSourceId
from engine.workflows import timekeepers
from engine.workflows.timekeepers import (
    AMBIGUOUS_RATE_CURRENCY,
    NO_STANDARD_RATE,
    UNKNOWN_TIMEKEEPER,
    ImportResult,
    Rate,
    SourceId,
    TimekeeperFileError,
    import_csv,
    read_csv,
)
from tests.conftest import REPO, make_entry, make_expense

HEADER = ",".join(timekeepers.COLUMNS)
SAMPLE = REPO / "engine" / "data" / "samples" / "timekeepers.csv"
# Okafor's rate rises on 2026-01-01; Chen's one rate ends on 2026-06-30 and nothing follows.
TABLE = f"""{HEADER}
TK1002,Daniel,Okafor,Partner,,clio,3001,875.00,USD,2025-01-01,
TK1002,,,,,,,925.00,USD,2026-01-01,
TK1002,,,,,mattero,741-A,,,,
TK1005,Grace,Chen,Senior Associate,,clio,3002,575.00,USD,2026-01-01,2026-06-30
"""


def csv_text(*rows: str) -> str:
    return "\n".join((HEADER, *rows)) + "\n"


def load(sessions: sessionmaker[Session], text: str, source: str = "tk.csv") -> ImportResult:
    with transaction(sessions) as session:
        return import_csv(session, text, source=source)


def problems(text: str) -> list[str]:
    with pytest.raises(TimekeeperFileError) as refused:
        read_csv(text, source="tk.csv")
    return [str(p) for p in refused.value.problems]


def directory(sessions: sessionmaker[Session], source_system: str = "clio") -> timekeepers.Directory:
    with sessions() as session:
        return timekeepers.Directory.load(session, source_system)


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def clio(**fields: object) -> Entry:
    return make_entry(**{"source_system": "clio", "currency": "USD", **fields})


# Importing -----------------------------------------------------------------------------------------------

def test_the_sample_file_loads_the_sample_team(sessions: sessionmaker[Session]) -> None:
    result = load(sessions, SAMPLE.read_text(), str(SAMPLE))
    # The Chicago team (Clio, and Efimis in London), the investigators (Trackops), the Sydney office (mattero).
    team = [f"TK{n}" for n in range(1001, 1013)]
    sydney = ["SYD088", "SYD741", "SYD742", "SYD743", "SYD744", "SYD745"]
    investigators = [f"INV{n}" for n in range(5101, 5106)]
    assert result.created == team + sydney + investigators and result.unchanged == 0
    with sessions() as session:
        okafor = timekeepers.get(session, "TK1002")
        assert [t.ledes_id for t in timekeepers.timekeepers(session)] == sorted(result.created)
    assert (okafor.name, okafor.first_name, okafor.last_name, okafor.classification, okafor.title) == (
        "Okafor, Daniel", "Daniel", "Okafor", "PARTNR", "Partner")
    assert okafor.source_ids == (SourceId("clio", "345679"), SourceId("efimis", "e0000000-0000-4000-8000-000000001002"),
                                 SourceId("sample", "TK1002"))  # the fake Clio's user and fake Efimis' fee earner
    assert okafor.rates == (Rate("GBP", dt.date(2025, 1, 1), None, Decimal("695.00")),
                            Rate("USD", dt.date(2025, 1, 1), None, Decimal("875.00")),
                            Rate("USD", dt.date(2026, 1, 1), None, Decimal("925.00")))


def test_rates_follow_their_effective_dates(sessions: sessionmaker[Session]) -> None:
    load(sessions, TABLE)
    tk = directory(sessions)
    rate = {day: tk.resolve("3001", dt.date.fromisoformat(day), "USD").standard_rate
            for day in ("2024-12-31", "2025-01-01", "2025-12-31", "2026-01-01", "2030-06-01")}
    assert rate == {"2024-12-31": None, "2025-01-01": Decimal("875.00"), "2025-12-31": Decimal("875.00"),
                    "2026-01-01": Decimal("925.00"), "2030-06-01": Decimal("925.00")}
    assert tk.resolve("3001", dt.date(2024, 12, 31), "USD").rate_flag == NO_STANDARD_RATE
    # An explicit end is inclusive; after it, Chen has no rate in force.
    assert tk.resolve("3002", dt.date(2026, 6, 30), "USD").standard_rate == Decimal("575.00")
    after = tk.resolve("3002", dt.date(2026, 7, 1), "USD")
    assert (after.standard_rate, after.rate_flag, after.classification) == (None, NO_STANDARD_RATE, "ASSOC")
    assert tk.resolve("3001", dt.date(2026, 3, 2), "GBP").rate_flag == NO_STANDARD_RATE  # no GBP rate is kept


def test_overlapping_rate_periods_are_refused_with_their_positions(sessions: sessionmaker[Session]) -> None:
    text = csv_text("TK1,Ann,Lee,Partner,,clio,1,900.00,USD,2025-01-01,2026-01-31",
                    "TK1,,,,,,,950.00,USD,2026-01-01,",
                    "TK1,,,,,,,700.00,GBP,2025-06-01,",  # another currency: no overlap
                    "TK2,Bo,Kim,Partner,,clio,2,900.00,USD,2025-01-01,",
                    "TK2,,,,,,,950.00,USD,2026-01-01,")  # open-ended: ends when the next starts
    assert problems(text) == ["tk.csv:2: effective_to: 2026-01-31 overlaps the USD rate from 2026-01-01 on line 3 "
                              "(periods of one currency may not overlap)"]
    with pytest.raises(TimekeeperFileError):
        load(sessions, text)
    with sessions() as session:
        assert [count(session, m) for m in (Timekeeper, TimekeeperSourceId, TimekeeperRate)] == [0, 0, 0]


def test_two_rates_from_one_day_are_refused_but_a_repeated_row_is_not() -> None:
    assert problems(csv_text("TK1,Ann,Lee,Partner,,,,900.00,USD,2026-01-01,",
                             "TK1,,,,,,,950.00,USD,2026-01-01,")) == [
        "tk.csv:3: effective_from: a second USD rate from 2026-01-01 (line 2 has 900.00, open-ended)"]
    [record] = read_csv(csv_text("TK1,Ann,Lee,Partner,,clio,1,900.00,USD,2026-01-01,",
                                 "TK1,Ann,Lee,Partner,,mattero,9,900.00,USD,2026-01-01,"))
    assert len(record.rates) == 1 and len(record.source_ids) == 2


def test_a_timekeeper_has_a_user_id_in_each_source(sessions: sessionmaker[Session]) -> None:
    load(sessions, TABLE)
    assert directory(sessions, "mattero").resolve("741-A", dt.date(2026, 3, 2), "USD").ledes_id == "TK1002"
    assert directory(sessions, "clio").resolve("3001", dt.date(2026, 3, 2), "USD").ledes_id == "TK1002"
    assert directory(sessions, "clio").resolve("741-A", dt.date(2026, 3, 2), "USD") is None  # not a Clio user
    assert len(directory(sessions, "clio")) == 2 and len(directory(sessions, "trackops")) == 0


def test_a_source_user_is_one_timekeeper(sessions: sessionmaker[Session]) -> None:
    assert problems(csv_text("TK1,Ann,Lee,Partner,,clio,77,,,,", "TK2,Bo,Kim,Partner,,Clio,77,,,,")) == [
        "tk.csv:3: source_user_id: clio user 77 is already TK1's (line 2); a source user is one timekeeper"]
    load(sessions, TABLE)
    text = csv_text("TK9,Ann,Lee,Partner,,clio,3001,,,,")
    with pytest.raises(TimekeeperFileError) as refused:
        load(sessions, text)
    assert [str(p) for p in refused.value.problems] == [
        "tk.csv:2: source_user_id: clio user 3001 is TK1002's in the table, and this file does not list TK1002: "
        "list TK1002 without it to move it to TK9"]
    # Listing both moves the id (its row is reassigned). TK1002 is listed without the mattero id or any rate: the
    # file is the whole truth about a timekeeper it lists, so those go.
    result = load(sessions, csv_text("TK9,Ann,Lee,Partner,,clio,3001,,,,", "TK1002,Daniel,Okafor,Partner,,,,,,,"))
    assert (result.created, result.updated, result.source_ids_removed, result.rates_removed) == (
        ["TK9"], ["TK1002"], 1, 2)
    with sessions() as session:
        assert timekeepers.get(session, "TK1002").source_ids == ()
        assert timekeepers.get(session, "TK9").source_ids == (SourceId("clio", "3001"),)
    assert directory(sessions).resolve("3001", dt.date(2026, 3, 2), "USD").ledes_id == "TK9"


def test_titles_map_to_classifications_and_the_column_overrides() -> None:
    records = read_csv(csv_text("A1,A,B,Senior Associate,,,,,,,", "A2,A,B,  of   COUNSEL ,,,,,,,",
                                "A3,A,B,Legal Assistant,,,,,,,", "A4,A,B,Partner,ofcoun,,,,,,",
                                "A5,A,B,Practice Support Lead,LGPRMG,,,,,,", "A6,A,B,,PARALG,,,,,,"))
    assert [(r.classification, r.title) for r in records] == [
        ("ASSOC", "Senior Associate"), ("OFCOUN", "of   COUNSEL"), ("LGLAST", "Legal Assistant"),
        ("OFCOUN", "Partner"), ("LGPRMG", "Practice Support Lead"), ("PARALG", None)]
    assert problems(csv_text("B1,A,B,Rainmaker,,,,,,,", "B2,A,B,,,,,,,,", "B3,A,B,Partner,PT,,,,,,",
                             "B4,A,B,,XYZ,,,,,,")) == [
        "tk.csv:2: title: 'Rainmaker' has no default classification: fill in the classification column",
        "tk.csv:3: classification: missing for B2: give a classification or a title that maps to one",
        "tk.csv:4: classification: PT is a pre-2014 code: write the 2014 code (PARTNR); clients that want legacy "
        "codes get them from their invoicing profile",
        "tk.csv:5: classification: 'XYZ' is not a LEDES timekeeper classification"]


def test_importing_the_same_file_again_changes_nothing(sessions: sessionmaker[Session]) -> None:
    load(sessions, SAMPLE.read_text())
    with sessions() as session:
        before = session.execute(select(Timekeeper.id, Timekeeper.updated_at).order_by(Timekeeper.id)).all()
        rate_ids = session.scalars(select(TimekeeperRate.id).order_by(TimekeeperRate.id)).all()
    result = load(sessions, SAMPLE.read_text())
    assert (result.created, result.updated, result.unchanged, result.rates_removed) == ([], [], 23, 0)
    with sessions() as session:
        assert session.execute(select(Timekeeper.id, Timekeeper.updated_at).order_by(Timekeeper.id)).all() == before
        assert session.scalars(select(TimekeeperRate.id).order_by(TimekeeperRate.id)).all() == rate_ids


def test_a_corrected_file_updates_in_place_and_replaces_a_timekeepers_rates(sessions: sessionmaker[Session]) -> None:
    load(sessions, TABLE)
    with sessions() as session:
        okafor_id = session.scalar(select(Timekeeper.id).where(Timekeeper.ledes_id == "TK1002"))
        chen_before = timekeepers.get(session, "TK1005")
    # Okafor: renamed, 2025 rate dropped, 2026 rate corrected, the mattero id gone. Chen is not in the file.
    result = load(sessions, csv_text("TK1002,Dan,Okafor,Partner,,clio,3001,930.00,USD,2026-01-01,"))
    assert (result.created, result.updated, result.unchanged) == ([], ["TK1002"], 0)
    assert (result.rates_removed, result.source_ids_removed) == (1, 1)
    with sessions() as session:
        okafor = timekeepers.get(session, "TK1002")
        assert session.scalar(select(Timekeeper.id).where(Timekeeper.ledes_id == "TK1002")) == okafor_id
        assert timekeepers.get(session, "TK1005") == chen_before  # untouched
    assert (okafor.name, okafor.first_name) == ("Okafor, Dan", "Dan")
    assert okafor.rates == (Rate("USD", dt.date(2026, 1, 1), None, Decimal("930.00")),)
    assert okafor.source_ids == (SourceId("clio", "3001"),)


def test_every_bad_cell_is_reported_as_file_line_column() -> None:
    text = csv_text(
        ",Ann,Lee,Partner,,,,,,,",
        "TK 1,Ann,Lee,Partner,,,,,,,",
        "TK2,Ann,Lee,Partner,,clio,,1050,USD,2026-01-01,",
        "TK3,Ann,Lee,Partner,,,,\"1,050.00\",usd,01/01/2026,",
        "TK4,Ann,Lee,Partner,,,,-5,EURO,2026-02-30,2025-01-01",
        "TK5,Ann,Lee,Partner,,,,,USD,2026-01-01,",
        "TK6,Ann,Lee,Partner,,,,1E3,,,",
        "TK7,Ann,Lee,Partner,,,,0,USD,2026-03-01,2026-02-01",
        "TK8,Ann,,Partner,,,,,,,",
        "TK8,Anne,,,,,,,,,",
        "TK9,Ann,Lee,Partner,,,,,,,,extra",
        "TK10,Ann|x,Lee,Partner,,,,,,,")
    assert problems(text) == [
        "tk.csv:2: ledes_id: missing (every row names its timekeeper's LEDES id)",
        "tk.csv:3: ledes_id: 'TK 1' is not a LEDES timekeeper id (letters, digits, '.', '-' and '_', at most 20 "
        "characters)",
        "tk.csv:4: source_user_id: missing (a source id is a source system and the user id in it)",
        "tk.csv:5: rate: '1,050.00' is not a standard rate: a positive amount such as 1050.00, at most 4 "
        "decimals, no currency sign or thousands separator",
        "tk.csv:5: effective_from: '01/01/2026' is not a date: write YYYY-MM-DD",
        "tk.csv:6: rate: '-5' is not a standard rate: a positive amount such as 1050.00, at most 4 "
        "decimals, no currency sign or thousands separator",
        "tk.csv:6: currency: 'EURO' is not an ISO 4217 currency code (such as USD)",
        "tk.csv:6: effective_from: '2026-02-30' is not a date: write YYYY-MM-DD",
        "tk.csv:7: rate: missing (currency and effective dates belong to a rate)",
        "tk.csv:8: rate: '1E3' is not a standard rate: a positive amount such as 1050.00, at most 4 "
        "decimals, no currency sign or thousands separator",
        "tk.csv:8: currency: missing (every rate has a currency; none is assumed)",
        "tk.csv:8: effective_from: missing (the first day the rate is in force)",
        "tk.csv:9: rate: '0' is not a standard rate: a positive amount such as 1050.00, at most 4 "
        "decimals, no currency sign or thousands separator",
        "tk.csv:9: effective_to: 2026-02-01 is before effective_from 2026-03-01",
        "tk.csv:10: last_name: missing for TK8 (LEDES invoices carry both names)",
        "tk.csv:11: first_name: 'Anne' differs from 'Ann' on line 10 (a timekeeper's rows must agree)",
        "tk.csv:12: row: 1 more value(s) than the header (quote values that contain commas)",
        "tk.csv:13: first_name: at most 100 characters, without '|', '[]' or control characters",
    ]


def test_the_header_is_checked_and_excel_exports_read() -> None:
    assert problems("ledes_id,name,efective_from\n") == [
        f"tk.csv:1: header: unknown column 'name' (the columns are {', '.join(timekeepers.COLUMNS)})",
        f"tk.csv:1: header: unknown column 'efective_from' (the columns are {', '.join(timekeepers.COLUMNS)})"]
    assert problems("first_name,first_name\n") == [
        "tk.csv:1: header: column 'first_name' appears twice",
        f"tk.csv:1: header: the header row needs a ledes_id column (the columns are {', '.join(timekeepers.COLUMNS)})"]
    excel = "\ufeffLEDES_ID, First_Name ,Last_Name,Title\r\nTK1,Ann,Lee,Partner\r\n,,,\r\n\r\n"
    [record] = read_csv(excel)
    assert (record.ledes_id, record.name, record.classification) == ("TK1", "Lee, Ann", "PARTNR")


def test_rows_from_another_system_are_numbered_like_a_file() -> None:
    rows = [{"ledes_id": "TK1", "first_name": "Ann", "last_name": "Lee", "title": "Partner",
             "rate": Decimal("1050.00"), "currency": "USD", "effective_from": dt.date(2026, 1, 1)},
            {"ledes_id": "TK2", "first_name": "Bo", "last_name": "Kim", "title": "Partner", "rate": 1050.5,
             "currency": "USD", "effective_from": "2026-01-01"},
            {"ledes_id": "TK3", "Name": "Cy Park"}]
    with pytest.raises(TimekeeperFileError) as refused:
        read_csv(rows, source="hr-api")
    assert [str(p) for p in refused.value.problems] == [
        "hr-api:3: rate: a float is not exact: pass the value as text or a Decimal",
        f"hr-api:4: name: unknown column (the columns are {', '.join(timekeepers.COLUMNS)})"]
    [record] = read_csv(rows[:1])
    assert record.rates == (Rate("USD", dt.date(2026, 1, 1), None, Decimal("1050.00")),)


def test_rates_stay_exact_through_the_store(sessions: sessionmaker[Session]) -> None:
    load(sessions, csv_text("TK1,Ann,Lee,Partner,,clio,1,1050.10,USD,2025-01-01,",
                            "TK1,,,,,,,333.3333,USD,2026-01-01,", "TK1,,,,,,,0.1,GBP,2026-01-01,"))
    with sessions() as session:
        stored = [str(r.rate) for r in timekeepers.get(session, "TK1").rates]
    assert stored == ["0.1", "1050.10", "333.3333"]  # GBP sorts first; the scale written is kept
    assert directory(sessions).resolve("1", dt.date(2025, 6, 1), "USD").standard_rate.as_tuple() == (
        Decimal("1050.10").as_tuple())
    assert problems(csv_text("TK1,Ann,Lee,Partner,,,,1.00001,USD,2026-01-01,"))[0].startswith(
        "tk.csv:2: rate: '1.00001' is not a standard rate")


def test_an_unknown_ledes_id_is_not_found(sessions: sessionmaker[Session]) -> None:
    with sessions() as session, pytest.raises(NotFound, match="no timekeeper with LEDES id TK404"):
        timekeepers.get(session, "TK404")


# Enriching entries ---------------------------------------------------------------------------------------

def test_enrich_fills_the_ledes_identity_and_the_standard_rate(sessions: sessionmaker[Session]) -> None:
    load(sessions, TABLE)
    tk = directory(sessions)
    before, on = clio(timekeeper_source_id="3001", work_date="2025-12-31"), clio(
        timekeeper_source_id="3001", work_date="2026-01-01", timekeeper_name="D. Okafor",
        timekeeper_first_name="Dan", timekeeper_ledes_id="3001", timekeeper_classification="AS")
    tk.enrich(before)
    tk.enrich(on)
    assert (before.timekeeper_ledes_id, before.timekeeper_classification, before.standard_rate) == (
        "TK1002", "PARTNR", Decimal("875.00"))
    assert (before.timekeeper_name, before.timekeeper_first_name, before.timekeeper_last_name) == (
        "Okafor, Daniel", "Daniel", "Okafor")
    # The table wins for the LEDES id and classification; the source's names stay where it gave them.
    assert (on.timekeeper_ledes_id, on.timekeeper_classification, on.standard_rate) == (
        "TK1002", "PARTNR", Decimal("925.00"))
    assert (on.timekeeper_name, on.timekeeper_first_name, on.timekeeper_last_name) == ("D. Okafor", "Dan", "Okafor")
    assert before.data_quality_flags == on.data_quality_flags == []


def test_enrich_flags_what_the_table_cannot_answer(sessions: sessionmaker[Session]) -> None:
    load(sessions, TABLE + "TK7,Ann,Lee,Partner,,clio,3007,,,,\n"  # keeps no standard rate
                           "TK8,Bo,Kim,Partner,,clio,3008,900.00,USD,2026-01-01,\n"
                           "TK8,,,,,,,700.00,GBP,2026-01-01,\n")
    tk = directory(sessions)
    cases = {
        "unknown user": (clio(timekeeper_source_id="9999", data_quality_flags=["MISSING_UTBMS"]),
                         ["MISSING_UTBMS", UNKNOWN_TIMEKEEPER]),
        "time entry naming nobody": (clio(), [UNKNOWN_TIMEKEEPER]),
        "expense naming nobody": (make_expense(source_system="clio"), []),
        "expense by an unknown user": (make_expense(source_system="clio", timekeeper_source_id="9999"),
                                       [UNKNOWN_TIMEKEEPER]),
        "after the rate ended": (clio(timekeeper_source_id="3002", work_date="2026-07-01"), [NO_STANDARD_RATE]),
        "no rate kept at all": (clio(timekeeper_source_id="3007"), []),
        "no currency, two in force": (clio(timekeeper_source_id="3008", currency=None), [AMBIGUOUS_RATE_CURRENCY]),
        "no currency, one in force": (clio(timekeeper_source_id="3001", currency=None), []),
    }
    for name, (entry, flags) in cases.items():
        tk.enrich(entry)
        assert entry.data_quality_flags == flags, name
    assert cases["no currency, one in force"][0].standard_rate == Decimal("925.00")
    assert cases["no currency, one in force"][0].currency is None  # the entry's currency is never defaulted
    expense = make_expense(source_system="clio", timekeeper_source_id="3001", currency="USD")
    tk.enrich(expense)
    assert (expense.timekeeper_ledes_id, expense.standard_rate) == ("TK1002", None)  # hourly rates are for time


def test_enrich_recomputes_its_flags_when_the_table_is_fixed(sessions: sessionmaker[Session]) -> None:
    entry = clio(timekeeper_source_id="3003", data_quality_flags=["REDACTED_SOURCE"])
    directory(sessions).enrich(entry)
    assert entry.data_quality_flags == ["REDACTED_SOURCE", UNKNOWN_TIMEKEEPER]
    directory(sessions).enrich(entry)
    assert entry.data_quality_flags == ["REDACTED_SOURCE", UNKNOWN_TIMEKEEPER]  # not twice
    load(sessions, csv_text("TK3,Ann,Lee,Partner,,clio,3003,900.00,USD,2026-01-01,"))
    directory(sessions).enrich(entry)
    assert (entry.data_quality_flags, entry.timekeeper_ledes_id) == (["REDACTED_SOURCE"], "TK3")
    with pytest.raises(ValueError, match="a mattero entry given to the clio directory"):
        directory(sessions).enrich(make_entry(source_system="mattero"))


def test_the_directory_loads_in_two_queries_and_enriches_fast(sessions: sessionmaker[Session]) -> None:
    load(sessions, SAMPLE.read_text())
    statements: list[str] = []
    with sessions() as session:
        event.listen(session.get_bind(), "before_cursor_execute", lambda *args: statements.append(args[2]))
        tk = timekeepers.Directory.load(session, "sample")
    assert len(statements) == 2 and len(tk) == 12
    entries = [make_entry(source_system="sample", source_id=str(n), timekeeper_source_id=f"TK{1001 + n % 13}",
                          work_date=dt.date(2026, 3, 1) + dt.timedelta(days=n % 31), currency="USD")
               for n in range(20_000)]
    started = time.perf_counter()
    for entry in entries:
        tk.enrich(entry)
    assert time.perf_counter() - started < 1.0  # about 0.08 s; a lookup per entry that queried would take minutes
    unknown = [e for e in entries if UNKNOWN_TIMEKEEPER in e.data_quality_flags]
    assert {e.timekeeper_source_id for e in unknown} == {"TK1013"} and len(unknown) == sum(
        n % 13 == 12 for n in range(20_000))
    assert {e.standard_rate for e in entries if e.timekeeper_ledes_id == "TK1001"} == {Decimal("1050.00")}
