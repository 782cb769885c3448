"""``ocgate timekeepers import|list|show|rates`` on SQLite and PostgreSQL, as firm IT keeps the table and a
rule author takes a rate freeze from it."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.cli import main
from api.cli.timekeepers import WIDTH, _flow_lines, _yaml_key
from engine.model import Entry
from engine.rules.yamlpos import parse
from engine.store.db import make_engine, session_factory
from engine.workflows import timekeepers
from tests.api.cli.test_cli import cli
from tests.conftest import REPO, decisive, flagged, load_rules, make_entry, only, run

SAMPLE = REPO / "engine" / "data" / "samples" / "timekeepers.csv"


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[str]:
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    yield db_url


def test_import_list_and_show(capsys: pytest.CaptureFixture[str], database: str) -> None:
    code, out, _ = cli(capsys, "timekeepers", "import", str(SAMPLE))
    assert (code, out) == (0, f"{SAMPLE}: 23 new, 0 changed, 0 unchanged; 0 rates and 0 source ids no longer in "
                              "the file removed\n")
    code, out, _ = cli(capsys, "timekeepers", "import", str(SAMPLE))
    assert code == 0 and "0 new, 0 changed, 23 unchanged" in out
    code, out, _ = cli(capsys, "timekeepers", "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 24 and lines[0].split() == ["LEDES", "ID", "CLASS", "NAME", "TITLE",
                                                                    "SOURCE", "IDS"]
    by_id = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(by_id) == sorted(by_id)
    assert by_id["TK1002"] == ["TK1002", "PARTNR", "Okafor,", "Daniel", "Partner", "clio:345679,",
                               "efimis:e0000000-0000-4000-8000-000000001002,", "sample:TK1002"]
    assert by_id["TK1012"][:2] == ["TK1012", "LGLINT"] and by_id["INV5101"][:2] == ["INV5101", "INVSTG"]
    code, out, _ = cli(capsys, "timekeepers", "show", "TK1012")
    assert code == 0 and out.splitlines() == [
        "TK1012  Patel, Arjun  LGLINT  (Law Clerk)",
        "  source id  clio:345689",
        "  source id  efimis:e0000000-0000-4000-8000-000000001012",
        "  source id  sample:TK1012",
        "  rate       GBP     115.00  from 2026-01-01 to 2026-08-31",
        "  rate       USD     150.00  from 2026-01-01 to 2026-08-31"]
    code, out, _ = cli(capsys, "timekeepers", "show", "TK1002")
    assert out.splitlines()[-3:] == [
        "  rate       GBP     695.00  from 2025-01-01 open-ended",
        "  rate       USD     875.00  from 2025-01-01 to 2025-12-31 (the next rate starts)",
        "  rate       USD     925.00  from 2026-01-01 open-ended"]


def test_a_bad_file_is_refused_with_positions(capsys: pytest.CaptureFixture[str], database: str,
                                              tmp_path: Path) -> None:
    bad = tmp_path / "hr-export.csv"
    bad.write_text(SAMPLE.read_text() + "TK1013,Ines,Alves,Rainmaker,,sample,TK1013,1.000,usd,2026-1-1,\n")
    line = len(SAMPLE.read_text().splitlines()) + 1
    code, out, err = cli(capsys, "timekeepers", "import", str(bad))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"ocgate: {bad}:{line}: effective_from: '2026-1-1' is not a date: write YYYY-MM-DD",
        f"ocgate: {bad}:{line}: title: 'Rainmaker' has no default classification: fill in the classification column",
        f"ocgate: {bad}: 2 problems; nothing was imported"]
    code, out, _ = cli(capsys, "timekeepers", "list")
    assert code == 0 and len(out.splitlines()) == 1  # the header only: nothing was imported
    code, _, err = cli(capsys, "timekeepers", "import", str(tmp_path / "missing.csv"))
    assert code == 2 and "cannot read" in err
    code, _, err = cli(capsys, "timekeepers", "show", "TK404")
    assert code == 2 and err == "ocgate: no timekeeper with LEDES id TK404\n"


# ocgate timekeepers rates --on DATE: the rates a rate freeze names, from the table -----------------------

RATES = """\
ledes_id,first_name,last_name,title,classification,source_system,source_user_id,rate,currency,effective_from,effective_to
TK1,Ada,Byrne,Partner,,clio,101,1000.00,USD,2025-01-01,
TK1,,,,,mattero,m-1,1100.00,USD,2026-01-01,
TK1,,,,,,,800.00,GBP,2025-01-01,2025-12-31
TK2,Ben,Carter,Associate,,clio,102,500.5,USD,2025-03-01,2025-12-31
TK2,,,,,,,525.1234,USD,2026-02-01,
1003,Cleo,Dunn,Paralegal,,mattero,m-3,300,USD,2025-01-01,
NO,Nils,Olsen,Associate,,clio,104,610.00,USD,2025-06-01,
TK5,Eve,Falk,Associate,,clio,105,,,,
TK6,Finn,Gray,Partner,,clio,106,400.00,GBP,2025-01-01,
"""

# The USD rates in force on each day: on a start, on a last day, in a gap, after every open-ended rate.
USD_ON = {
    "2025-01-01": {"TK1": "1000.00", "1003": "300"},
    "2025-03-01": {"TK1": "1000.00", "TK2": "500.5", "1003": "300"},
    "2025-12-31": {"TK1": "1000.00", "TK2": "500.5", "1003": "300", "NO": "610.00"},
    "2026-01-01": {"TK1": "1100.00", "1003": "300", "NO": "610.00"},  # TK2 is in a gap until 2026-02-01
    "2030-06-01": {"TK1": "1100.00", "TK2": "525.1234", "1003": "300", "NO": "610.00"},
}


@pytest.fixture
def rate_table(database: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    path = tmp_path / "rates.csv"
    path.write_text(RATES)
    assert main(["timekeepers", "import", str(path)]) == 0
    capsys.readouterr()
    return database


def _freeze(out: str) -> dict[str, Any]:
    """The printed block read as a rule file reads it: rates as Decimals built from the text as written."""
    return parse(out, "<stdout>").data["rate_freeze"]


@pytest.mark.parametrize("day", list(USD_ON))
def test_rates_on_a_day_as_a_rate_freeze_block(capsys: pytest.CaptureFixture[str], rate_table: str, day: str) -> None:
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", day, "--currency", "usd")
    expected = USD_ON[day]
    assert code == 0 and out.startswith(f"# USD standard rates in force on {day}, from the timekeeper table\n")
    assert yaml.safe_load(out)["rate_freeze"]["as_of"] == dt.date.fromisoformat(day)
    by_tk = yaml.safe_load(out)["rate_freeze"]["by_timekeeper"]
    assert {str(k): Decimal(str(v)) for k, v in by_tk.items()} == {k: Decimal(v) for k, v in expected.items()}
    assert all(isinstance(k, str) for k in by_tk)  # 1003 and NO are quoted, so YAML reads them as text
    frozen = _freeze(out)["by_timekeeper"]
    assert {k: str(v) for k, v in frozen.items()} == expected  # exactly as stored: 300, 500.5, 1100.00
    left_out = [line.split(" (")[0].removeprefix("ocgate: ") for line in err.splitlines()]
    assert sorted(left_out) == sorted({"TK1", "TK2", "1003", "NO", "TK5", "TK6"} - expected.keys())


def test_rates_printed_and_why_the_others_are_left_out(capsys: pytest.CaptureFixture[str], rate_table: str) -> None:
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2026-01-01", "--currency", "USD")
    assert code == 0 and out == (
        "# USD standard rates in force on 2026-01-01, from the timekeeper table\n"
        "rate_freeze:\n"
        "  as_of: 2026-01-01\n"
        '  by_timekeeper: {"1003": 300, "NO": 610.00, TK1: 1100.00}\n')
    assert err.splitlines() == [
        "ocgate: TK2 (Carter, Ben): no USD rate in force on 2026-01-01 (the last ended 2025-12-31; the next starts "
        "2026-02-01); left out",
        "ocgate: TK5 (Falk, Eve): the table keeps no standard rate for them; left out",
        "ocgate: TK6 (Gray, Finn): no USD rate in force on 2026-01-01; in force: GBP 400.00; left out"]
    # Without --currency: each timekeeper's one currency in force, and TK1's two are named.
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2025-06-01", "--timekeepers", "TK1,TK2,TK9")
    assert code == 0 and _freeze(out)["by_timekeeper"] == {"TK2": Decimal("500.5")}
    assert err.splitlines() == [
        "ocgate: TK1 (Byrne, Ada): rates in force in 2 currencies (GBP 800.00, USD 1000.00): name the rule set's "
        "currency with --currency; left out",
        "ocgate: TK9: not in the timekeeper table; left out"]
    # One timekeeper in USD, another only in GBP: a freeze is in one currency, so the currency must be named.
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2026-03-01")
    assert (code, out) == (2, "") and err == ("ocgate: the rates in force on 2026-03-01 are in GBP and USD: name the "
                                              "rule set's currency with --currency\n")


def test_rates_by_source_and_as_a_table_or_json(capsys: pytest.CaptureFixture[str], rate_table: str) -> None:
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2026-03-01", "--currency", "USD", "--source",
                         "mattero", "--format", "table")
    assert code == 0 and err == "" and out.splitlines() == [
        "# USD standard rates in force on 2026-03-01, from the timekeeper table (timekeepers with a mattero user id)",
        "LEDES ID             NAME                         CUR       RATE  IN FORCE",
        "1003                 Dunn, Cleo                   USD        300  2025-01-01 open-ended",
        "TK1                  Byrne, Ada                   USD    1100.00  2026-01-01 open-ended"]
    assert cli(capsys, "sources", "add", "acme-clio", "--kind", "clio", "--set", "region=us",
               "--set", "client_id=x")[0] == 0
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2025-12-31", "--currency", "GBP", "--source",
                         "acme-clio", "--format", "json", "--timekeepers", "TK1,1003")
    assert code == 0 and err == "ocgate: 1003 (Dunn, Cleo): has no clio user id in the table; left out\n"
    assert json.loads(out) == {"as_of": "2025-12-31", "currency": "GBP", "source_system": "clio",
                               "by_timekeeper": {"TK1": "800.00"},
                               "left_out": [{"ledes_id": "1003", "reason": "has no clio user id in the table"}]}
    code, out, _ = cli(capsys, "timekeepers", "rates", "--on", "2025-12-31", "--currency", "GBP", "--source",
                       "acme-clio")
    assert code == 0 and out.splitlines()[0].endswith("(timekeepers with a clio user id; source acme-clio)")


def test_no_rate_and_bad_input(capsys: pytest.CaptureFixture[str], rate_table: str) -> None:
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2024-12-31", "--currency", "USD")
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == "ocgate: no timekeeper has a USD standard rate in force on 2024-12-31"
    assert "ocgate: TK1 (Byrne, Ada): no USD rate in force on 2024-12-31 (the next starts 2025-01-01); left out" in err
    code, out, err = cli(capsys, "timekeepers", "rates", "--on", "2024-12-31", "--format", "json")
    assert code == 1 and json.loads(out)["by_timekeeper"] == {} and len(json.loads(out)["left_out"]) == 6
    code, _, err = cli(capsys, "timekeepers", "rates", "--on", "2026-01-01", "--source", "trackops")
    assert code == 2 and err == ("ocgate: no source named 'trackops' (configured sources: none; source systems in "
                                 "the timekeeper table: clio, mattero)\n")
    code, _, err = cli(capsys, "timekeepers", "rates", "--on", "2026-01-01", "--currency", "US$")
    assert code == 2 and err == "ocgate: --currency 'US$' is not an ISO 4217 currency code (such as USD)\n"
    code, _, err = cli(capsys, "timekeepers", "rates", "--on", "2026-01-01", "--timekeepers", "TK1,,TK2")
    assert code == 2 and "write LEDES ids separated by commas" in err
    with pytest.raises(SystemExit) as exited:
        main(["timekeepers", "rates", "--on", "2026-02-30"])
    assert exited.value.code == 2 and "'2026-02-30' is not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_the_rates_are_those_enrichment_finds(capsys: pytest.CaptureFixture[str], rate_table: str) -> None:
    """A freeze taken on a day holds the rates an entry worked that day was enriched with."""
    engine = make_engine(rate_table)
    try:
        with session_factory(engine)() as session:
            directory = timekeepers.Directory.load(session, "clio")
    finally:
        engine.dispose()
    compared = 0
    for day in ["2024-12-31", "2025-02-28", *USD_ON, "2026-01-31", "2026-02-01"]:
        for currency in ("USD", "GBP", None):
            matches = [m for user in ("101", "102", "104", "105", "106")
                       if (m := directory.resolve(user, dt.date.fromisoformat(day), currency)) is not None]
            enriched = {m.ledes_id: m.standard_rate for m in matches if m.standard_rate is not None}
            code, out, _ = cli(capsys, "timekeepers", "rates", "--on", day, "--source", "clio", "--format", "json",
                               *(["--currency", currency] if currency else []))
            if len({m.currency for m in matches if m.standard_rate is not None}) > 1:
                assert code == 2  # in force in several currencies across the team: the command asks for one
                continue
            assert code == (0 if enriched else 1)
            assert {tk: Decimal(rate) for tk, rate in json.loads(out)["by_timekeeper"].items()} == enriched
            compared += 1
    assert compared >= 16


def _hour(source_id: str, tk: str, rate: str) -> Entry:
    return make_entry(source_id=source_id, timekeeper_ledes_id=tk, rate=rate, hours_billed="1", currency="USD",
                      law_firm_matter_id="M1", timekeeper_classification="PARTNR", work_date="2026-03-02")


def test_a_freeze_from_the_table_caps_the_rates(capsys: pytest.CaptureFixture[str], rate_table: str,
                                                backend: str) -> None:
    code, out, _ = cli(capsys, "timekeepers", "rates", "--on", "2025-03-01", "--currency", "USD")
    assert code == 0
    block = textwrap.indent(out, " " * 12)  # pasted under the override's matter
    ruleset = load_rules(f"""
    - id: FREEZE
      title: Rates frozen when the matter opened
      type: rate_cap
      params:
        matter_overrides:
          - matter: M1
{block}""", header="currency: USD\n")
    entries = [_hour("tk1-at", "TK1", "1000.00"), _hour("tk1-over", "TK1", "1000.01"),
               _hour("tk2-at", "TK2", "500.50"), _hour("tk2-over", "TK2", "500.51"),
               _hour("1003-at", "1003", "300"), _hour("1003-over", "1003", "300.01"),
               _hour("no-not-frozen", "NO", "5000")]  # NO's rate started after the freeze: not in it
    violations = run(entries, ruleset, backend)
    assert flagged(violations) == {"tk1-over", "tk2-over", "1003-over"}
    assert decisive(only(violations, "tk2-over"))["basis"].startswith(
        "matter override for M1, timekeeper TK2, rate frozen as of 2025-03-01 (")


def test_a_long_freeze_wraps_and_reads_back() -> None:
    """A firm's whole table in one flow mapping: wrapped lines that a rule file still reads as one mapping."""
    ids = [f"TK{n}" for n in range(1000, 1040)] + ["007", "2026-01-01", "y", "Off", "null", "A.B-C_D"]
    rates = {tk: f"{n + 100}.{n % 100:02d}" for n, tk in enumerate(ids)}
    text = "rate_freeze:\n" + _flow_lines("  by_timekeeper: ", [f"{_yaml_key(tk)}: {r}" for tk, r in rates.items()])
    assert len(text.splitlines()) > 3 and all(len(line) <= WIDTH for line in text.splitlines())
    read = parse(text, "<text>").data["rate_freeze"]["by_timekeeper"]
    assert {tk: str(rate) for tk, rate in read.items()} == rates
    assert yaml.safe_load(text)["rate_freeze"]["by_timekeeper"].keys() == rates.keys()  # all text, none a bool
