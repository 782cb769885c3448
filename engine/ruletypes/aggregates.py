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


class Day:
    """One timekeeper's billable time on one day: total hours and, per entry, what duplicates compare.

    Everything is collected in one sequential pass over the batch: going back to the entries by index
    later would jump around memory (entries of one day are scattered through a large batch).
    """

    __slots__ = ("members", "total")

    def __init__(self, total: Decimal, members: list[tuple[int, str | None, Decimal, str]]) -> None:
        self.total = total
        self.members = members  # (index, task code, hours, narrative)

    @property
    def indexes(self) -> list[int]:
        return [member[0] for member in self.members]


def timekeeper_days(entries: Sequence[Entry], scope: Scope,
                    cache: dict[object, object] | None) -> dict[tuple[str, object], Day]:
    """Billable time with hours, grouped by timekeeper and work date (shared by the batch rules)."""
    key = ("timekeeper_days", scope)
    if cache is not None and key in cache:
        return cache[key]  # type: ignore[return-value]
    members: dict[tuple[str, object], list[tuple[int, str | None, Decimal, str]]] = {}
    totals: dict[tuple[str, object], Decimal] = {}
    for i, e in enumerate(entries):
        if e.entry_kind is not _TIME:
            continue
        hours = e.hours_billed
        if hours is None or not e.billable or e.no_charge or (scope is not None and not scope(e)):
            continue
        timekeeper = e.timekeeper_source_id or e.timekeeper_ledes_id or e.timekeeper_name
        if timekeeper is None:
            continue  # nobody to add up: the approved-timekeeper rule reports these
        day = (timekeeper, e.work_date)
        member = (i, e.utbms_task_code, hours, e.narrative)
        try:
            members[day].append(member)
            totals[day] += hours
        except KeyError:
            members[day] = [member]
            totals[day] = hours
    days = {day: Day(totals[day], found) for day, found in members.items()}
    if cache is not None:
        cache[key] = days
    return days


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
        for day in timekeeper_days(entries, scope, cache).values():
            if day.total > cap:
                evidence = [Evidence("hours billed per timekeeper per day", "gt", cap, day.total)]
                yield AggregateHit(day.indexes, evidence,
                                   {"total": day.total, "count": len(day.members), "max_hours": cap})


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
        for (timekeeper, work_date), day in timekeeper_days(entries, scope, cache).items():
            if len(day.members) < 2:
                continue
            # Cheap key first; narratives are normalised only where a collision is possible.
            candidates: dict[tuple[object, ...], list[tuple[int, str]]] = {}
            for i, task, hours, narrative in day.members:
                candidates.setdefault((task, hours), []).append((i, narrative))
            for (task, hours), same_key in candidates.items():
                if len(same_key) < 2:
                    continue
                by_text: dict[str, list[int]] = {}
                for i, narrative in same_key:
                    by_text.setdefault(" ".join(narrative.casefold().split()), []).append(i)
                for same in by_text.values():
                    if len(same) < 2:
                        continue
                    evidence = [Evidence("timekeeper, date, task, hours, narrative", "eq",
                                         f"{timekeeper}, {work_date}, {task}, {hours}", len(same))]
                    yield AggregateHit(same, evidence, {"count": len(same)})
