"""Throughput and memory of the rules engine on generated entries against ``rules/acme-corp.yaml``.

Run with ``.venv/bin/python -m bench.engine_bench [--count N]``. It prints figures only: nothing here
passes or fails. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench import acme_handwritten
from engine.rules.backends import DURABLE_AVAILABLE, DURABLE_IMPORT_ERROR, run_durable, run_python
from engine.rules.compiler import compile_ruleset
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import load_file
from engine.rules.types import type_of
from engine.samples import generate

RULES = Path(__file__).resolve().parent.parent / "rules" / "acme-corp.yaml"
SEED = 11
CONTEXT = EvaluationContext(as_of=dt.date(2026, 4, 6), period_start=dt.date(2026, 3, 1),
                            period_end=dt.date(2026, 3, 31))

TARGET_RATIO = 0.7  # python backend / hand-written loop, entries per second
TARGET_DURABLE = 15_000  # durable-rules backend, entries per second
TARGET_AGGREGATES = 500_000  # both aggregate rules together, entries per second

T = TypeVar("T")
MB = 1024 * 1024


# Measuring ----------------------------------------------------------------------------------------

class Timing:
    """Wall-clock seconds of repeated runs of one thing."""

    def __init__(self, seconds: list[float], count: int, full_gcs: list[int]):
        self.seconds = seconds
        self.count = count
        self.full_gcs = full_gcs  # generation-2 collections the interpreter ran during each run

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Entries per second of the best run."""
        return self.count / self.best

    @property
    def median_rate(self) -> float:
        return self.count / self.median

    def line(self) -> str:
        runs = ", ".join(f"{s:.3f}" for s in self.seconds)
        gcs = f"; full GC passes per run: {', '.join(map(str, self.full_gcs))}" if any(self.full_gcs) else ""
        return (f"best {self.best:.3f} s = {self.rate:,.0f} entries/s; median {self.median:.3f} s = "
                f"{self.median_rate:,.0f} entries/s (runs: {runs} s{gcs})")


def timed(fn: Callable[[], T], repeat: int, count: int, after_run: Callable[[], None] | None = None,
          ) -> tuple[Timing, T]:
    """Run ``fn`` ``repeat`` times after a full collection each time; the result of the last run.

    The garbage collector stays on, as in production; full (generation-2) passes are counted, since with
    100k entries alive one pass costs a large share of a short timing.
    """
    seconds: list[float] = []
    full_gcs: list[int] = []
    result: Any = None
    for _ in range(repeat):
        result = None
        gc.collect()
        passes = [0]

        def count_full(phase: str, info: dict[str, int], passes: list[int] = passes) -> None:
            if phase == "start" and info["generation"] == 2:
                passes[0] += 1

        gc.callbacks.append(count_full)
        start = time.perf_counter()
        try:
            result = fn()
        finally:
            seconds.append(time.perf_counter() - start)
            gc.callbacks.remove(count_full)
        full_gcs.append(passes[0])
        if after_run is not None:
            after_run()
    return Timing(seconds, count, full_gcs), result


def max_rss_mb() -> float:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """The resident set size now (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize() / MB


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} MB"


def violations_digest(violations: list[Any]) -> str:
    """A hash of every violation as the API would serialise it (so two runs can be compared cheaply)."""
    digest = hashlib.sha256()
    for v in violations:
        digest.update(json.dumps(v.as_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def cpu_count() -> str:
    total = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        return str(total)
    return str(total) if usable == total else f"{total} ({usable} usable)"


# The benchmark -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="entries to generate (default 100000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timing; the best is reported (default 3)")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)
    rows: list[tuple[str, str, str]] = []  # summary: figure, value, target

    print(f"ocgate engine benchmark: {args.count:,} entries (seed {SEED}), rules {RULES.name}, "
          f"best of {repeat} runs")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}; "
          f"CPUs: {cpu_count()}")
    print(f"durable-rules: {'available' if DURABLE_AVAILABLE else 'NOT available: ' + DURABLE_IMPORT_ERROR}")
    print(f"max RSS at start: {fmt_mb(max_rss_mb())}; load average (1, 5, 15 min): {load_average()}")
    print()

    # 1. Entries (not part of the engine figures) ----------------------------------------------------
    start = time.perf_counter()
    generated = list(generate(args.count, seed=SEED))
    gen_seconds = time.perf_counter() - start
    print(f"[generate] {len(generated):,} entries in {gen_seconds:.2f} s = {len(generated) / gen_seconds:,.0f} "
          f"entries/s (once; not an engine figure); RSS now {fmt_mb(current_rss_mb())}")
    rows.append(("generate entries (not engine)", f"{len(generated) / gen_seconds:,.0f} e/s", ""))

    # 2. Rule set, context, applicable entries ---------------------------------------------------------
    start = time.perf_counter()
    ruleset = load_file(RULES)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    compiled = compile_ruleset(ruleset)
    compile_seconds = time.perf_counter() - start
    entries = [e for e in generated if ruleset.applies_to(e)]
    n = len(entries)
    print(f"[ruleset] {ruleset.id} revision {ruleset.revision}: loaded in {load_seconds * 1000:.0f} ms, compiled "
          f"in {compile_seconds * 1000:.0f} ms; {len(compiled.rules)} per-entry rules, "
          f"{len(compiled.aggregates)} aggregate rules, {len(compiled.features)} features, "
          f"{len(compiled.durable_definition)} durable-rules rules"
          + (f" (durable problem: {compiled.durable_problem})" if compiled.durable_problem else ""))
    print(f"[ruleset] {n:,} of {len(generated):,} entries are governed by the rule set")
    if ruleset.revision != acme_handwritten.WRITTEN_FOR:
        print(f"[ruleset] NOTE: the hand-written baseline was written for revision {acme_handwritten.WRITTEN_FOR}; "
              f"the rule file has changed since, so disagreements below may come from that alone")
    if n == 0:
        print("nothing to evaluate")
        return
    print()

    # 3. Per-entry rules: hand-written baseline, Python backend, durable-rules backend ---------------
    as_of, period_start, period_end = CONTEXT.as_of, CONTEXT.period_start, CONTEXT.period_end
    hand_time, hand_hits = timed(lambda: acme_handwritten.run(entries, as_of, period_start, period_end), repeat, n)
    print(f"[per-entry] hand-written loop:   {hand_time.line()}")
    py_time, py_hits = timed(lambda: run_python(compiled, entries, CONTEXT), repeat, n)
    print(f"[per-entry] python backend:      {py_time.line()}")
    per_entry_best = {"python": py_time.best}

    rule_ids = [c.rule.id for c in compiled.rules]
    py_pairs = {(i, rule_ids[pos]) for i, pos in py_hits}
    hand_pairs = set(hand_hits)
    only_engine = sorted(py_pairs - hand_pairs)
    only_hand = sorted(hand_pairs - py_pairs)
    print(f"[per-entry] hits: python backend {len(py_hits):,}, hand-written {len(hand_hits):,}; "
          f"disagreements (entry, rule): {len(only_engine) + len(only_hand)} "
          f"({len(only_engine)} only in the engine, {len(only_hand)} only in the hand-written loop)")
    for label, pairs in (("only engine", only_engine), ("only hand-written", only_hand)):
        for i, rule_id in pairs[:5]:
            e = entries[i]
            print(f"    {label}: #{i} {rule_id} {e.entry_kind} {e.timekeeper_ledes_id} {e.timekeeper_classification} "
                  f"{e.law_firm_matter_id} rate={e.rate} hours={e.hours_billed} task={e.utbms_task_code} "
                  f"activity={e.utbms_activity_code} expense={e.utbms_expense_code} narrative={e.narrative!r}")
    by_rule = Counter(rule_id for _, rule_id in py_pairs)
    print("[per-entry] hits by rule: " + ", ".join(f"{r} {by_rule.get(r, 0):,}" for r in rule_ids))
    ratio = py_time.rate / hand_time.rate
    print(f"[per-entry] python backend / hand-written = {ratio:.2f} from the best runs, "
          f"{py_time.median_rate / hand_time.median_rate:.2f} from the medians (target >= {TARGET_RATIO})")
    rows.append(("hand-written loop (per-entry rules)", f"{hand_time.rate:,.0f} e/s", ""))
    rows.append(("python backend run_python", f"{py_time.rate:,.0f} e/s", ""))
    rows.append(("  python / hand-written", f"{ratio:.2f}", f">= {TARGET_RATIO}"))
    rows.append(("  disagreements with hand-written", f"{len(only_engine) + len(only_hand)}", "0"))

    durable_ok = DURABLE_AVAILABLE and not compiled.durable_problem
    if durable_ok:
        rss_before, max_before = current_rss_mb(), max_rss_mb()
        rss_after_runs: list[float | None] = []
        durable_time, durable_hits = timed(lambda: run_durable(compiled, entries, CONTEXT), repeat, n,
                                           after_run=lambda: rss_after_runs.append(current_rss_mb()))
        rss_after, max_after = current_rss_mb(), max_rss_mb()
        print(f"[per-entry] durable backend:     {durable_time.line()}")
        per_entry_best["durable"] = durable_time.best
        print(f"[per-entry] durable hits {len(durable_hits):,}; same hit list as the python backend: "
              f"{durable_hits == py_hits} (as a set: {set(durable_hits) == set(py_hits)})")
        growth = None if rss_before is None or rss_after is None else rss_after - rss_before
        print(f"[per-entry] durable memory: RSS {fmt_mb(rss_before)} before, "
              + ", ".join(fmt_mb(r) for r in rss_after_runs) + " after each run "
              f"(growth {fmt_mb(growth)}); max RSS {fmt_mb(max_before)} -> {fmt_mb(max_after)} "
              f"(+{max_after - max_before:,.1f} MB)")
        print(f"[per-entry] durable entries/s {durable_time.rate:,.0f} (target >= {TARGET_DURABLE:,})")
        rows.append(("durable backend run_durable", f"{durable_time.rate:,.0f} e/s", f">= {TARGET_DURABLE:,} e/s"))
        rows.append(("  durable hits == python hits", str(durable_hits == py_hits), "True"))
        rows.append(("  durable RSS growth over the runs", fmt_mb(growth), ""))
    else:
        reason = compiled.durable_problem or DURABLE_IMPORT_ERROR
        print(f"[per-entry] durable backend: skipped ({reason})")
        rows.append(("durable backend run_durable", "skipped", f">= {TARGET_DURABLE:,} e/s"))
    print()

    # 4. Aggregate rules over the batch --------------------------------------------------------------
    aggregate_types = {rule.type for rule in compiled.aggregates}
    days = Counter((e.timekeeper_ledes_id, e.work_date) for e in entries if e.entry_kind == "time")
    if days:
        print(f"[aggregate] data density: {sum(days.values()):,} time entries over {len(days):,} timekeeper-days "
              f"({sum(days.values()) / len(days):.1f} per timekeeper-day, at most {max(days.values())})")
    aggregate_rates: list[str] = []
    for rule in compiled.aggregates:
        one_time, hits = timed(lambda rule=rule: list(type_of(rule).evaluate_batch(rule, entries, None)), repeat, n)
        flagged = sum(len(hit.indexes) for hit in hits)
        print(f"[aggregate] {rule.id} ({rule.type}): {flagged:,} entries flagged in {len(hits):,} groups; "
              f"{one_time.line()}")
        aggregate_rates.append(f"{rule.id} {one_time.rate:,.0f}")

    def all_aggregates(batch: list[Any] = entries) -> int:
        cache: dict[object, object] = {}  # as evaluate() does: the rules share one timekeeper-day index
        return sum(len(hit.indexes) for rule in compiled.aggregates
                   for hit in type_of(rule).evaluate_batch(rule, batch, None, cache))

    agg_time, agg_hits = timed(all_aggregates, repeat, n)
    print(f"[aggregate] both together: {agg_hits:,} entries flagged; {agg_time.line()} "
          f"(target >= {TARGET_AGGREGATES:,})")
    rows.append(("aggregate rules (both together)", f"{agg_time.rate:,.0f} e/s", f">= {TARGET_AGGREGATES:,} e/s"))

    # The sample team is 12 people: at 100k entries a month that is ~90 entries per person per day and
    # nearly every day breaks the cap. A firm billing that much has hundreds of timekeepers.
    people = max(12, args.count // 250)
    firm_entries = [e for e in generate(args.count, seed=SEED, timekeepers=people) if ruleset.applies_to(e)]
    firm_days = Counter((e.timekeeper_ledes_id, e.work_date) for e in firm_entries if e.entry_kind == "time")
    firm_time, firm_hits = timed(lambda: all_aggregates(firm_entries), repeat, len(firm_entries))
    density = sum(firm_days.values()) / len(firm_days)
    print(f"[aggregate] same volume from a firm of {people} timekeepers ({density:.1f} time entries per "
          f"timekeeper-day): {firm_hits:,} entries flagged; {firm_time.line()}")
    rows.append((f"  same, {people} timekeepers", f"{firm_time.rate:,.0f} e/s", f">= {TARGET_AGGREGATES:,} e/s"))
    firm_entries.clear()  # free the memory before the figures below
    print()

    # 5. evaluate() end to end ------------------------------------------------------------------------
    backends = ["python"] + (["durable"] if durable_ok else [])
    digests: dict[str, str] = {}
    for backend in backends:
        ev_time, violations = timed(lambda backend=backend: evaluate(entries, ruleset, context=CONTEXT,
                                                                      backend=backend), repeat, n)
        count = len(violations)
        shadow = sum(1 for v in violations if v.rule_status == "shadow")
        from_aggregates = sum(1 for v in violations if v.rule_type in aggregate_types)
        print(f"[evaluate] backend={backend}: {count:,} violations ({from_aggregates:,} from aggregate rules, "
              f"{shadow:,} shadow); {ev_time.line()}")
        rest = ev_time.best - per_entry_best[backend] - agg_time.best
        print(f"[evaluate] backend={backend}: best run split by difference with the figures above: per-entry "
              f"rules {per_entry_best[backend]:.2f} s + aggregate rules {agg_time.best:.2f} s + building "
              f"violations (evidence, messages, contributing entries) {rest:.2f} s")
        digests[backend] = violations_digest(violations)
        del violations  # hold one result at a time: the memory figures below should not see it
        rows.append((f"evaluate() backend={backend}", f"{ev_time.rate:,.0f} e/s", ""))
        rows.append((f"  violations ({backend})", f"{count:,}", ""))
    if len(digests) == 2:
        same = digests["python"] == digests["durable"]
        print(f"[evaluate] both backends give identical violations (serialised): {same}")
        rows.append(("  evaluate() backends identical", str(same), "True"))
    print()

    # 6. Memory of evaluate() ------------------------------------------------------------------------
    for backend in backends:
        gc.collect()
        rss_before, max_before = current_rss_mb(), max_rss_mb()
        tracemalloc.start()
        violations = evaluate(entries, ruleset, context=CONTEXT, backend=backend)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after, max_after = current_rss_mb(), max_rss_mb()
        growth = None if rss_before is None or rss_after is None else rss_after - rss_before
        print(f"[memory] evaluate() backend={backend}: Python-heap peak {peak / MB:,.1f} MB (tracemalloc); "
              f"RSS {fmt_mb(rss_before)} -> {fmt_mb(rss_after)} with the {len(violations):,} violations held "
              f"(growth {fmt_mb(growth)}); max RSS {fmt_mb(max_before)} -> {fmt_mb(max_after)}")
        rows.append((f"Python-heap peak, evaluate() {backend}", f"{peak / MB:,.1f} MB", ""))
        del violations
    rows.append(("process max RSS (ru_maxrss)", fmt_mb(max_rss_mb()), ""))
    print()

    # Summary -----------------------------------------------------------------------------------------
    print(f"Summary: {n:,} entries, Python {platform.python_version()}, CPUs {cpu_count()}, "
          f"best of {repeat} runs, load average now {load_average()}")
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>{value_width}}  target")
    print(f"{'-' * width}  {'-' * value_width}  {'-' * 16}")
    for figure, value, target in rows:
        print(f"{figure:<{width}}  {value:>{value_width}}  {target}")
    print("aggregates per rule: " + "; ".join(aggregate_rates) + " e/s")


if __name__ == "__main__":
    main()
