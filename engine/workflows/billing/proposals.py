"""Which rule would have caught what the client's portal rejected, before the invoice left the firm.

Given the rejected entry, the portal's words and the client's rule sets, a proposal is one of:

* ``override``: an active rule flagged the entry and a reviewer approved it anyway; the portal agreed with
  the rule.
* ``activate``: a shadow or draft rule flags the entry; promoting it would have held the line.
* ``tighten``: the client's rule of the matching type let the entry pass; changed parameters that flag it.
* ``new``: no rule of that type; a new rule that flags it.

Every ``tighten`` and ``new`` proposal carries the rule as YAML and is checked: the proposed rule is loaded
and evaluated on the entry (``verified``). Proposals are suggestions for legal ops, never applied by
themselves.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import yaml

from engine.model import Entry, EntryKind
from engine.rules.evaluate import evaluate
from engine.rules.features import EvaluationContext
from engine.rules.loader import RuleSetError, load_text
from engine.rules.ruleset import RuleSet

# What a portal's reason text says, mapped to our rule types; the first match wins, so the specific come first.
REASON_TYPES: list[tuple[re.Pattern[str], str]] = [(re.compile(p, re.I), t) for p, t in [
    (r"block[- ]?bill", "block_billing"),
    (r"duplicate", "duplicate"),
    (r"\bdaily\b|per day|in (a|one) day", "daily_hours_cap"),
    (r"increment", "billing_increment"),
    (r"excess\w* (time|hours)|too many hours|hours? (exceed|over|above)|time (exceed|over)", "max_hours_per_entry"),
    (r"\brate\b|rates\b", "rate_cap"),
    (r"vague|insufficient|inadequate|description|narrative|detail", "narrative"),
    (r"(missing|no|required|invalid) (utbms |task |activity |expense )?code", "required_codes"),
    (r"task code|activity code|administrative|clerical|overhead|not (billable|permitted|reimbursable)|"
     r"non[- ]?(billable|reimbursable)", "blocked_codes"),
    (r"late|stale|older than|billed after|timely", "late_entry"),
    (r"timekeeper|staffing|not approved|unapproved", "approved_timekeepers"),
    (r"meal|hotel|lodging|mileage|copy|copies|expense|travel", "expense_cap"),
    (r"billing period|outside (the )?period", "billing_period"),
]]
TENTH = Decimal("0.1")


class _Dumper(yaml.SafeDumper):
    """Writes decimals as YAML numbers, digit for digit."""


_Dumper.add_representer(Decimal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:float",
                                                                               str(value)))


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def reason_types(reason: str, code: str | None = None) -> list[str]:
    text = f"{reason} {code or ''}".replace("_", " ")
    found: list[str] = []
    for pattern, rule_type in REASON_TYPES:
        if pattern.search(text) and rule_type not in found:
            found.append(rule_type)
    return found


def _hours(entry: Entry) -> Decimal | None:
    return entry.hours_billed if entry.hours_billed is not None else entry.quantity


def _params(rule_type: str, entry: Entry, existing: dict[str, Any] | None) -> dict[str, Any] | None:
    """Parameters of ``rule_type`` that flag ``entry``, starting from an existing rule's where there is one."""
    params = dict(existing or {})
    fee = entry.entry_kind is EntryKind.TIME
    hours = _hours(entry)
    if rule_type in ("max_hours_per_entry", "daily_hours_cap") and hours is not None and hours > TENTH:
        params["max_hours"] = hours - TENTH
        return params
    if rule_type == "rate_cap" and fee and entry.rate is not None and entry.timekeeper_classification:
        caps = dict(params.get("by_classification") or {})
        caps[entry.timekeeper_classification] = entry.rate - 1
        params["by_classification"] = caps
        return params
    if rule_type == "narrative":
        if existing and existing.get("forbidden_phrases"):
            return None  # a vague-word list we cannot extend from one narrative: a person should look
        params.pop("forbidden_phrases", None)
        params["min_length"] = len(entry.narrative.strip()) + 1
        params.setdefault("unit", "characters")
        if params.get("unit") == "words":
            params["min_length"] = len(entry.narrative.split()) + 1
        if not fee:
            params["applies_to"] = "all"
        return params
    if rule_type == "blocked_codes":
        key, code = (("task_codes", entry.utbms_task_code) if fee else ("expense_codes", entry.utbms_expense_code))
        if not code:
            return None
        params[key] = sorted({*(params.get(key) or []), code})
        return params
    if rule_type == "approved_timekeepers" and existing and fee:
        field = existing.get("timekeeper_field", "timekeeper_ledes_id")
        value = getattr(entry, field, None)
        kept = [t for t in existing.get("timekeepers") or [] if t != value]
        if not kept or len(kept) == len(existing.get("timekeepers") or []):
            return None
        params["timekeepers"] = kept
        return params
    if rule_type == "expense_cap" and not fee and entry.utbms_expense_code and entry.billed_amount is not None:
        cap = {"expense_codes": [entry.utbms_expense_code], "per": "entry", "max": entry.billed_amount - 1}
        params["caps"] = [c for c in params.get("caps") or []
                          if entry.utbms_expense_code not in c.get("expense_codes", [])] + [cap]
        return params
    if rule_type == "late_entry":
        age = (dt.date.today() - entry.work_date).days
        if age > 1:
            params["max_age_days"] = age - 1
            return params
        return None
    if rule_type in ("block_billing", "duplicate", "billing_period", "billing_increment") and existing is None:
        return {"block_billing": {"min_tasks": 2}, "duplicate": {}, "billing_period": {},
                "billing_increment": {"increment": TENTH}}[rule_type]
    return None


def _condition_rule(entry: Entry) -> dict[str, Any] | None:
    """The fallback: a condition on the line's most specific code."""
    for field in ("utbms_task_code", "utbms_expense_code", "utbms_activity_code"):
        value = getattr(entry, field)
        if value:
            return {"condition": {"field": field, "op": "eq", "value": value}}
    return None


def _check(rule: dict[str, Any], entry: Entry, ruleset: RuleSet | None) -> tuple[str, bool]:
    """The proposed rule as YAML, and whether it flags the entry when loaded and evaluated."""
    document = {"id": "proposal", "version": "1", "rules": [rule]}
    if ruleset is not None and ruleset.currency:
        document["currency"] = ruleset.currency
    text = _yaml({"rules": [rule]})
    if rule.get("type") in ("daily_hours_cap", "duplicate"):
        return text, False  # batch rules: they judge a timekeeper's day, not one line
    try:
        loaded = load_text(_yaml(document), "<proposal>")
    except RuleSetError:
        return text, False
    found = evaluate([entry], loaded, context=EvaluationContext(as_of=dt.date.today()), backend="python",
                     statuses=("active",))
    return text, any(v.rule_id == rule["id"] for v in found)


def propose(entry: Entry, reason: str, reason_code: str | None,
            rulesets: Sequence[tuple[RuleSet, str]]) -> dict[str, Any]:
    """The rule that would have caught what the portal rejected; see the module's docstring."""
    types = reason_types(reason, reason_code)
    context = EvaluationContext(as_of=dt.date.today())
    flagged: list[tuple[RuleSet, str, Any]] = []
    for ruleset, version_status in rulesets:
        for v in evaluate([entry], ruleset, context=context, backend="python",
                          statuses=("active", "shadow", "draft")):
            flagged.append((ruleset, version_status, v))
    matching = [f for f in flagged if not types or f[2].rule_type in types]
    for ruleset, version_status, v in matching:
        if v.rule_status == "active" and version_status == "active":
            return {"kind": "override", "ruleset_id": ruleset.id, "rule_id": v.rule_id, "rule_type": v.rule_type,
                    "why": f"rule {v.rule_id} flagged this line and a reviewer approved it; the portal sided with "
                           "the rule", "verified": True}
    for ruleset, version_status, v in matching:
        status = v.rule_status if v.rule_status != "active" else f"in a {version_status} version"
        return {"kind": "activate", "ruleset_id": ruleset.id, "rule_id": v.rule_id, "rule_type": v.rule_type,
                "why": f"rule {v.rule_id} ({status}) flags this line: make it active", "verified": True}
    primary = rulesets[0][0] if rulesets else None
    for rule_type in types:
        for ruleset, _ in rulesets:
            for rule in ruleset.rules:
                if rule.type != rule_type:
                    continue
                params = _params(rule_type, entry, rule.params)
                if params is None:
                    continue
                proposal = {"id": rule.id, "title": rule.title, "type": rule_type, "severity": rule.severity,
                            "params": params}
                text, verified = _check(proposal, entry, ruleset)
                return {"kind": "tighten", "ruleset_id": ruleset.id, "rule_id": rule.id, "rule_type": rule_type,
                        "why": f"rule {rule.id} let this line pass; these parameters would flag it", "yaml": text,
                        "verified": verified}
        params = _params(rule_type, entry, None)
        if params is not None:
            return _new(entry, reason, rule_type, {"params": params}, primary)
    condition = _condition_rule(entry)
    if condition is not None:
        return _new(entry, reason, "condition", condition, primary)
    return {"kind": "none", "why": "no rule type matches the portal's reason; a person should read it",
            "verified": False}


def _new(entry: Entry, reason: str, rule_type: str, body: dict[str, Any], ruleset: RuleSet | None) -> dict[str, Any]:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", reason).strip("-").upper()[:40] or "REJECTED"
    rule = {"id": f"PORTAL-{slug}", "title": f"Rejected by the client's portal: {reason}"[:200], "type": rule_type,
            "severity": "error", "references": [f"portal rejection: {reason}"], **body}
    text, verified = _check(rule, entry, ruleset)
    return {"kind": "new", "ruleset_id": ruleset.id if ruleset else None, "rule_id": rule["id"],
            "rule_type": rule_type, "why": f"no rule of type {rule_type} caught this line; this one would",
            "yaml": text, "verified": verified}


Proposer = Callable[[Entry, str, str | None, Sequence[tuple[RuleSet, str]]], dict[str, Any]]
