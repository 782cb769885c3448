"""Compile a rule set's per-entry rules once, into the inputs of both backends.

* For the Python backend: one generated function that computes the features the rules need and
  returns the positions of the rules an entry breaks.
* For durable-rules: a ruleset definition (conditions as data), and a generated function that projects
  an entry into a fact holding just those features, encoded so that comparisons stay exact.

Aggregate rules are not compiled here; they run in Python over the batch on both paths.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.rules.conditions import (
    And,
    Leaf,
    Node,
    Or,
    all_of,
    encode_constant,
    features_of,
    to_nnf,
)
from engine.rules.features import (
    BOOL,
    DATE,
    DECIMAL,
    DERIVED_FUNCTIONS,
    INT,
    Feature,
    count_segments,
    field_feature,
)
from engine.rules.ruleset import Rule, RuleSet
from engine.rules.types import type_of

_UNSET = object()  # a lazily computed feature not worked out yet
MARKER = "ocg"  # present in every fact; durable-rules needs a positive test beside a bare "$nex"
INLINE_LIST = 6  # longer in/not_in lists become a membership feature
DURABLE_BUDGET = 28  # durable-rules allows 32 expressions per condition; "or" branches spend them
MAX_BRANCHES = 4096


@dataclass
class CompiledRule:
    rule: Rule
    position: int  # index among the compiled per-entry rules
    condition: Node  # negation normal form

    @cached_property
    def features(self) -> dict[str, Feature]:
        """The features this rule reads (to explain a violation without computing the others)."""
        return features_of(self.condition)


@dataclass
class CompiledRuleSet:
    ruleset: RuleSet
    rules: list[CompiledRule]
    aggregates: list[Rule]
    scopes: dict[str, Node | None]  # aggregate rule id -> scope condition
    features: dict[str, Feature]
    check: Any  # (entry, ctx) -> list[int]
    project: Any  # (entry, ctx) -> dict, a durable-rules fact without its id
    durable_definition: dict[str, Any]
    durable_name: str
    durable_problem: str | None  # why durable-rules cannot run this rule set, if it cannot
    python_source: str
    project_source: str


def rule_condition(rule: Rule, ruleset: RuleSet) -> Node:
    """The rule's own condition, narrowed by its ``when`` scope and effective dates."""
    return all_of(scope_condition(rule), type_of(rule).compile(rule, ruleset))


def scope_condition(rule: Rule) -> Node | None:
    parts: list[Node] = []
    if rule.when is not None:
        parts.append(rule.when)
    if rule.effective_from is not None:
        parts.append(Leaf(field_feature("work_date"), "ge", rule.effective_from))
    if rule.effective_to is not None:
        parts.append(Leaf(field_feature("work_date"), "le", rule.effective_to))
    return all_of(*parts) if parts else None


def compile_ruleset(ruleset: RuleSet, statuses: tuple[str, ...] = ("active", "shadow")) -> CompiledRuleSet:
    key = (ruleset.revision, statuses)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    per_entry: list[CompiledRule] = []
    aggregates: list[Rule] = []
    scopes: dict[str, Node | None] = {}
    for rule in ruleset.rules:
        if rule.status not in statuses:
            continue
        if type_of(rule).aggregate:
            aggregates.append(rule)
            scope = scope_condition(rule)
            scopes[rule.id] = to_nnf(scope) if scope is not None else None
        else:
            condition = _memberships(to_nnf(rule_condition(rule, ruleset)))
            per_entry.append(CompiledRule(rule, len(per_entry), condition))
    features: dict[str, Feature] = {}
    for compiled in per_entry:
        features.update(features_of(compiled.condition))
    for scope in scopes.values():
        if scope is not None:
            features.update(features_of(scope))
    gen = _Generator(features)
    python_source = gen.check_function([c.condition for c in per_entry])
    project_source = gen.project_function()
    namespace = gen.namespace()
    exec(compile(python_source, f"<ocgate rules {ruleset.id}@{ruleset.revision}>", "exec"), namespace)
    exec(compile(project_source, f"<ocgate facts {ruleset.id}@{ruleset.revision}>", "exec"), namespace)
    definition: dict[str, Any] = {}
    problem = None
    for c in per_entry:
        branches = split_for_durable(c.condition)
        if branches is None:
            problem = f"rule {c.rule.id} is too large for durable-rules' 32-expression conditions"
            break
        for k, branch in enumerate(branches):
            definition[f"r{c.position}_{k}"] = {"all": [{"m": gen.durable(branch)}]}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:20]
    compiled_set = CompiledRuleSet(
        ruleset=ruleset, rules=per_entry, aggregates=aggregates, scopes=scopes, features=features,
        check=namespace["_check"], project=namespace["_project"], durable_definition=definition,
        durable_name=f"ocg_{digest}", durable_problem=problem, python_source=python_source,
        project_source=project_source,
    )
    _CACHE[key] = compiled_set
    return compiled_set


_CACHE: dict[tuple[str, tuple[str, ...]], CompiledRuleSet] = {}


def _memberships(node: Node) -> Node:
    """Long ``in``/``not_in`` lists become a membership feature compared with true/false."""
    if isinstance(node, And | Or):
        return type(node)(tuple(_memberships(c) for c in node.children))
    if isinstance(node, Leaf) and node.op in ("in", "not_in") and len(node.value) > INLINE_LIST:
        member = Feature("member", node.feature.field, frozenset(node.value), node.feature.label)
        return Leaf(member, "eq", node.op == "in")
    return node


def _cost(node: Node, inside_or: bool = False) -> int:
    """Expressions a condition spends in durable-rules (an over-estimate: leaves only count under "or")."""
    if isinstance(node, Or):
        return 1 + sum(_cost(c, True) for c in node.children)
    if isinstance(node, And):
        return (1 if inside_or else 0) + sum(_cost(c, inside_or) for c in node.children)
    if node.op == "missing":
        return 3 if inside_or else 0
    if node.op in ("in", "not_in"):
        return len(node.value) + 1 if (inside_or or node.op == "in") else 0
    return 1 if inside_or else 0


def split_for_durable(node: Node) -> list[Node] | None:
    """Alternatives whose union is ``node``, each small enough for durable-rules (None if impossible)."""
    out: list[Node] = []
    pending = [node]
    while pending:
        current = pending.pop()
        if _cost(current) <= DURABLE_BUDGET:
            out.append(current)
        elif isinstance(current, Or):
            pending.extend(reversed(current.children))
        elif isinstance(current, And):
            ors = [c for c in current.children if isinstance(c, Or)]
            if not ors:
                return None
            widest = max(ors, key=_cost)
            others = [c for c in current.children if c is not widest]
            pending.extend(reversed([all_of(*others, alt) for alt in widest.children]))
        else:
            return None
        if len(out) + len(pending) > MAX_BRANCHES:
            return None
    return out


def scope_predicate(compiled: CompiledRuleSet, rule: Rule, ctx: Any) -> Any:
    """A Python predicate for an aggregate rule's scope (None when the rule has none)."""
    scope = compiled.scopes.get(rule.id)
    if scope is None:
        return None
    gen = _Generator(features_of(scope))
    source = gen.check_function([scope])
    namespace = gen.namespace()
    exec(compile(source, f"<ocgate scope {rule.id}>", "exec"), namespace)
    check = namespace["_check"]
    return lambda e: bool(check(e, ctx))


class _Generator:
    """Writes Python source for the feature computations and conditions; constants go in a namespace."""

    def __init__(self, features: dict[str, Feature]):
        self.features = features
        self.var: dict[str, str] = {}
        self.constants: dict[str, Any] = {}
        self.base_fields: dict[str, str] = {}
        for key, feature in features.items():
            if feature.kind == "field":
                self.base_fields[feature.field] = self.var[key] = f"f_{feature.field}"
        for key, feature in features.items():
            if feature.kind != "field":
                if feature.kind not in ("derived", "versus"):
                    self.base_fields.setdefault(feature.field, f"f_{feature.field}")
                self.var[key] = f"v{len(self.var)}"

    def const(self, value: Any) -> str:
        name = f"_c{len(self.constants)}"
        self.constants[name] = value
        return name

    def namespace(self) -> dict[str, Any]:
        ns: dict[str, Any] = dict(self.constants)
        ns.update({f"_d_{name}": fn for name, (fn, _) in DERIVED_FUNCTIONS.items()})
        ns["_segments"] = count_segments
        ns["_feature"] = _feature_value
        ns["_enc_dec"] = _enc_dec
        ns["_UNSET"] = _UNSET
        return ns

    def _feature_lines(self, lazy: bool = False) -> list[str]:
        """Assignments of every feature; with ``lazy`` the computed ones start unset and are worked out
        where a condition first reads them (see :meth:`ref`), so a failed cheap guard skips them."""
        lines = [f"    {var} = e.{name}" for name, var in self.base_fields.items()]
        for key, f in self.features.items():
            if f.kind == "field":
                continue
            v = self.var[key]
            if lazy:
                lines.append(f"    {v} = _UNSET")
            else:
                lines.append(f"    {v} = {self.computation(f)}")
        return lines

    def ref(self, key: str) -> str:
        """An expression reading a feature in generated conditions (computing it on first use)."""
        f = self.features[key]
        v = self.var[key]
        if f.kind == "field":
            return v
        return f"({v} if {v} is not _UNSET else ({v} := {self.computation(f)}))"

    def computation(self, f: Feature) -> str:
        """Python source computing a non-field feature from the local field variables."""
        if f.kind == "derived":
            needs_ctx = DERIVED_FUNCTIONS[f.field][1]
            return f"_d_{f.field}(e{', ctx' if needs_ctx else ''})"
        if f.kind == "versus":  # the exact difference of two fields, by the reference computation
            return f"_feature({self.const(f)}, e, ctx)"
        src = self.base_fields[f.field]
        if f.kind == "length":
            expr = f"len({src}.strip())"  # lengths count the text without leading/trailing whitespace
        elif f.kind == "words":
            expr = f"len({src}.split())"
        elif f.kind == "match":
            expr = f"{self.const(f.arg)}.search({src}) is not None"
        elif f.kind == "segments":
            expr = f"_segments({src}, {self.const(f.arg)})"
        elif f.kind == "remainder":
            expr = f"{src} % {self.const(f.arg)}"
        elif f.kind == "member":
            expr = f"{src} in {self.const(f.arg)}"
        else:
            raise ValueError(f"unknown feature kind {f.kind}")
        return f"(None if {src} is None else ({expr}))"

    def expr(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " and ".join(self.expr(c) for c in node.children) + ")"
        if isinstance(node, Or):
            return "(" + " or ".join(self.expr(c) for c in node.children) + ")"
        v = self.ref(node.feature.key)
        op = node.op
        if op == "present":
            return f"({v} is not None)"
        if op == "missing":
            return f"({v} is None)"
        if op == "in":
            return f"({v} in {self.const(frozenset(node.value))})"
        if op == "eq":
            return f"({v} == {self.const(node.value)})"
        # The value is read twice: the first read (which computes a lazy feature) binds the local.
        return f"({v} is not None and {self._compare(self.var[node.feature.key], node)})"

    def _compare(self, v: str, node: Leaf) -> str:
        if node.op == "not_in":
            return f"{v} not in {self.const(frozenset(node.value))}"
        symbol = {"ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[node.op]
        return f"{v} {symbol} {self.const(node.value)}"

    def check_function(self, conditions: list[Node]) -> str:
        lines = ["def _check(e, ctx):", *self._feature_lines(lazy=True), "    hits = []"]
        for position, condition in enumerate(conditions):
            lines.append(f"    if {self.expr(condition)}:")
            lines.append(f"        hits.append({position})")
        lines.append("    return hits")
        return "\n".join(lines) + "\n"

    def project_function(self) -> str:
        lines = ["def _project(e, ctx):", *self._feature_lines(), f"    fact = {{{MARKER!r}: 1}}"]
        for index, (key, f) in enumerate(self.features.items()):
            v = self.var[key]
            kind = f.type
            if kind in (DECIMAL, INT):
                enc = f"_enc_dec({v})"
            elif kind == DATE:
                enc = f"{v}.toordinal()"
            elif kind == BOOL:
                enc = f"1 if {v} else 0"
            else:
                enc = f"str({v})"
            lines.append(f"    if {v} is not None:")
            lines.append(f"        fact['k{index}'] = {enc}")
        lines.append("    return fact")
        return "\n".join(lines) + "\n"

    def durable(self, node: Node) -> dict[str, Any]:
        """The same condition in durable-rules' data form, over the projected fact's keys."""
        keys = {key: f"k{i}" for i, key in enumerate(self.features)}
        return _durable(node, keys, self.features)


def _feature_value(feature: Feature, e: Any, ctx: Any) -> Any:
    return feature.compute(e, ctx)


def _enc_dec(value: Any) -> int:
    """Same result as ``encode_fact_value(DECIMAL, value)``, faster: this runs for every fact."""
    if type(value) is int:
        return 2_000_000 * value
    scaled = value.scaleb(6)  # exact: only the exponent changes
    whole = int(scaled)  # towards zero
    if whole == scaled:
        return 2 * whole
    return 2 * (whole - 1 if scaled < 0 else whole) + 1


def _durable(node: Node, keys: dict[str, str], features: dict[str, Feature]) -> dict[str, Any]:
    if isinstance(node, And):
        return {"$and": [_durable(c, keys, features) for c in node.children]}
    if isinstance(node, Or):
        return {"$or": [_durable(c, keys, features) for c in node.children]}
    key = keys[node.feature.key]
    kind = node.feature.type
    op = node.op
    if op == "present":
        return {"$ex": {key: 1}}
    if op == "missing":
        return {"$and": [{MARKER: 1}, {"$nex": {key: 1}}]}
    if op == "in":
        values = [encode_constant(kind, v) for v in node.value]
        return {key: values[0]} if len(values) == 1 else {"$or": [{key: v} for v in values]}
    if op == "not_in":
        return {"$and": [{"$neq": {key: encode_constant(kind, v)}} for v in node.value]}
    value = encode_constant(kind, node.value)
    if op == "eq":
        return {key: value}
    return {{"ne": "$neq", "lt": "$lt", "le": "$lte", "gt": "$gt", "ge": "$gte"}[op]: {key: value}}
