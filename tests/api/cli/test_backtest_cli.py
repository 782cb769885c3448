"""``ocgate rulesets backtest``: the same answer as the workflow, as a table or JSON; a progress bar only on a
terminal; usage errors exit 2."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.cli import main
from api.cli import rulesets as rulesets_cli
from engine.rules.features import EvaluationContext
from engine.samples import generate
from engine.store.db import transaction
from engine.store.models import RuleSetStatus
from engine.workflows import backtest as backtests
from engine.workflows.intake import CircuitBreaker, ingest
from engine.workflows.rulesets import add_ruleset_version
from tests.conftest import CTX, REPO

ACME = (REPO / "rules" / "acme-corp.yaml").read_text(encoding="utf-8")
GLOBEX = (REPO / "rules" / "globex-plc.yaml").read_text(encoding="utf-8")


@pytest.fixture
def stored(sessions: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    monkeypatch.setenv("OCGATE_DATABASE_URL", db_url)
    with transaction(sessions) as session:
        active = add_ruleset_version(session, ACME, status=RuleSetStatus.ACTIVE)
        ingest(session, list(generate(120, seed=4)), context=CTX, backend="python",
               breaker=CircuitBreaker(share=1.0, minimum=1 << 62))
        draft = add_ruleset_version(session, ACME.replace("PARTNR: 950", "PARTNR: 900"))
        globex = add_ruleset_version(session, GLOBEX)
        return {"active": active.id, "draft": draft.id, "globex": globex.id}


def test_json_is_the_workflow_answer(stored: dict[str, int], sessions: sessionmaker[Session],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["rulesets", "backtest", str(stored["draft"]), "--as-of", "2026-04-06", "--format", "json",
            "--from", "2026-03-01", "--to", "2026-03-31", "--client", "ACME01", "--examples", "2"]
    assert main(args) == 0
    out = capsys.readouterr()
    printed = json.loads(out.out)
    assert out.err == ""  # standard error is not a terminal: no progress bar
    with sessions() as session:
        result = backtests.backtest(session, stored["draft"], context=EvaluationContext(as_of=dt.date(2026, 4, 6)),
                                    window=backtests.Window(dt.date(2026, 3, 1), dt.date(2026, 3, 31), ("ACME01",)),
                                    examples=2)
    want = backtests.summary(result)
    printed.pop("draft"), printed.pop("against")
    printed["work"].pop("seconds"), want["work"].pop("seconds")
    assert printed == json.loads(json.dumps(want))
    assert printed["newly_flagged"] and all(len(e["evidence"]) for e in printed["examples"])


def test_the_table(stored: dict[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rulesets", "backtest", str(stored["draft"]), "--as-of", "2026-04-06",
                 "--against", str(stored["active"])]) == 0
    table = capsys.readouterr().out
    assert f"version {stored['draft']} (2026.1, draft" in table and f"against version {stored['active']}" in table
    assert "ACME-RATE-001" in table and "changed" in table and "params" in table
    assert "write-down change in total: USD -" in table
    assert "unchanged (" in table and "examples:" in table and "newly flagged" in table
    assert main(["rulesets", "backtest", str(stored["active"]), "--as-of", "2026-04-06"]) == 0
    assert "no rule differs" in capsys.readouterr().out


def test_usage_errors_exit_2(stored: dict[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rulesets", "backtest", str(stored["draft"]), "--against", "latest"]) == 2
    assert "--against 'latest'" in capsys.readouterr().err
    assert main(["rulesets", "backtest", str(stored["draft"]), "--against", str(stored["globex"])]) == 2
    assert "one rule set" in capsys.readouterr().err
    assert main(["rulesets", "backtest", "999999"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["rulesets", "backtest", str(stored["draft"]), "--from", "2026-03-09", "--to", "2026-03-01"]) == 2
    assert main(["rulesets", "backtest", str(stored["draft"]), "--period-start", "2026-03-09",
                 "--period-end", "2026-03-01"]) == 2
    assert main(["rulesets", "backtest", str(stored["draft"]), "--examples", "99"]) == 2


def test_a_progress_bar_on_a_terminal(stored: dict[str, int], monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["rulesets", "backtest", str(stored["draft"]), "--as-of", "2026-04-06", "--format", "json"]) == 0
    err = capsys.readouterr().err
    assert "per-entry rules" in err and "100%" in err
    assert main(["rulesets", "backtest", str(stored["draft"]), "--quiet", "--format", "json"]) == 0
    assert capsys.readouterr().err == ""
    progress = rulesets_cli._Progress(quiet=False)
    progress("daily aggregates", 0, 0)  # a total not known beforehand: a count, no bar
    progress("daily aggregates", 1234, 0)
    progress.close()
    err = capsys.readouterr().err
    assert "daily aggregates: 1234 entries" in err and "%" not in err
