"""UTBMS code sets and LEDES timekeeper classifications, shipped as package data."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class UtbmsCode:
    code_set: str
    kind: str  # task, activity, expense or phase
    code: str
    name: str
    parent: str | None


# Pre-2014 two-letter classifications some clients still ask for (PT/AS appear in the LOC sample file).
LEGACY_CLASSIFICATIONS = frozenset({"PT", "AS", "OC", "LA", "OT"})

# Plain words for the classifications a reviewer meets most (for ``ocgate rules explain``); others show as codes.
CLASSIFICATION_NAMES = {
    "PARTNR": "partner", "ASSOC": "associate", "OFCOUN": "of counsel", "PARALG": "paralegal",
    "LGLAST": "legal assistant", "LGLINT": "legal intern", "STFATT": "staff attorney",
    "TEMPAT": "temporary attorney", "TRANEE": "trainee", "LGPRMG": "legal project manager", "LIBRRN": "librarian",
    "EXPERT": "expert", "CONSLT": "consultant", "INVSTG": "investigator", "TRANSL": "translator",
    "MEDITR": "mediator", "ARBITR": "arbitrator", "CTRPTR": "court reporter", "VIDOGR": "videographer",
    "AUDITR": "auditor", "ANALST": "analyst", "SECNDE": "secondee", "RSRCHR": "researcher",
    "PT": "partner, pre-2014 code", "AS": "associate, pre-2014 code", "OC": "of counsel, pre-2014 code",
    "LA": "legal assistant, pre-2014 code", "OT": "other timekeeper, pre-2014 code",
}


@cache
def utbms_codes() -> dict[str, UtbmsCode]:
    """Every UTBMS code we ship, by code (``L110``, ``A103``, ``E101``, ...)."""
    codes: dict[str, UtbmsCode] = {}
    folder = resources.files("engine") / "data" / "utbms"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".csv"):
            continue
        with item.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                codes[row["code"]] = UtbmsCode(
                    row["set"], row["kind"], row["code"], row["name"], row["parent"] or None
                )
    return codes


def code_kind(code: str) -> str | None:
    found = utbms_codes().get(code.upper())
    return found.kind if found else None


def codes_of_kind(*kinds: str) -> frozenset[str]:
    return frozenset(c.code for c in utbms_codes().values() if c.kind in kinds)


@cache
def timekeeper_classifications() -> frozenset[str]:
    text = (resources.files("engine") / "data" / "timekeeper_classifications.txt").read_text("utf-8")
    words = [w for line in text.splitlines() if not line.startswith("#") for w in line.split()]
    return frozenset(words)


def is_known_classification(code: str) -> bool:
    return code in timekeeper_classifications() or code in LEGACY_CLASSIFICATIONS


def closest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The item of ``known`` most like ``name`` (for "did you mean ..."), or None when nothing is close.
    Compared without regard to case; the item is returned as given."""
    by_folded = {item.casefold(): item for item in known}
    found = difflib.get_close_matches(name.casefold(), list(by_folded), n=1, cutoff=cutoff)
    return by_folded[found[0]] if found else None


def classification_meaning(code: str) -> str | None:
    """What a LEDES classification code stands for, in words (None for an unknown code)."""
    return CLASSIFICATION_NAMES.get(code)
