"""Response models more than one router answers with."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from pydantic import BaseModel


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
