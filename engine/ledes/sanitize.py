"""Free text made safe for a LEDES field: ASCII, no field or record separators, no line breaks or control
characters, single spaces, and at most a client's length; every change is reported."""

from __future__ import annotations

import re
import unicodedata

_TRANSLIT = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'", "\u02bc": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...", "\u2022": "*", "\u00b7": ".", "\u2044": "/", "\u00d7": "x", "\u00f7": "/",
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O",
    "\u0111": "d", "\u0110": "D", "\u0142": "l", "\u0141": "L", "\u00fe": "th", "\u00de": "Th", "\u00f0": "d",
    "\u00d0": "D", "\u0131": "i",
    "\u20ac": "EUR", "\u00a3": "GBP", "\u00a5": "JPY", "\u00a2": "c", "\u00a9": "(c)", "\u00ae": "(R)",
    "\u00a7": "Sec.", "\u00b6": "para.", "\u00b0": " deg", "\u2116": "No.",
}
_LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACES = re.compile(r" {2,}")


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _examples(chars: list[str]) -> str:
    unique = list(dict.fromkeys(chars))
    shown = " ".join(unique[:5]) + (" ..." if len(unique) > 5 else "")
    return f" ({shown})"


def _to_ascii(text: str, changes: list[str]) -> str:
    out: list[str] = []
    transliterated: list[str] = []
    unknown: list[str] = []
    invisible = marks = 0
    for ch in text:
        if ch < "\x80":
            out.append(ch)
            continue
        if ch in _LINE_BREAKS:
            out.append("\n")  # counted with the other line breaks below
            continue
        replacement = _TRANSLIT.get(ch)
        if replacement is None:
            category = unicodedata.category(ch)
            if category == "Cf":  # zero-width spaces, soft hyphens, byte order marks
                invisible += 1
                continue
            if category in ("Mn", "Mc", "Me"):  # a combining mark with no letter of its own
                marks += 1
                continue
            if category == "Zs":
                replacement = " "
            elif category == "Cc":
                replacement = "\x00"  # a control character: becomes a space below
            else:
                parts = []
                for part in unicodedata.normalize("NFKD", ch):
                    if part < "\x80":
                        parts.append(part)
                    elif unicodedata.combining(part):
                        continue
                    else:
                        parts.append(_TRANSLIT.get(part, "?"))
                replacement = "".join(parts)
                if not replacement or "?" in replacement:
                    unknown.append(ch)
                    out.append("?")
                    continue
        transliterated.append(ch)
        out.append(replacement)
    if transliterated:
        changes.append(f"transliterated {_plural(len(transliterated), 'non-ASCII character')}"
                       f"{_examples(transliterated)}")
    if unknown:
        changes.append(f"replaced {_plural(len(unknown), 'non-ASCII character')} with '?'{_examples(unknown)}")
    if invisible:
        changes.append(f"removed {_plural(invisible, 'invisible formatting character')}")
    if marks:
        changes.append(f"removed {_plural(marks, 'combining mark')}")
    return "".join(out)


def sanitize(text: str, max_length: int | None = None) -> tuple[str, list[str]]:
    """Make free text safe for one LEDES field and say what changed.

    ``|`` becomes ``/``; line breaks, tabs and other control characters become a space; ``[]`` becomes
    ``[ ]``; non-ASCII characters are transliterated (curly quotes, dashes, accented letters) or, failing
    that, replaced by ``?``; runs of spaces are collapsed and the ends stripped; with ``max_length`` the text
    is cut to that many characters. Returns the text and a list of the changes (empty when none).
    """
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 0):
        raise ValueError(f"max_length must be a whole number >= 0, not {max_length!r}")
    changes: list[str] = []
    if text is None:
        return "", changes
    if not isinstance(text, str):
        text = str(text)
    if not text.isascii():
        text = _to_ascii(text, changes)
    pipes = text.count("|")
    if pipes:
        text = text.replace("|", "/")
        changes.append(f"replaced {pipes} '|' with '/'")
    if _CONTROL.search(text):
        text = text.replace("\r\n", "\n")
        breaks = text.count("\n") + text.count("\r")
        others = len(_CONTROL.findall(text)) - breaks
        text = _CONTROL.sub(" ", text)
        if breaks:
            changes.append(f"replaced {_plural(breaks, 'line break')} with a space")
        if others:
            changes.append(f"replaced {_plural(others, 'tab or control character', 'tabs or control characters')}"
                           f" with a space")
    brackets = text.count("[]")
    if brackets:
        text = text.replace("[]", "[ ]")
        changes.append(f"broke {_plural(brackets, 'sequence')} '[]' into '[ ]'")
    runs = len(_SPACES.findall(text))
    if runs:
        text = _SPACES.sub(" ", text)
        changes.append(f"collapsed {_plural(runs, 'run')} of spaces")
    stripped = text.strip()
    if stripped != text:
        text = stripped
        changes.append("removed leading or trailing spaces")
    if max_length is not None and len(text) > max_length:
        before = len(text)
        text = text[:max_length].rstrip()
        changes.append(f"truncated from {before} to {len(text)} characters")
    return text, changes

