"""The rule types. Each module declares its types' parameter schemas, compilation and explanation."""

# Importing the modules registers their rule types.
from engine.ruletypes import (
    aggregates,
    codes,
    condition,
    expenses,
    narrative,
    rates,
    timing,
)
from engine.ruletypes.base import REGISTRY, Adjustment, AggregateHit, RuleProblem, RuleType

__all__ = ["REGISTRY", "Adjustment", "AggregateHit", "RuleProblem", "RuleType", "aggregates", "codes",
           "condition", "expenses", "narrative", "rates", "timing"]
