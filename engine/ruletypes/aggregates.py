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


def timekeeper_days(entries: Sequence[Entry], scope: Scope,
                    cache: dict[object, object] | None) -> dict[tuple[str, object], list[int]]:
    """Billable time with hours, grouped by timekeeper and work date (shared by the batch rules)."""
    key = ("timekeeper_days", scope)
    if cache is not None and key in cache:
        return cache[key]  # type: ignore[return-value]
    groups: dict[tuple[str, object], list[int]] = {}
    for i, e in enumerate(entries):
        if (e.entry_kind is _TIME and e.hours_billed is not None and e.billable and not e.no_charge
                and (scope is None or scope(e))):
            timekeeper = e.timekeeper_source_id or e.timekeeper_ledes_id or e.timekeeper_name
            if timekeeper is None:
                continue  # nobody to add up: the approved-timekeeper rule reports these
            group_key = (timekeeper, e.work_date)
            found = groups.get(group_key)
            if found is None:
                groups[group_key] = [i]
            else:
                found.append(i)
    if cache is not None:
        cache[key] = groups
    return groups


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

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Scope,
                       cache: dict[object, object] | None = None) -> Iterator[AggregateHit]:
        cap = Decimal(rule.params["max_hours"])
        for group in timekeeper_days(entries, scope, cache).values():
            total = sum([entries[i].hours_billed for i in group], Decimal(0))
            if total > cap:
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

    def evaluate_batch(self, rule: Rule, entries: Sequence[Entry], scope: Scope,
                       cache: dict[object, object] | None = None) -> Iterator[AggregateHit]:
        for (timekeeper, work_date), group in timekeeper_days(entries, scope, cache).items():
            if len(group) < 2:
                continue
            # Cheap key first; narratives are normalised only where a collision is possible.
            candidates: dict[tuple[object, ...], list[int]] = {}
            for i in group:
                e = entries[i]
                candidates.setdefault((e.utbms_task_code, e.hours_billed), []).append(i)
            for same_key in candidates.values():
                if len(same_key) < 2:
                    continue
                by_text: dict[str, list[int]] = {}
                for i in same_key:
                    by_text.setdefault(" ".join(entries[i].narrative.casefold().split()), []).append(i)
                for same in by_text.values():
                    if len(same) < 2:
                        continue
                    e = entries[same[0]]
                    evidence = [Evidence("timekeeper, date, task, hours, narrative", "eq",
                                         f"{timekeeper}, {work_date}, {e.utbms_task_code}, {e.hours_billed}",
                                         len(same))]
                    for i in same:
                        yield AggregateHit(i, evidence, same, {"count": len(same)})
