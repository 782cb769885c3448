"""Evaluate entries against a rule set and explain every violation with its evidence."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from engine.model import ENTRY_FIELDS, Entry
from engine.rules.backends import resolve_backend, run_durable, run_python
from engine.rules.compiler import CompiledRuleSet, compile_ruleset, scope_predicate
from engine.rules.conditions import Evidence, explain, render_value
from engine.rules.features import DERIVED_FUNCTIONS, EvaluationContext, field_feature
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types import Adjustment, type_of

log = logging.getLogger("ocgate.engine")


@dataclass
class Violation:
    """One rule broken by one entry, with everything a reviewer needs to decide on it."""

    entry_uid: str
    rule_id: str
    rule_type: str
    title: str
    severity: str
    rule_status: str  # active or shadow (shadow violations create no review work)
    ruleset_id: str
    ruleset_revision: str
    message: str
    evidence: list[Evidence]
    references: list[str] = field(default_factory=list)
    adjustment: Adjustment | None = None
    contributing: list[str] = field(default_factory=list)  # aggregate rules: the group's entries
    entry_index: int = -1

    @property
    def key(self) -> tuple[str, str]:
        return (self.entry_uid, self.rule_id)

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry_uid": self.entry_uid,
            "rule_id": self.rule_id,
            "rule_type": self.rule_type,
            "title": self.title,
            "severity": self.severity,
            "rule_status": self.rule_status,
            "ruleset_id": self.ruleset_id,
            "ruleset_revision": self.ruleset_revision,
            "message": self.message,
            "evidence": [ev.as_dict() for ev in self.evidence],
            "references": list(self.references),
            "adjustment": self.adjustment.as_dict() if self.adjustment else None,
            "contributing": list(self.contributing),
        }


class _Vars(dict):
    """Template values: the explicit ones, else the entry's field of that name (looked up lazily)."""

    def __init__(self, entry: Entry, ctx: EvaluationContext):
        super().__init__()
        self.entry = entry
        self.ctx = ctx

    def __missing__(self, key: str) -> str:
        if key in ENTRY_FIELDS:
            return _render(getattr(self.entry, key))
        if key in DERIVED_FUNCTIONS:
            return _render(field_feature(key).compute(self.entry, self.ctx))
        return "{" + key + "}"


def _render(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal | dt.date):
        return str(render_value(value))
    if isinstance(value, list):
        return ", ".join(_render(v) for v in value)
    return str(value)


def render_message(rule: Rule, entry: Entry, evidence: list[Evidence], extra: dict[str, Any],
                   ctx: EvaluationContext) -> str:
    template = rule.message or type_of(rule).default_message
    values = _Vars(entry, ctx)
    values.update(rule_id=rule.id, title=rule.title, severity=rule.severity, entry_uid=entry.entry_uid)
    if evidence:
        primary = evidence[-1]  # named types put the decisive comparison last
        values.update(expected=_render(primary.expected), actual=_render(primary.actual), field=primary.field)
    values.update({k: _render(v) for k, v in extra.items()})
    return template.format_map(values)


def evaluate(
    entries: Sequence[Entry],
    ruleset: RuleSet,
    *,
    context: EvaluationContext | None = None,
    backend: str | None = "auto",
    statuses: tuple[str, ...] = ("active", "shadow"),
    judge: Collection[int] | None = None,
    carried: Mapping[str, Any] | None = None,
) -> list[Violation]:
    """Every violation of ``ruleset`` in ``entries`` (those it applies to), entry by entry in order.

    ``judge`` limits the per-entry rules to the entries at those positions (default: all). The aggregate rules
    still group every entry and report every member of a group that breaks them, judged or not: this is how
    the intake workflow judges arriving entries together with the stored ones of their days, and learns
    which stored entries' findings the arrivals change. ``carried`` gives, by rule id, what a batch rule carries
    in from entries not passed (a budget's totals before the earliest entry: the store sums them).
    """
    started = time.perf_counter()
    ctx = context or EvaluationContext(as_of=dt.date.today())
    compiled = compile_ruleset(ruleset, statuses)
    entries = canonical_classifications(entries, ruleset)
    indexes = [i for i, e in enumerate(entries) if ruleset.applies_to(e)]
    applicable = [entries[i] for i in indexes] if len(indexes) != len(entries) else list(entries)
    if judge is None:
        judged, per_entry = indexes, applicable
    else:
        wanted = set(judge)
        judged = [i for i in indexes if i in wanted]
        per_entry = [entries[i] for i in judged]
    name = resolve_backend(backend)
    if name == "durable" and compiled.durable_problem and backend in (None, "auto"):
        log.warning("%s; evaluating %s with the Python backend", compiled.durable_problem, ruleset.id)
        name = "python"
    hits = (run_durable if name == "durable" else run_python)(compiled, per_entry, ctx)
    violations = [_entry_violation(compiled, per_entry[i], compiled.rules[pos].rule, pos, ctx)
                  for i, pos in hits]
    for v, (i, _) in zip(violations, hits, strict=True):
        v.entry_index = judged[i]
    uids: list[str] | None = None
    batch_cache: dict[object, object] = {("carried", rule_id): value for rule_id, value in (carried or {}).items()}
    # (batch rules share indexes over the same entries through it)
    for rule in compiled.aggregates:
        scope = scope_predicate(compiled, rule, ctx)
        if uids is None:
            uids = [e.entry_uid for e in applicable]
        for hit in type_of(rule).evaluate_batch(rule, applicable, scope, batch_cache):
            contributing = [uids[j] for j in (hit.indexes if hit.members is None else hit.members)]  # shared
            for i in hit.indexes:
                entry = applicable[i]
                violations.append(Violation(
                    entry_uid=uids[i], rule_id=rule.id, rule_type=rule.type, title=rule.title,
                    severity=hit.severity or rule.severity, rule_status=rule.status, ruleset_id=ruleset.id,
                    ruleset_revision=ruleset.revision,
                    message=render_message(rule, entry, hit.evidence, hit.variables, ctx),
                    evidence=hit.evidence, references=rule.references, contributing=contributing,
                    entry_index=indexes[i],
                ))
    violations.sort(key=lambda v: (v.entry_index, v.rule_id))
    log.info("%s@%s: %d of %d entries governed, %d judged, %d violations (%s backend, %.0f ms)", ruleset.id,
             ruleset.revision, len(applicable), len(entries), len(judged), len(violations), name,
             (time.perf_counter() - started) * 1000)
    return violations


def canonical_classifications(entries: Sequence[Entry], ruleset: RuleSet) -> Sequence[Entry]:
    """The entries as the rules judge them: a classification that is one of the rule set's aliases (a firm
    title such as ``SENIOR ASSOCIATE`` that the timekeeper table did not map) becomes its LEDES code. Entries
    that change are copies; the caller's entries are never modified, and without aliases nothing is copied."""
    if not ruleset.classifications:
        return entries
    mapped: dict[str, str | None] = {}
    out: list[Entry] | None = None
    for i, entry in enumerate(entries):
        name = entry.timekeeper_classification
        if name is None:
            continue
        if name not in mapped:
            code = ruleset.canonical_classification(name)
            mapped[name] = code if code != name else None
        code = mapped[name]
        if code is None:
            continue
        if out is None:
            out = list(entries)
        out[i] = entry.model_copy(update={"timekeeper_classification": code})
    return out if out is not None else entries


def _entry_violation(compiled: CompiledRuleSet, entry: Entry, rule: Rule, position: int,
                     ctx: EvaluationContext) -> Violation:
    condition = compiled.rules[position].condition
    values = {key: feature.compute(entry, ctx) for key, feature in compiled.rules[position].features.items()}
    evidence = explain(condition, values, entry)
    adjustment = type_of(rule).propose(rule, entry, evidence)
    return Violation(
        entry_uid=entry.entry_uid, rule_id=rule.id, rule_type=rule.type, title=rule.title,
        severity=rule.severity, rule_status=rule.status, ruleset_id=compiled.ruleset.id,
        ruleset_revision=compiled.ruleset.revision,
        message=render_message(rule, entry, evidence, type_of(rule).message_values(rule, entry, evidence), ctx),
        evidence=evidence, references=rule.references, adjustment=adjustment,
    )
