"""The two evaluators of per-entry rules: plain Python and durable-rules.

Both return, for a list of entries, the pairs (entry index, compiled rule position) that fire. The
durable-rules backend follows the guardrails measured in docs/engine.md: facts (not events) carrying a
unique id, assert then retract, ``MessageNotHandledException`` caught for clean entries, one
process-wide lock, and rulesets named by content hash and registered once per process.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
from collections.abc import Sequence
from typing import Any

from engine.model import Entry
from engine.rules.compiler import CompiledRuleSet
from engine.rules.features import EvaluationContext

log = logging.getLogger("ocgate.engine")

try:  # durable-rules builds from source and does not import on Python 3.13+
    from durable.engine import Host, MessageNotHandledException

    class _SynchronousHost(Host):
        """A host without the timer threads ``get_host()`` starts: those call into the engine outside our
        lock. Nothing here needs them, since every action runs inside ``assert_fact``."""

        def _run(self) -> None:
            return None

    DURABLE_AVAILABLE = True
    DURABLE_IMPORT_ERROR = ""
except Exception as exc:  # pragma: no cover - depends on the interpreter
    DURABLE_AVAILABLE = False
    DURABLE_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

BACKENDS = ("durable", "python")
_warned = False


class BackendUnavailable(RuntimeError):
    pass


def resolve_backend(name: str | None) -> str:
    """``auto`` (or None) means durable-rules where it imports, else Python (said once per process)."""
    global _warned
    if name in (None, "auto"):
        if DURABLE_AVAILABLE:
            return "durable"
        if not _warned:
            log.warning("durable-rules is not available (%s); using the Python backend", DURABLE_IMPORT_ERROR)
            _warned = True
        return "python"
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r} (choose from auto, {', '.join(BACKENDS)})")
    if name == "durable" and not DURABLE_AVAILABLE:
        raise BackendUnavailable(f"durable-rules is not available here: {DURABLE_IMPORT_ERROR}")
    return name


def run_python(compiled: CompiledRuleSet, entries: Sequence[Entry], ctx: EvaluationContext) -> list[tuple[int, int]]:
    check = compiled.check
    hits: list[tuple[int, int]] = []
    for i, entry in enumerate(entries):
        for position in check(entry, ctx):
            hits.append((i, position))
    return hits


class _Durable:
    """The process's one durable-rules host, used under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.registered: set[str] = set()
        self.fired: list[tuple[int, int]] = []
        self.ids = itertools.count(1)
        self.host: Any = None

    def _action(self, position: int) -> Any:
        fired = self.fired

        def action(c: Any) -> None:
            fired.append((c.m["id"], position))

        return action

    def ensure(self, compiled: CompiledRuleSet) -> None:
        if compiled.durable_name in self.registered:
            return
        if self.host is None:
            self.host = _SynchronousHost()
        definition = copy.deepcopy(compiled.durable_definition)  # set_rulesets mutates what it is given
        for name, rule in definition.items():
            rule["run"] = self._action(int(name[1:].split("_")[0]))
        self.host.set_rulesets({compiled.durable_name: definition})
        self.registered.add(compiled.durable_name)

    def run(self, compiled: CompiledRuleSet, entries: Sequence[Entry], ctx: EvaluationContext) -> list[tuple[int, int]]:
        if not compiled.rules:
            return []
        project = compiled.project
        name = compiled.durable_name
        hits: list[tuple[int, int]] = []
        with self.lock:
            self.ensure(compiled)
            host, fired = self.host, self.fired
            for i, entry in enumerate(entries):
                fact = project(entry, ctx)
                fact["id"] = next(self.ids)
                fired.clear()
                try:
                    host.assert_fact(name, fact)
                except MessageNotHandledException:
                    continue  # a clean entry: no rule matched, so nothing was stored
                try:
                    host.retract_fact(name, fact)
                except MessageNotHandledException:
                    pass
                # A rule split into several branches may fire more than once for one fact.
                hits.extend((i, position) for position in sorted({p for _, p in fired}))
        return hits


_durable = _Durable()


def run_durable(compiled: CompiledRuleSet, entries: Sequence[Entry], ctx: EvaluationContext) -> list[tuple[int, int]]:
    if not DURABLE_AVAILABLE:
        raise BackendUnavailable(f"durable-rules is not available here: {DURABLE_IMPORT_ERROR}")
    if compiled.durable_problem:
        raise BackendUnavailable(compiled.durable_problem)
    return _durable.run(compiled, entries, ctx)
