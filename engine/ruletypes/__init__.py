"""The rule types. Each module declares its types' parameter schemas, compilation and explanation."""

from engine.ruletypes.base import REGISTRY, Adjustment, AggregateHit, RuleProblem, RuleType

# Importing the modules registers their rule types.
from engine.ruletypes import (  # noqa: E402  isort: skip
    aggregates,
    codes,
    condition,
    expenses,
    narrative,
    rates,
    timing,
)

__all__ = ["REGISTRY", "Adjustment", "AggregateHit", "RuleProblem", "RuleType", "aggregates", "codes",
           "condition", "expenses", "narrative", "rates", "timing"]
