"""Response models more than one router answers with."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, model_validator

from engine.errors import OcgateError
from engine.rules.features import EvaluationContext


class RejectionOut(BaseModel):
    id: int
    rejection_id: str
    entry_id: int | None
    line_number: int | None
    kind: str
    reason: str
    reason_code: str | None
    comment: str | None
    amount: Decimal | None
    proposal: dict[str, Any] | None
    received_at: dt.datetime
    resolved_at: dt.datetime | None


AS_OF = ("the date the entries are judged as of, for late_entry and age_days (default: today; a review action "
         "judges an entry as of the date it was judged with before)")
PERIOD_START = "first day of the billing period, for billing_period (default: the entry's stored period, if any)"
PERIOD_END = "last day of the billing period"


class InvalidContext(OcgateError):
    code, status = "invalid_context", 422


def evaluation_context(as_of: dt.date | None, period_start: dt.date | None,
                       period_end: dt.date | None) -> EvaluationContext | None:
    """The context a request gives, or None when it gives none (the workflow then defaults it). A period given
    without an as-of date is judged as of today."""
    if period_start is not None and period_end is not None and period_end < period_start:
        raise InvalidContext(f"period_end {period_end} is before period_start {period_start}")
    if as_of is None and period_start is None and period_end is None:
        return None
    return EvaluationContext(as_of=as_of or dt.date.today(), period_start=period_start, period_end=period_end)


class ContextIn(BaseModel):
    """The evaluation context of an action that judges entries; every field optional."""

    as_of: dt.date | None = Field(default=None, description=AS_OF)
    period_start: dt.date | None = Field(default=None, description=PERIOD_START)
    period_end: dt.date | None = Field(default=None, description=PERIOD_END)

    @model_validator(mode="after")
    def _period_in_order(self) -> ContextIn:
        if self.period_start is not None and self.period_end is not None and self.period_end < self.period_start:
            raise ValueError("period_end is before period_start")
        return self

    def context(self) -> EvaluationContext | None:
        return evaluation_context(self.as_of, self.period_start, self.period_end)
