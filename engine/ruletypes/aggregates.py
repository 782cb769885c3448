"""Rules over the whole batch, run in Python on both backends: ``daily_hours_cap`` and ``duplicate``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from engine.conditions import Evidence
from engine.model import Entry, EntryKind
from engine.ruletypes.base import POSITIVE, AggregateHit, RuleType, register

if TYPE_CHECKING:
    from engine.ruleset import Rule

Scope = Callable[[Entry], bool] | None
_TIME = EntryKind.TIME


def _timekeeper(e: Entry) -> str | None:
    return e.timekeeper_source_id or e.timekeeper_ledes_id or e.timekeeper_name


def _billed_time(entries: Sequence[Entry], scope: Scope) -> Iterator[tuple[int, Entry]]:
    """Billable time with hours: what counts towards a timekeeper's day."""
    for i, e in enumerate(entries):
        if (e.entry_kind is _TIME and e.hours_billed is not None and e.billable and not e.no_charge
                and (scope is None or scope(e))):
            yield i, e


@register
class DailyHoursCap(RuleType):
    name = "daily_hours_cap"
    summary = "A timekeeper's billed hours on one day, over all entries in the batch, above the cap."
    aggregate = True
    params_schema = {
        "type": "object",
        "properties": {"max_hours": POSITIVE},
        "required": ["max_hours"],
        "additionalProperties": False,
    }
    message_variables = ("total", "count", "max_hours")
    default_message = "{timekeeper_name} billed {total} h on {work_date} in {count} entries (cap {max_hours} h)"

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Scope) -> Iterator[AggregateHit]:
        cap = Decimal(rule.params["max_hours"])
        totals: dict[tuple[str | None, object], Decimal] = {}
        members: dict[tuple[str | None, object], list[int]] = {}
        for i, e in _billed_time(entries, scope):
            key = (_timekeeper(e), e.work_date)
            if key in totals:
                totals[key] += e.hours_billed
                members[key].append(i)
            else:
                totals[key] = e.hours_billed
                members[key] = [i]
        for key, total in totals.items():
            if total > cap and key[0] is not None:
                group = members[key]
                evidence = [Evidence("hours billed per timekeeper per day", "gt", cap, total)]
                variables = {"total": total, "count": len(group), "max_hours": cap}
                for i in group:
                    yield AggregateHit(i, evidence, group, variables)


@register
class Duplicate(RuleType):
    name = "duplicate"
    summary = ("The same timekeeper, date, task code, hours and narrative (ignoring case and spacing) billed "
               "more than once in the batch.")
    aggregate = True
    params_schema = {"type": "object", "properties": {}, "additionalProperties": False}
    message_variables = ("count",)
    default_message = "Billed {count} times: same timekeeper, date, task, hours and narrative"

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Scope) -> Iterator[AggregateHit]:
        # Cheap key first; narratives are normalised only where a collision is possible.
        candidates: dict[tuple[object, ...], list[int]] = {}
        for i, e in _billed_time(entries, scope):
            key = (_timekeeper(e), e.work_date, e.utbms_task_code, e.hours_billed)
            found = candidates.get(key)
            if found is None:
                candidates[key] = [i]
            else:
                found.append(i)
        for group in candidates.values():
            if len(group) < 2:
                continue
            by_text: dict[str, list[int]] = {}
            for i in group:
                by_text.setdefault(" ".join(entries[i].narrative.casefold().split()), []).append(i)
            for same in by_text.values():
                if len(same) < 2:
                    continue
                e = entries[same[0]]
                evidence = [Evidence("timekeeper, date, task, hours, narrative", "eq",
                                     f"{_timekeeper(e)}, {e.work_date}, {e.utbms_task_code}, {e.hours_billed}",
                                     len(same))]
                for i in same:
                    yield AggregateHit(i, evidence, same, {"count": len(same)})
