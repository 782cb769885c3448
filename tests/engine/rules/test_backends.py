"""The durable-rules guardrails and backend selection."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest

from engine.rules import backends
from engine.rules.compiler import compile_ruleset, split_for_durable
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_file, load_text
from engine.samples import generate
from tests.conftest import REPO

ACME = REPO / "rules" / "acme-corp.yaml"
CTX = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1), period_end=dt.date(2026, 3, 31))
durable_only = pytest.mark.skipif(not backends.DURABLE_AVAILABLE, reason="durable-rules does not import here")


@durable_only
def test_concurrent_callers_get_every_violation() -> None:
    """FastAPI runs sync routes in a thread pool: four threads at once must each see all violations."""
    ruleset = load_file(ACME)
    entries = list(generate(1500, seed=3))
    expected = [v.as_dict() for v in evaluate(entries, ruleset, context=CTX, backend="python")]
    results: dict[int, list[dict]] = {}

    def work(k: int) -> None:
        results[k] = [v.as_dict() for v in evaluate(entries, ruleset, context=CTX, backend="durable")]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(expected) > 100
    assert all(result == expected for result in results.values())


@durable_only
def test_identical_entries_are_each_judged() -> None:
    """Two identical time entries are exactly the duplicates to flag; durable-rules must not refuse the second."""
    ruleset = load_file(ACME)
    entry = next(iter(generate(1, seed=5)))
    twins = [entry, entry.model_copy()]
    found = evaluate(twins, ruleset, context=CTX, backend="durable")
    assert {v.rule_id for v in found if v.entry_index == 0} == {v.rule_id for v in found if v.entry_index == 1}
    assert any(v.rule_id == "ACME-DUP-001" for v in found)


@durable_only
def test_a_ruleset_is_registered_once_per_content() -> None:
    ruleset = load_file(ACME)
    evaluate(list(generate(5)), ruleset, context=CTX, backend="durable")
    registered = set(backends._durable.registered)
    again = load_file(ACME)  # a new object with the same content
    evaluate(list(generate(5)), again, context=CTX, backend="durable")
    assert backends._durable.registered == registered
    assert compile_ruleset(again).durable_name in registered


@durable_only
def test_no_engine_timer_threads_run_beside_the_lock() -> None:
    evaluate(list(generate(5)), load_file(ACME), context=CTX, backend="durable")
    assert all(not isinstance(t, threading.Timer) for t in threading.enumerate())


def test_large_conditions_are_split_for_durable_rules() -> None:
    caps = ", ".join(f"TK{i}: {500 + i}" for i in range(40))
    overrides = "\n".join(f"        - {{matter: M{i}, by_classification: {{PARTNR: {800 + i}, ASSOC: {500 + i}}}}}"
                          for i in range(6))
    ruleset = load_text(f"""
id: big
version: 1
rules:
  - id: CAP
    title: caps
    type: rate_cap
    params:
      by_classification: {{PARTNR: 900, ASSOC: 600, PARALG: 250}}
      by_timekeeper: {{{caps}}}
      matter_overrides:
{overrides}
""")
    compiled = compile_ruleset(ruleset)
    assert compiled.durable_problem is None
    branches = split_for_durable(compiled.rules[0].condition)
    assert branches is not None and len(branches) > 1
    assert len(compiled.durable_definition) == len(branches)


def test_auto_falls_back_to_python_and_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(backends, "DURABLE_AVAILABLE", False)
    monkeypatch.setattr(backends, "DURABLE_IMPORT_ERROR", "ImportError: test")
    monkeypatch.setattr(backends, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="ocgate.engine"):
        assert backends.resolve_backend("auto") == "python"
        assert backends.resolve_backend(None) == "python"
    assert sum("durable-rules is not available" in r.message for r in caplog.records) == 1
    with pytest.raises(backends.BackendUnavailable):
        backends.resolve_backend("durable")
    with pytest.raises(backends.BackendUnavailable):
        backends.resolve_backend("drools")
