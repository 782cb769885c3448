"""The evaluation context through the API and the command line: ``POST /v1/entries`` and the review actions take an
as-of date and a billing period (optional, validated, in the OpenAPI document); an entry keeps the context it was
judged with; and the sample generator agrees with the README's example commands."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from api.cli import main
from engine.entry_io import entry_record
from engine.samples import generate, suggested_context
from engine.store.models import EntryRow, ViolationRow
from tests.api.conftest import World
from tests.conftest import REPO, entry

MARCH = {"as_of": "2026-04-06", "period_start": "2026-03-01", "period_end": "2026-03-31"}


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.json()["error"]["code"] == code
    return response.json()["error"]


def rules_of(world: World, source_id: str) -> set[str]:
    with world.sessions() as session:
        row = session.scalar(select(EntryRow).where(EntryRow.source_id == source_id))
        assert row is not None
        return set(session.scalars(select(ViolationRow.rule_id).where(ViolationRow.entry_id == row.id,
                                                                       ViolationRow.current.is_(True))))


def test_ingest_takes_the_context_and_the_entry_keeps_it(world: World) -> None:
    march = entry("ctx1", work_date="2026-03-10", rate="990.00")  # over the cap; late only as of today
    response = world.post("/v1/entries", "connector", params=MARCH, json=[entry_record(march)])
    assert response.status_code == 200, response.text
    row = world.row("ctx1")
    assert (row.as_of, row.period_start, row.period_end) == (dt.date(2026, 4, 6), dt.date(2026, 3, 1),
                                                             dt.date(2026, 3, 31))
    assert rules_of(world, "ctx1") == {"ACME-RATE-001"}
    # Adjusted without a context: judged as of 6 April again, so not late; clean at the cap.
    response = world.post(f"/v1/entries/{row.id}/adjust", "reviewer", if_match=f'"{row.version}"',
                          json={"reason": "cap", "changes": {"rate": "950.00"}})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "ready"
    assert world.row("ctx1").as_of == dt.date(2026, 4, 6)


def test_without_a_context_entries_are_judged_as_of_today(world: World) -> None:
    march = entry("ctx2", work_date="2026-03-10")
    assert world.post("/v1/entries", "connector", json=[entry_record(march)]).status_code == 200
    row = world.row("ctx2")
    assert (row.as_of, row.period_start) == (dt.date.today(), None)
    assert "ACME-LATE-001" in rules_of(world, "ctx2")  # months old today
    # A reviewer's adjust may say as of when: then it is not late, and the entry keeps that date.
    response = world.post(f"/v1/entries/{row.id}/adjust", "reviewer", if_match=f'"{row.version}"',
                          json={"changes": {"narrative": "Drafted answer and affirmative defenses, second draft"},
                                "as_of": "2026-04-06"})
    assert response.status_code == 200, response.text
    assert "ACME-LATE-001" not in rules_of(world, "ctx2")
    assert world.row("ctx2").as_of == dt.date(2026, 4, 6)


@pytest.mark.parametrize("params", [
    {"as_of": "2026-13-01"}, {"period_start": "yesterday"}, {"as_of": "2026-04-06", "period_start": "2026-03-31",
                                                               "period_end": "2026-03-01"},
])
def test_bad_context_values_are_a_422(world: World, params: dict[str, str]) -> None:
    response = world.post("/v1/entries", "connector", params=params, json=[entry_record(entry("bad"))])
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error"}
    with world.sessions() as session:
        assert session.scalar(select(EntryRow).where(EntryRow.source_id == "bad")) is None
    row = world.row("rate")
    for body in ({"changes": {"rate": "950.00"}, "as_of": "soon"},
                 {"changes": {"rate": "950.00"}, "period_start": "2026-03-31", "period_end": "2026-03-01"}):
        error_of(world.post(f"/v1/entries/{row.id}/adjust", "reviewer", if_match=f'"{row.version}"', json=body),
                 422, "invalid_request")
    assert world.row("rate").version == row.version


def test_the_openapi_document_declares_the_context(world: World) -> None:
    spec = world.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/entries"]["post"]["parameters"]}
    assert {"as_of", "period_start", "period_end"} <= set(params)
    assert params["as_of"]["schema"]["anyOf"][0] == {"type": "string", "format": "date"}
    assert "422" in spec["paths"]["/v1/entries"]["post"]["responses"]
    for route in ("reject", "adjust"):
        ref = spec["paths"][f"/v1/entries/{{entry_id}}/{route}"]["post"]["requestBody"]["content"][
            "application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert {"as_of", "period_start", "period_end"} <= set(spec["components"]["schemas"][ref]["properties"])
    bulk = spec["components"]["schemas"]["BulkIn"]["properties"]
    assert {"as_of", "period_start", "period_end"} <= set(bulk)


# The sample and the README ---------------------------------------------------------------------------------

def _readme_command(name: str) -> list[str]:
    """The README's example command line that starts with ``ocgate <name>``, split as a shell would."""
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith(f"ocgate {name}"):
            return shlex.split(line.split("  #")[0])[1:]
    raise AssertionError(f"no ocgate {name} example in the README")


def test_the_readme_checks_the_sample_as_of_its_invoice_date(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    sample = _readme_command("sample --count")
    validate = _readme_command("validate entries.jsonl")
    target = tmp_path / "entries.jsonl"
    sample[sample.index("-o") + 1] = str(target)
    assert main(sample) == 0
    err = capsys.readouterr().err
    validate[validate.index("entries.jsonl")] = str(target)
    validate[validate.index("rules/acme-corp.yaml")] = str(REPO / "rules" / "acme-corp.yaml")
    ctx = suggested_context()
    for option, value in (("--as-of", ctx.as_of), ("--period-start", ctx.period_start),
                          ("--period-end", ctx.period_end)):
        assert validate[validate.index(option) + 1] == str(value)  # the README uses what `ocgate sample` suggests
        assert f"{option} {value}" in err
    main([*validate, "--format", "json"])
    found = json.loads(capsys.readouterr().out)
    late = {v["entry_uid"] for v in found if v["rule_id"] == "ACME-LATE-001"}
    entries = [json.loads(line) for line in target.read_text().splitlines()]
    assert 0 < len(late) < 0.05 * len(entries)  # only the deliberately late time, not the whole month
    assert all(dt.date.fromisoformat(e["work_date"]) < dt.date(2026, 1, 1) for e in entries
               if f"{e['source_system']}:{e['source_tenant']}:{e['source_id']}" in late)


def test_sample_dates_follow_start_and_days(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "june.jsonl"
    assert main(["sample", "--count", "40", "--start", "2026-06-01", "--days", "30", "-o", str(target)]) == 0
    assert re.search(r"--as-of 2026-07-05 --period-start 2026-06-01 --period-end 2026-06-30",
                     capsys.readouterr().err)
    dates = {json.loads(line)["work_date"] for line in target.read_text().splitlines()}
    assert all(d.startswith("2026-06") or d < "2026-06" for d in dates)
    assert [e.work_date for e in generate(3)] == [e.work_date for e in generate(3, start=dt.date(2026, 3, 1))]
    assert main(["sample", "--days", "0"]) == 2


def test_cli_ingest_and_sync_refuse_a_period_that_ends_before_it_starts(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(entry_record(entry("one"))) + "\n")
    code = main(["ingest", str(path), "--period-start", "2026-03-31", "--period-end", "2026-03-01"])
    assert code == 2
    assert "--period-end 2026-03-01 is before --period-start 2026-03-31" in capsys.readouterr().err
