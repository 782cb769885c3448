"""Staffing and budgets, over the whole batch (and, in the store, the stored history): ``attendance_limit`` and
``budget``. Both run in Python on both backends, like the other batch rules.

``attendance_limit`` groups a matter's time on one day by the event its narratives name: an entry with one of the
rule's codes belongs to the first of the rule's event phrases its narrative contains (whole words, any case). With
``min_shared_words``, entries naming the same phrase are one event only when their narratives are linked by
shared significant words (chains count: A shares with B, B with C). Beyond ``max_timekeepers`` distinct
timekeepers, the extra ones are flagged: everyone is ranked by their highest rate on the event (ties and missing
rates by who billed first), or simply by who billed first, and those after the first N are extra.

``budget`` keeps a running total of the fees (and, if asked, the expenses) charged to each budget's scope: a
matter, optionally one UTBMS phase or task, optionally a date window or each calendar month, quarter or year. The
entries are taken in work-date order, and on one date in the order they are given (the store gives them in the
order they were first stored). An entry is flagged when the running total including it is at or above the warning
share, or above the budget: the entry that crosses the line and every later one while the total stays over it.
What came before the entries given can be carried in (``carried``): the store sums its older entries instead of
reading them all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from engine.codes import utbms_codes
from engine.model import Entry, EntryKind
from engine.rules.conditions import Evidence
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types.aggregates import Scope
from engine.rules.types.base import POSITIVE, STRINGS, AggregateHit, RuleProblem, RuleType, register
from engine.rules.types.codes import check_codes, expand_phases

CODES = {"oneOf": [{"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z]{1,2}[0-9]{2,3}$"},
                    "minItems": 1}, {"type": "object", "properties": {"list": {"type": "string", "minLength": 1}},
                                     "required": ["list"], "additionalProperties": False}]}
DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
DEFAULT_EVENTS = ("deposition", "hearing", "trial", "mediation", "arbitration", "meeting", "conference", "call")
SEVERITY_RANK = {"info": 1, "warning": 2, "error": 3}
_TIME, _EXPENSE = EntryKind.TIME, EntryKind.EXPENSE

# Words that say nothing about which event an entry is about: what lawyers write around the event's name.
_COMMON = """
about after again all also and any are attend attendance attended attending before being between both but call
calls can case client clients conference conferences confer conferred counsel day did discuss discussed discussion
for from had has have her his how internal into its meet meeting meetings met not off our out over per phone
participate participated participating prep prepare prepared preparing preparation re regarding review reviewed
same she should team telephone than that the their them then there these they this those through video was were
what when where which while who will with within would zoom teams other others follow session sessions strategy
"""
COMMON_WORDS = frozenset(_COMMON.split())
_WORD = re.compile(r"[^\W_]+")


def _timekeeper(fields: dict[str, Any]) -> str | None:
    return fields["timekeeper_source_id"] or fields["timekeeper_ledes_id"] or fields["timekeeper_name"]


def phrase_search(phrases: Sequence[str]) -> list[tuple[str, re.Pattern[str]]]:
    """Each phrase with its whole-word, any-case, any-spacing pattern, in the author's order."""
    return [(phrase, re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in phrase.split()) + r"(?!\w)",
                                re.IGNORECASE)) for phrase in phrases]


def significant_words(narrative: str, phrase: str) -> frozenset[str]:
    """The words of a narrative that can tell one event from another: three letters or more, not in
    COMMON_WORDS and not the event phrase's own words (names, parties, places, subjects)."""
    own = set(phrase.casefold().split())
    return frozenset(w for w in _WORD.findall(narrative.casefold())
                     if len(w) >= 3 and w not in COMMON_WORDS and w not in own and not w.isdigit())


def _components(members: list[int], words: dict[int, frozenset[str]], needed: int) -> list[list[int]]:
    """``members`` linked when two share at least ``needed`` words, split into connected groups (each in the
    members' order, the groups in the order of their first member): the same for any order of arrival."""
    parent = {m: m for m in members}

    def root(m: int) -> int:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    for a_at, a in enumerate(members):
        for b in members[a_at + 1:]:
            if len(words[a] & words[b]) >= needed:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb, key=members.index)] = min(ra, rb, key=members.index)
    groups: dict[int, list[int]] = {}
    for m in members:
        groups.setdefault(root(m), []).append(m)
    return list(groups.values())


@register
class AttendanceLimit(RuleType):
    name = "attendance_limit"
    summary = ("At most N timekeepers billing the same meeting, hearing, deposition or call: same matter and day, "
               "one of the listed codes, narratives naming the same event.")
    aggregate = True
    params_schema = {
        "type": "object",
        "properties": {
            "max_timekeepers": {"type": "integer", "minimum": 1},
            "activity_codes": CODES,
            "task_codes": CODES,
            "events": STRINGS,
            "min_shared_words": {"type": "integer", "minimum": 0, "default": 0},
            "keep": {"enum": ["highest_rate", "first_billed"], "default": "highest_rate"},
        },
        "required": ["max_timekeepers"],
        "anyOf": [{"required": ["activity_codes"]}, {"required": ["task_codes"]}],
        "additionalProperties": False,
    }
    message_variables = ("event", "count", "max_timekeepers", "attendees", "kept")
    default_message = ("{count} timekeepers billed the {event} on {work_date} (limit {max_timekeepers}); "
                       "{timekeeper_name} is beyond the limit")

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        params = rule.params
        for problem in check_codes(params, ("activity_codes", "task_codes")):
            yield RuleProblem(("params", *problem.path), problem.message)
        seen: dict[str, int] = {}
        for i, phrase in enumerate(params.get("events") or ()):
            if not phrase.split():
                yield RuleProblem(("params", "events", i), "an event phrase needs at least one word")
            key = " ".join(phrase.casefold().split())
            if key in seen:
                yield RuleProblem(("params", "events", i), f"{phrase!r} is listed twice (first at {seen[key]})")
            seen.setdefault(key, i)

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        params = rule.params
        codes = [*params.get("activity_codes", ()), *params.get("task_codes", ())]
        keep = params.get("keep", "highest_rate")
        lines = [f"At most {params['max_timekeepers']} timekeeper(s) may bill one event: time on the same matter "
                 f"and day, coded {', '.join(c.upper() for c in codes)}, whose narratives name the same event.",
                 "Events, the first found in the narrative: " + ", ".join(params.get("events") or DEFAULT_EVENTS)
                 + "."]
        shared = params.get("min_shared_words", 0)
        if shared:
            lines.append(f"Entries naming the same event are one event only when their narratives share at least "
                         f"{shared} significant word(s) (names, parties, places), directly or through other entries.")
        lines.append("Beyond the limit, the extra timekeepers' entries are flagged: "
                     + ("those with the lower rates (ties: who billed later)." if keep == "highest_rate"
                        else "those who billed after the first ones."))
        return lines

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Scope,
                       cache: dict[object, object] | None = None) -> Iterator[AggregateHit]:
        params = rule.params
        limit = int(params["max_timekeepers"])
        activities = frozenset(c.upper() for c in params.get("activity_codes") or ())
        tasks = frozenset(expand_phases(list(params.get("task_codes") or ())))
        phrases = phrase_search(params.get("events") or DEFAULT_EVENTS)
        needed = int(params.get("min_shared_words", 0))
        by_rate = params.get("keep", "highest_rate") == "highest_rate"
        events: dict[tuple[str, dt.date, str], list[int]] = {}  # (matter, day, phrase) -> positions, in order
        for i, e in enumerate(entries):
            fields = e.__dict__
            if fields["entry_kind"] is not _TIME or not fields["billable"] or fields["no_charge"]:
                continue
            if fields["utbms_activity_code"] not in activities and fields["utbms_task_code"] not in tasks:
                continue
            matter = fields["law_firm_matter_id"]
            if matter is None or _timekeeper(fields) is None or (scope is not None and not scope(e)):
                continue
            narrative = fields["narrative"]
            phrase = next((p for p, pattern in phrases if pattern.search(narrative)), None)
            if phrase is not None:
                events.setdefault((matter, fields["work_date"], phrase), []).append(i)
        for (matter, day, phrase), members in events.items():
            groups = [members]
            if needed:
                words = {i: significant_words(entries[i].narrative, phrase) for i in members}
                groups = _components(members, words, needed)
            for group in groups:
                yield from self._judge_event(entries, group, phrase, matter, day, limit, by_rate)

    @staticmethod
    def _judge_event(entries: Sequence[Entry], group: list[int], phrase: str, matter: str, day: dt.date,
                     limit: int, by_rate: bool) -> Iterator[AggregateHit]:
        people: dict[str, list[int]] = {}  # timekeeper -> positions, in order of their first entry
        for i in group:
            people.setdefault(_timekeeper(entries[i].__dict__), []).append(i)  # type: ignore[arg-type]
        if len(people) <= limit:
            return
        order = list(people)
        if by_rate:
            first = {who: n for n, who in enumerate(order)}

            def rank(who: str) -> tuple[int, Decimal, int]:
                rates = [entries[i].rate for i in people[who] if entries[i].rate is not None]
                return (0, -max(rates), first[who]) if rates else (1, Decimal(0), first[who])
            order.sort(key=rank)
        kept, extra = order[:limit], order[limit:]
        names = {who: entries[people[who][0]].timekeeper_name or who for who in order}
        flagged = sorted(i for who in extra for i in people[who])
        evidence = [
            Evidence("timekeepers kept (" + ("highest rate first" if by_rate else "first to bill") + ")", "eq",
                     limit, [names[who] for who in kept]),
            Evidence(f"timekeepers billing the {phrase} on matter {matter}, {day.isoformat()}", "gt", limit,
                     len(order), basis="distinct timekeepers with the event's codes and phrase that day"),
        ]
        yield AggregateHit(flagged, evidence, {
            "event": phrase, "count": len(order), "max_timekeepers": limit,
            "attendees": "; ".join(names[who] for who in order), "kept": "; ".join(names[who] for who in kept)},
            members=sorted(group))


# Budgets -------------------------------------------------------------------------------------------------

PERIODS = ("month", "quarter", "year")
BudgetKey = tuple[int, str, dt.date | None]  # (budget's position, matter, start of its period or window)


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget of a rule, as it counts: which entries, how much, and how it is named in evidence."""

    position: int
    amount: Decimal
    matter: str | None
    phase: str | None
    tasks: frozenset[str] | None
    start: dt.date | None
    end: dt.date | None
    per: str | None
    label: str | None

    def period_start(self, day: dt.date) -> dt.date | None:
        """The start of the period ``day`` counts in (None: the budget has no periods)."""
        if self.per == "month":
            return day.replace(day=1)
        if self.per == "quarter":
            return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
        if self.per == "year":
            return day.replace(month=1, day=1)
        return self.start

    def covers(self, matter: str, task: str | None, day: dt.date) -> bool:
        if self.matter is not None and matter != self.matter:
            return False
        if self.tasks is not None and task not in self.tasks:
            return False
        if self.start is not None and day < self.start:
            return False
        return not (self.end is not None and day > self.end)

    def describe(self, matter: str, start: dt.date | None) -> str:
        if self.label:
            return self.label
        parts = [f"matter {matter}"]
        if self.phase:
            parts.append(f"{'phase' if (utbms_codes().get(self.phase) or _NO_CODE).kind == 'phase' else 'task'} "
                         f"{self.phase}")
        if self.per == "month" and start is not None:
            parts.append(f"{start:%Y-%m}")
        elif self.per == "quarter" and start is not None:
            parts.append(f"{start.year} Q{(start.month - 1) // 3 + 1}")
        elif self.per == "year" and start is not None:
            parts.append(str(start.year))
        elif self.start is not None or self.end is not None:
            parts.append(f"{self.start or '…'} to {self.end or '…'}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Carried:
    """What a budget rule carries in from stored entries it is not given: per matter, the date from which its
    entries are all given (any given entry of that matter dated before it is already in the totals, and is not
    counted again), and per budget key, the total of the entries before that date."""

    since: Mapping[str, dt.date]
    sums: Mapping[BudgetKey, Decimal]


NOTHING_CARRIED = Carried({}, {})


@dataclass(frozen=True, slots=True)
class _NoCode:
    kind: str | None = None


_NO_CODE = _NoCode()


def _day(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


def budgets_of(rule: Rule) -> list[Budget]:
    out = []
    for i, item in enumerate(rule.params["budgets"]):
        phase = item.get("phase")
        out.append(Budget(i, Decimal(item["amount"]), item.get("matter"), phase.upper() if phase else None,
                          frozenset(expand_phases([phase])) if phase else None, _day(item.get("from")),
                          _day(item.get("to")), item.get("per"), item.get("label")))
    return out


def budget_matters(rule: Rule) -> frozenset[str] | None:
    """The matters a budget rule keeps totals for; None when a budget without a matter covers each matter."""
    matters = [item.get("matter") for item in rule.params["budgets"]]
    return None if any(m is None for m in matters) else frozenset(matters)  # type: ignore[arg-type]


def charged(e: Entry, expenses: bool) -> Decimal | None:
    """What the budget counts of an entry: its net amount (billed amount plus any adjustment), for billable,
    charged fees (and expenses when asked); None for an entry that does not count."""
    fields = e.__dict__
    kind = fields["entry_kind"]
    if not (kind is _TIME or (expenses and kind is _EXPENSE)) or not fields["billable"] or fields["no_charge"]:
        return None
    billed = e.billed_amount
    if fields["law_firm_matter_id"] is None or billed is None:
        return None
    adjustment = fields["adjustment_amount"]
    return billed + adjustment if adjustment is not None else billed


def budget_keys(budgets: Sequence[Budget], matter: str, task: str | None,
                day: dt.date) -> Iterator[tuple[Budget, BudgetKey]]:
    for budget in budgets:
        if budget.covers(matter, task, day):
            yield budget, (budget.position, matter, budget.period_start(day))


def _percent(share: Decimal) -> str:
    return f"{(share * 100).quantize(Decimal('0.1')).normalize():f}%"


def _severity(rule: Rule, warned: bool) -> str:
    if not warned:
        return rule.severity
    return rule.severity if SEVERITY_RANK[rule.severity] < SEVERITY_RANK["warning"] else "warning"


@register
class BudgetRule(RuleType):
    name = "budget"
    summary = ("Cumulative fees (optionally expenses) per matter, phase or period against a budget: a warning at a "
               "share of it, a finding over it, on the entries that cross it.")
    aggregate = True
    params_schema = {
        "type": "object",
        "properties": {
            "budgets": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "matter": {"type": "string", "minLength": 1},
                        "phase": {"type": "string", "pattern": "^[A-Za-z]{1,2}[0-9]{2,3}$"},
                        "from": DATE,
                        "to": DATE,
                        "per": {"enum": list(PERIODS)},
                        "amount": POSITIVE,
                        "label": {"type": "string", "minLength": 1},
                    },
                    "required": ["amount"],
                    "additionalProperties": False,
                },
            },
            "warn_at": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "include_expenses": {"type": "boolean", "default": False},
        },
        "required": ["budgets"],
        "additionalProperties": False,
    }
    message_variables = ("scope", "budget", "total", "before", "share", "threshold")
    default_message = "{scope}: {total} charged against a budget of {budget} ({share})"

    def check(self, rule: Rule, ruleset: RuleSet) -> Iterator[RuleProblem]:
        if rule.when is not None:
            yield RuleProblem(("when",), "a budget counts every fee of its matters: narrow it with each budget's "
                                         "matter, phase, from/to or per, not with when")
        seen: dict[tuple[Any, ...], int] = {}
        known = utbms_codes()
        for i, item in enumerate(rule.params["budgets"]):
            path = ("params", "budgets", i)
            phase = item.get("phase")
            if phase is not None:
                found = known.get(phase.upper())
                if found is None:
                    yield RuleProblem((*path, "phase"), f"unknown UTBMS code {phase!r}")
                elif found.kind not in ("phase", "task"):
                    yield RuleProblem((*path, "phase"), f"{phase} is a UTBMS {found.kind} code, not a task or "
                                                        "phase code")
            start, end = item.get("from"), item.get("to")
            try:
                first, last = _day(start), _day(end)
            except ValueError as exc:
                yield RuleProblem(path, f"not a date: {exc}")
                continue
            if first is not None and last is not None and last < first:
                yield RuleProblem((*path, "to"), "the end date is before the start date")
            key = (item.get("matter"), phase.upper() if phase else None, first, last, item.get("per"))
            if key in seen:
                yield RuleProblem(path, f"the same matter, phase and dates as budget {seen[key]}: give each scope "
                                        "one budget")
            seen.setdefault(key, i)

    def describe(self, rule: Rule, ruleset: RuleSet) -> list[str]:
        params = rule.params
        what = "fees and expenses" if params.get("include_expenses") else "fees"
        lines = [f"Keeps a running total of the {what} charged (net of adjustments; billable, charged entries, in "
                 "work-date order) against each budget:"]
        for budget in budgets_of(rule):
            where = budget.describe(budget.matter or "(each matter)", None)
            per = f", each {budget.per}" if budget.per else ""
            lines.append(f"  - {where}{per}: {budget.amount}")
        warn = params.get("warn_at")
        if warn is not None:
            lines.append(f"Warns (severity warning) once a total reaches {_percent(Decimal(warn))} of its budget; "
                         f"over the budget the finding has the rule's severity ({rule.severity}).")
        else:
            lines.append(f"Over the budget the finding has the rule's severity ({rule.severity}).")
        lines.append("The entry that crosses the line is flagged, and every later one while the total stays over it.")
        return lines

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Scope,
                       cache: dict[object, object] | None = None) -> Iterator[AggregateHit]:
        budgets = budgets_of(rule)
        expenses = bool(rule.params.get("include_expenses", False))
        warn_at = rule.params.get("warn_at")
        warn = Decimal(warn_at) if warn_at is not None else None
        carried: Carried = (cache or {}).get(("carried", rule.id)) or NOTHING_CARRIED  # type: ignore[assignment]
        since = carried.since
        counted: list[tuple[dt.date, int, Decimal]] = []
        for i, e in enumerate(entries):
            amount = charged(e, expenses)
            if amount is None or (scope is not None and not scope(e)):
                continue
            first = since.get(e.law_firm_matter_id) if since else None  # type: ignore[arg-type]
            if first is not None and e.work_date < first:
                continue  # in the carried totals already
            counted.append((e.work_date, i, amount))
        counted.sort(key=lambda item: (item[0], item[1]))
        totals: dict[BudgetKey, Decimal] = {}
        found: dict[int, list[tuple[int, Decimal, Evidence, dict[str, Any]]]] = {}
        for work_date, i, amount in counted:
            e = entries[i]
            for budget, key in budget_keys(budgets, e.law_firm_matter_id, e.utbms_task_code,  # type: ignore[arg-type]
                                           work_date):
                before = totals.get(key)
                if before is None:
                    before = carried.sums.get(key, Decimal(0))
                total = totals[key] = before + amount
                over = total > budget.amount
                threshold = budget.amount if over or warn is None else budget.amount * warn
                if not over and (warn is None or total < threshold):
                    continue
                label = budget.describe(key[1], key[2])
                what = "fees and expenses" if expenses else "fees"
                basis = (f"the budget of {budget.amount}" if over
                         else f"{_percent(warn)} of the budget of {budget.amount}")  # type: ignore[arg-type]
                evidence = Evidence(f"{what} charged to {label}, running total", "gt" if over else "ge", threshold,
                                    total, basis=basis)
                values = {"scope": label, "budget": budget.amount, "total": total, "before": before,
                          "share": _percent(total / budget.amount), "threshold": threshold}
                found.setdefault(i, []).append((2 if over else 1, total / budget.amount, evidence, values))
        for i in sorted(found):
            items = sorted(found[i], key=lambda item: (item[0], item[1]))  # the decisive one last
            worst = items[-1]
            yield AggregateHit([i], [item[2] for item in items], worst[3], severity=_severity(rule, worst[0] == 1))

    def carried_sums(self, rule: Rule, ruleset: RuleSet, rows: Iterable[Any]) -> dict[BudgetKey, Decimal]:
        """What stored entries before a cut-off date contribute to each budget total: ``rows`` have the attributes
        ``RuleSet.applies_to`` reads and ``entry_kind``, ``utbms_task_code``, ``charged`` (the entry's net amount,
        None if it does not count: see ``charged``). The rule's own dates are applied here, as its scope would."""
        budgets = budgets_of(rule)
        expenses = bool(rule.params.get("include_expenses", False))
        sums: dict[BudgetKey, Decimal] = {}
        for row in rows:
            if row.charged is None or row.law_firm_matter_id is None:
                continue
            if not (row.entry_kind == _TIME.value or (expenses and row.entry_kind == _EXPENSE.value)):
                continue
            if rule.effective_from is not None and row.work_date < rule.effective_from:
                continue
            if rule.effective_to is not None and row.work_date > rule.effective_to:
                continue
            if not ruleset.applies_to(row):
                continue
            for _, key in budget_keys(budgets, row.law_firm_matter_id, row.utbms_task_code, row.work_date):
                sums[key] = sums.get(key, Decimal(0)) + row.charged
        return sums
