"""What a client asks of its invoices (the ``invoicing:`` block of its rule set) and who the firm is.

Legal ops write the client's side from the OCG: LEDES format, 2014 or legacy timekeeper codes, one matter
per invoice or several, tax for 98BI, invoice-level discounts. Firm IT sets the firm's side once
(``ocgate firm set``): its LEDES law firm id, name and address, and the invoice number prefix.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.codes import code_kind
from engine.ledes.model import Party

# LEDES 2014 classification -> pre-2014 two-letter code, for clients that still take the legacy codes.
LEGACY_CODES = {"PARTNR": "PT", "ASSOC": "AS", "OFCOUN": "OC", "PARALG": "LA", "LGLAST": "LA"}
MODERN_CODES = {"PT": "PARTNR", "AS": "ASSOC", "OC": "OFCOUN", "LA": "PARALG"}
ALNUM = re.compile(r"^[A-Za-z0-9]+$")


class ProfileProblem(ValueError):
    def __init__(self, path: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(frozen=True)
class Discount:
    kind: str  # fees (an IF line) or expenses (an IE line)
    description: str
    percent: Decimal | None = None  # of the fee or expense subtotal
    amount: Decimal | None = None  # a fixed credit, given as a positive number
    expense_code: str | None = None  # IE lines carry one (Legal Tracker requires it)


@dataclass(frozen=True)
class InvoicingProfile:
    format: str = "1998b"
    timekeeper_codes: str = "2014"
    multiple_matters: bool = False
    reviewer_adjustments: str = "line_adjustment"  # or "restate": bill the adjusted hours and rate as such
    max_description: int | None = None
    require_client_matter_id: bool = False
    tax_rate: Decimal | None = None
    tax_type: str = ""
    client_tax_id: str = ""
    po_number: str = ""
    client: Party = field(default_factory=Party)
    discounts: tuple[Discount, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Decimal):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value
        return plain(asdict(self))


def _decimal(value: Any, path: tuple[str | int, ...]) -> Decimal:
    if isinstance(value, float):
        value = repr(value)  # YAML numbers such as 0.2: their written form, not the binary value
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ProfileProblem(path, f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ProfileProblem(path, f"{value!r} is not a finite number")
    return number


def parse_profile(data: dict[str, Any] | None) -> InvoicingProfile:
    """The profile from a rule set's ``invoicing`` block (already shape-checked by the JSON Schema)."""
    data = data or {}
    problems = profile_problems(data)
    if problems:
        raise problems[0]
    tax = data.get("tax") or {}
    discounts = tuple(
        Discount(kind=d["kind"], description=d["description"],
                 percent=_decimal(d["percent"], ()) if "percent" in d else None,
                 amount=_decimal(d["amount"], ()) if "amount" in d else None,
                 expense_code=(d.get("expense_code") or "").upper() or None)
        for d in data.get("discounts") or [])
    return InvoicingProfile(
        format=data.get("format", "1998b"), timekeeper_codes=str(data.get("timekeeper_codes", "2014")),
        multiple_matters=bool(data.get("multiple_matters", False)),
        reviewer_adjustments=data.get("reviewer_adjustments", "line_adjustment"),
        max_description=data.get("max_description"),
        require_client_matter_id=bool(data.get("require_client_matter_id", False)),
        tax_rate=_decimal(tax["rate"], ()) if "rate" in tax else None, tax_type=tax.get("type", ""),
        client_tax_id=data.get("client_tax_id", ""), po_number=data.get("po_number", ""),
        client=Party(**(data.get("client") or {})), discounts=discounts)


def profile_problems(data: dict[str, Any]) -> list[ProfileProblem]:
    """What is wrong with an ``invoicing`` block beyond its shape: numbers, codes, combinations."""
    problems: list[ProfileProblem] = []
    tax = data.get("tax") or {}
    if "rate" in tax:
        try:
            rate = _decimal(tax["rate"], ("tax", "rate"))
            if not Decimal(0) <= rate < 1:
                problems.append(ProfileProblem(("tax", "rate"), f"a tax rate is a fraction in [0, 1), not {rate} "
                                               "(write 0.20 for 20%)"))
        except ProfileProblem as problem:
            problems.append(problem)
        if data.get("format", "1998b") != "98bi":
            problems.append(ProfileProblem(("tax",), "LEDES 1998B carries no tax: set format: 98bi"))
    for index, discount in enumerate(data.get("discounts") or []):
        base: tuple[str | int, ...] = ("discounts", index)
        given = [k for k in ("percent", "amount") if k in discount]
        if len(given) != 1:
            problems.append(ProfileProblem(base, "a discount has either percent or amount"))
            continue
        try:
            value = _decimal(discount[given[0]], (*base, given[0]))
        except ProfileProblem as problem:
            problems.append(problem)
            continue
        if value <= 0 or (given[0] == "percent" and value > 100):
            problems.append(ProfileProblem((*base, given[0]), f"{value} is not a discount (write a positive "
                                           "amount, or a percent up to 100)"))
        if discount["kind"] == "expenses":
            code = (discount.get("expense_code") or "").upper()
            if not code:
                problems.append(ProfileProblem(base, "an expense discount (an IE line) needs an expense_code"))
            elif code_kind(code) != "expense":
                problems.append(ProfileProblem((*base, "expense_code"), f"{code} is not a UTBMS expense code"))
    return problems


@dataclass(frozen=True)
class FirmSettings:
    """The firm's identity on its invoices."""

    law_firm_id: str = "None"  # LEDES LAW_FIRM_ID: the US federal tax id; Legal Tracker wants "None" without one
    invoice_prefix: str = "INV"  # invoice numbers are the prefix and a sequence: letters and digits only
    firm: Party = field(default_factory=Party)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FirmSettings:
        data = dict(data or {})
        firm = Party(**(data.pop("firm", None) or {}))
        return cls(firm=firm, **{k: v for k, v in data.items() if k in ("law_firm_id", "invoice_prefix")})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_prefix(prefix: str) -> str:
    if not ALNUM.match(prefix) or len(prefix) > 10:
        raise ValueError(f"invoice prefix {prefix!r}: letters and digits only, at most 10 (strict portals "
                         "refuse '-', '/' and '_' in invoice numbers)")
    return prefix


def classification(code: str | None, scheme: str) -> str:
    """The timekeeper classification as the client wants it: 2014 codes, or the legacy two letters."""
    if not code:
        return ""
    code = code.upper()
    if scheme == "legacy":
        return code if code in MODERN_CODES or code == "OT" else LEGACY_CODES.get(code, "OT")
    return MODERN_CODES.get(code, code)
