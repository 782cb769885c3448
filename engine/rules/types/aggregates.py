"""Rules over the whole batch, run in Python on both backends: ``daily_hours_cap`` and ``duplicate``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal

from engine.model import Entry, EntryKind
from engine.rules.conditions import Evidence
from engine.rules.ruleset import Rule
from engine.rules.types.base import POSITIVE, AggregateHit, RuleType, register

Scope = Callable[[Entry], bool] | None
_TIME = EntryKind.TIME


class Day:
    """One timekeeper's billable time on one day: the total hours and the entries, in batch order."""

    __slots__ = ("indexes", "kinds", "total")

    def __init__(self, total: Decimal, index: int, kind: int) -> None:
        self.total = total
        self.indexes = [index]
        self.kinds = [kind]  # per entry, its (task code, hours) pair as a number: see TimekeeperDays


class TimekeeperDays:
    """Billable time with hours, grouped by timekeeper and work date, with what duplicates compare.

    ``days`` holds the days in order of their first entry. Each distinct (task code, hours) pair is numbered
    (equal hours such as 1.5 and 1.50 share a number) and ``tasks[kind]`` is its task code. ``hours`` and
    ``narratives`` are indexed like the batch (None for entries left out).
    """

    __slots__ = ("days", "hours", "narratives", "tasks")

    def __init__(self, days: dict[tuple[str, object], Day], tasks: list[str | None], hours: list[Decimal | None],
                 narratives: list[str | None]) -> None:
        self.days = days
        self.tasks = tasks
        self.hours = hours
        self.narratives = narratives


def timekeeper_days(entries: Sequence[Entry], scope: Scope, cache: dict[object, object] | None) -> TimekeeperDays:
    """Billable time with hours, grouped by timekeeper and work date (shared by the batch rules).

    Everything is taken from the entries in one sequential pass, and an entry's own objects (its hours,
    strings, date) are not touched again in day order: entries of one day are scattered through a large
    batch, so going back to them day by day jumps around memory. The days keep small numbers instead.
    """
    key = ("timekeeper_days", scope)
    if cache is not None and key in cache:
        return cache[key]  # type: ignore[return-value]
    days: dict[tuple[str, object], Day] = {}
    get_day = days.get
    kinds: dict[tuple[str | None, Decimal], int] = {}
    get_kind = kinds.get
    tasks: list[str | None] = []
    hours_of: list[Decimal | None] = [None] * len(entries)
    narratives: list[str | None] = [None] * len(entries)
    for i, e in enumerate(entries):
        # A pydantic model keeps its fields in __dict__; reading them there skips BaseModel.__getattr__,
        # whose presence puts every ``e.field`` on CPython's slow attribute path (a third of this loop).
        fields = e.__dict__
        if fields["entry_kind"] is not _TIME:
            continue
        hours = fields["hours_billed"]
        if hours is None or not fields["billable"] or fields["no_charge"] or (scope is not None and not scope(e)):
            continue
        timekeeper = fields["timekeeper_source_id"] or fields["timekeeper_ledes_id"] or fields["timekeeper_name"]
        if timekeeper is None:
            continue  # nobody to add up: the approved-timekeeper rule reports these
        task = fields["utbms_task_code"]
        task_hours = (task, hours)
        kind = get_kind(task_hours)
        if kind is None:
            kind = kinds[task_hours] = len(tasks)
            tasks.append(task)
        hours_of[i] = hours
        narratives[i] = fields["narrative"]
        work_date = fields["work_date"]
        day = get_day((timekeeper, work_date))
        if day is None:
            days[timekeeper, work_date] = Day(hours, i, kind)
        else:
            day.total += hours
            day.indexes.append(i)
            day.kinds.append(kind)
    index = TimekeeperDays(days, tasks, hours_of, narratives)
    if cache is not None:
        cache[key] = index
    return index


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
        for day in timekeeper_days(entries, scope, cache).days.values():
            if day.total > cap:
                evidence = [Evidence("hours billed per timekeeper per day", "gt", cap, day.total)]
                yield AggregateHit(day.indexes[:], evidence,
                                   {"total": day.total, "count": len(day.indexes), "max_hours": cap})


class _Normalised(dict[str, str]):
    """Narrative -> casefolded with runs of whitespace made one space; each distinct text is worked out once."""

    def __missing__(self, narrative: str) -> str:
        text = self[narrative] = " ".join(narrative.casefold().split())
        return text


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
        index = timekeeper_days(entries, scope, cache)
        tasks, hours_of, narratives = index.tasks, index.hours, index.narratives
        normalised = _Normalised()
        for (timekeeper, work_date), day in index.days.items():
            kinds = day.kinds
            if len(set(kinds)) == len(kinds):
                continue  # no task and hours twice on this day
            # Cheap key first; narratives are compared only where the task and hours repeat.
            candidates: dict[int, list[int]] = {}
            for i, kind in zip(day.indexes, kinds, strict=True):
                found = candidates.get(kind)
                if found is None:
                    candidates[kind] = [i]
                else:
                    found.append(i)
            prefix = None
            for kind, same_key in candidates.items():
                if len(same_key) < 2:
                    continue
                if len(same_key) == 2:  # the common case: compare the two, no grouping needed
                    first, second = same_key
                    same_text = [same_key] if normalised[narratives[first]] == normalised[narratives[second]] else []
                else:
                    by_text: dict[str, list[int]] = {}
                    for i in same_key:
                        text = normalised[narratives[i]]
                        found = by_text.get(text)
                        if found is None:
                            by_text[text] = [i]
                        else:
                            found.append(i)
                    same_text = [same for same in by_text.values() if len(same) > 1]
                if not same_text:
                    continue
                if prefix is None:
                    prefix = f"{timekeeper}, {work_date}, "
                # The hours as the day's first entry with this task and hours wrote them (1.5 or 1.50).
                expected = f"{prefix}{tasks[kind]}, {hours_of[same_key[0]]}"
                for same in same_text:
                    evidence = [Evidence("timekeeper, date, task, hours, narrative", "eq", expected, len(same))]
                    yield AggregateHit(same, evidence, {"count": len(same)})
