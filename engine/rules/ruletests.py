"""Tests that live beside each rule file: entries that must flag a rule and entries that must pass it.

``rules/acme.yaml`` is tested by ``rules/acme.tests.yaml``::

    context: {as_of: 2026-04-05, period: {from: 2026-03-01, to: 2026-03-31}}
    defaults: {source_system: fixture, entry_kind: time, work_date: 2026-03-10, ...}
    cases:
      - name: partner above the cap
        entry: {source_id: t1, timekeeper_classification: PARTNR, rate: 990}
        flags: [ACME-RATE-001]
      - name: several entries (batch rules)
        entries: [{source_id: d1, hours_billed: 6}, {source_id: d2, hours_billed: 5}]
        flags: [ACME-DAY-001]
        passes: [ACME-DUP-001]

Every rule needs at least one case it flags and one it passes; a case naming a rule that is gone fails.
Each case runs on every available backend, and the backends must agree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.model import Entry
from engine.rules.backends import DURABLE_AVAILABLE
from engine.rules.compiler import compile_ruleset
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError, load_file
from engine.rules.ruleset import RuleSet
from engine.rules.yamlpos import Problem, YamlError, parse

ALL_STATUSES = ("active", "shadow", "draft")


@dataclass
class RuleTestReport:
    ruleset_file: str
    tests_file: str | None
    rules: int = 0
    cases: int = 0
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def tests_file_for(ruleset_file: Path) -> Path:
    return ruleset_file.with_name(ruleset_file.name.removesuffix(".yaml").removesuffix(".yml") + ".tests.yaml")


def discover(paths: list[Path]) -> list[Path]:
    """Rule files under the given files or folders (test files are found beside them)."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.y*ml")) if not p.name.endswith((".tests.yaml", ".tests.yml")))
        else:
            found.append(path)
    return found


def run_file(ruleset_file: Path, backends: tuple[str, ...] | None = None) -> RuleTestReport:
    tests_file = tests_file_for(ruleset_file)
    report = RuleTestReport(str(ruleset_file), str(tests_file) if tests_file.exists() else None)
    try:
        ruleset = load_file(ruleset_file)
    except RuleSetError as exc:
        report.failures.extend(str(p) for p in exc.problems)
        return report
    report.rules = len(ruleset.rules)
    if not tests_file.exists():
        report.failures.append(f"{ruleset_file}: no tests: create {tests_file.name} beside it")
        return report
    try:
        doc = parse(tests_file.read_text(encoding="utf-8"), str(tests_file))
    except YamlError as exc:
        report.failures.append(str(exc.problem))
        return report
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("cases"), list):
        report.failures.append(f"{tests_file}:1:1: a tests file is a mapping with a 'cases' list")
        return report
    backends = backends or (("python", "durable") if DURABLE_AVAILABLE else ("python",))
    durable_problem = compile_ruleset(ruleset, ALL_STATUSES).durable_problem
    if "durable" in backends and durable_problem:
        if backends == ("durable",):  # asked for durable-rules alone: that it cannot run is the result
            report.failures.append(f"{ruleset_file}: durable-rules cannot run this rule set: {durable_problem}")
            return report
        report.notes.append(f"{ruleset_file}: durable-rules skipped: {durable_problem}")
        backends = tuple(b for b in backends if b != "durable")
    try:
        context = _context(doc.data.get("context") or {}, tests_file)
    except ValueError as exc:
        report.failures.append(str(doc.problem(("context",), f"invalid context: {exc}")))
        return report
    defaults = doc.data.get("defaults") or {}
    flagged_by: dict[str, int] = {}
    passed_by: dict[str, int] = {}
    for index, case in enumerate(doc.data["cases"]):
        path = ("cases", index)
        report.cases += 1
        problem = _run_case(case, index, path, doc, ruleset, defaults, context, backends, report)
        if problem is not None:
            report.failures.append(str(problem))
        if not isinstance(case, dict):
            continue
        # A failing case still counts as a test of its rules: its failure is reported on its own.
        if problem is not None and not all(isinstance(case.get(k) or [], list) for k in ("flags", "passes")):
            continue
        for rule_id in case.get("flags") or []:
            flagged_by[rule_id] = flagged_by.get(rule_id, 0) + 1
        for rule_id in case.get("passes") or []:
            passed_by[rule_id] = passed_by.get(rule_id, 0) + 1
    for rule in ruleset.rules:
        missing = [what for what, seen in (("flags", flagged_by), ("passes", passed_by)) if rule.id not in seen]
        if missing:
            report.failures.append(
                f"{ruleset_file}: rule {rule.id} is untested: no case that {' and no case that '.join(missing)} it"
            )
    return report


def _context(data: dict[str, Any], file: Path) -> EvaluationContext:
    period = data.get("period") or {}

    def day(value: Any) -> dt.date | None:
        return dt.date.fromisoformat(value) if value else None

    return EvaluationContext(as_of=day(data.get("as_of")), period_start=day(period.get("from")),
                             period_end=day(period.get("to")))


def _run_case(case: Any, index: int, path: tuple[Any, ...], doc: Any, ruleset: RuleSet,
              defaults: dict[str, Any], context: EvaluationContext, backends: tuple[str, ...],
              report: RuleTestReport) -> Problem | None:
    if not isinstance(case, dict):
        return doc.problem(path, "a case is a mapping with entry/entries and flags/passes")
    name = case.get("name") or f"case {index}"
    where = f"cases/{index} ({name})"
    records = case.get("entries") if "entries" in case else [case.get("entry")]
    if not isinstance(records, list) or not records or any(not isinstance(r, dict) for r in records):
        return doc.problem(path, "needs 'entry' (a mapping) or 'entries' (a list of mappings)", where)
    flags, passes = case.get("flags") or [], case.get("passes") or []
    for key, ids in (("flags", flags), ("passes", passes)):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return doc.problem((*path, key), f"{key} is a list of rule ids", where)
    if not flags and not passes:
        return doc.problem(path, "says nothing to check: add flags or passes", where)
    known = {r.id for r in ruleset.rules}
    for key, ids in (("flags", flags), ("passes", passes)):
        for i, rule_id in enumerate(ids):
            if rule_id not in known:
                return doc.problem((*path, key, i), f"rule {rule_id!r} is not in {ruleset.source} (removed?)",
                                   where)
    entries = []
    for i, record in enumerate(records):
        merged = {**defaults, "source_id": f"case{index}-{i}", **record}
        try:
            entries.append(Entry.model_validate(merged))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            entry_path = (*path, "entries", i) if "entries" in case else (*path, "entry")
            return doc.problem(entry_path, f"invalid entry: {loc}: {first['msg']}", where)
    results: dict[str, set[str]] = {}
    for backend in backends:
        violations = evaluate(entries, ruleset, context=context, backend=backend, statuses=ALL_STATUSES)
        results[backend] = {v.rule_id for v in violations}
    if len({frozenset(r) for r in results.values()}) > 1:
        shown = "; ".join(f"{b}: {sorted(r)}" for b, r in results.items())
        return doc.problem(path, f"backends disagree: {shown}", where)
    fired = next(iter(results.values()))
    for rule_id in flags:
        report.checks += 1
        if rule_id not in fired:
            return doc.problem(path, f"expected {rule_id} to flag, it did not (fired: {sorted(fired) or 'none'})",
                               where)
    for rule_id in passes:
        report.checks += 1
        if rule_id in fired:
            return doc.problem(path, f"expected {rule_id} to pass, it flagged", where)
    return None
