"""The rule types. Each module declares its types' parameter schemas, compilation and explanation."""

# Importing the modules registers their rule types.
from engine.rules.types import (
    aggregates,
    codes,
    condition,
    expenses,
    narrative,
    rates,
    staffing,
    timing,
)
from engine.rules.types.base import REGISTRY, Adjustment, AggregateHit, RuleProblem, RuleType, type_of

__all__ = ["REGISTRY", "Adjustment", "AggregateHit", "RuleProblem", "RuleType", "aggregates", "codes",
           "condition", "expenses", "narrative", "rates", "staffing", "timing", "type_of"]
