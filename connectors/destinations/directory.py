"""A directory drop: each invoice becomes ``{invoice_number}.txt`` in a folder (a network share, a folder another
tool uploads from, a folder a billing clerk takes files from for a portal without an API).

Delivery is atomic and idempotent:

* the file is written to a temporary file in the same folder, flushed to disk (``fsync``) and renamed over the
  final name with ``os.replace``, so a reader never sees half a file and a crash leaves at most a stray
  ``.{name}.*.tmp`` file, never a partial ``{invoice_number}.txt``;
* submitting the same package again finds the file with the same SHA-256 and answers
  ``Receipt(already_there=True)``; a file of that name with *different* content is refused (not retryable): an
  invoice number must never be reused for a different invoice.

A folder gives no feedback, so ``status()`` answers ``DELIVERED``, unless someone (a clerk, another tool) drops a
sidecar ``{invoice_number}.rejections.json`` beside the invoice: a JSON list of
``{"line_number": 7 | null, "reason": "...", "reason_code": "...", "comment": "...", "amount": "-120.00", "id": "..."}``
(only ``reason`` is required; ``line_number`` null or absent means the whole invoice). With such a file the
state is ``REJECTED`` when a whole-invoice rejection is listed, otherwise ``ADJUSTED``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from engine import ledes
from engine.ledes import FORMATS, LedesInvoice
from engine.workflows.billing.destinations import (
    DestinationError,
    Package,
    PortalState,
    Receipt,
    Rejection,
    Status,
)

# Invoice numbers become file names: letters, digits and a few separators, never a path.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SIDECAR_SUFFIX = ".rejections.json"


def encode_ledes(text: str) -> bytes:
    """ASCII when the file allows it (what strict portals expect), UTF-8 otherwise."""
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def build_package(invoice: LedesInvoice, fmt: str) -> Package:
    """Render one invoice as a LEDES file package (shared by the destinations; no side effects).

    An invoice the LEDES writer refuses (it would break the format's contract) is a ``DestinationError`` that is
    not retryable: the invoice itself has to be fixed.
    """
    if fmt not in FORMATS:
        raise DestinationError(f"unknown LEDES format {fmt!r}; expected one of {', '.join(FORMATS)}", retryable=False)
    number = invoice.invoice_number
    if not _SAFE_NAME.fullmatch(number or ""):
        raise DestinationError(
            f"invoice number {number!r} cannot be used as a file name (letters, digits, '.', '_' and '-' only)",
            retryable=False,
        )
    try:
        text = ledes.write([invoice], fmt)
    except ledes.LedesError as exc:
        raise DestinationError(f"invoice {number} cannot be written as LEDES {fmt}: {exc}", retryable=False) from exc
    content = encode_ledes(text)
    return Package(
        invoice_number=number,
        file_name=f"{number}.txt",
        content=content,
        format=fmt,
        sha256=hashlib.sha256(content).hexdigest(),
        invoice=invoice,
    )


def check_package(package: Package) -> None:
    """Refuse a package whose bytes do not match its checksum or whose file name is not a plain name."""
    if hashlib.sha256(package.content).hexdigest() != package.sha256:
        raise DestinationError(
            f"package for invoice {package.invoice_number}: content does not match its sha256 (altered after build?)",
            retryable=False,
        )
    if not _SAFE_NAME.fullmatch(package.file_name) or package.file_name in (".", ".."):
        raise DestinationError(f"package file name {package.file_name!r} is not a plain file name", retryable=False)


class DirectoryDrop:
    """Drops each invoice's LEDES file into ``path``. See the module docstring for the guarantees."""

    name = "directory"

    def __init__(self, path: str | os.PathLike[str], fmt: str = "1998b"):
        if fmt not in FORMATS:
            raise DestinationError(
                f"directory drop: unknown LEDES format {fmt!r}; expected one of {', '.join(FORMATS)}", retryable=False
            )
        self.path = Path(path)
        self.format = fmt

    def __repr__(self) -> str:
        return f"DirectoryDrop({str(self.path)!r}, fmt={self.format!r})"

    # -- Destination ------------------------------------------------------------------------------------------

    def build(self, invoice: LedesInvoice, fmt: str | None = None) -> Package:
        return build_package(invoice, fmt or self.format)

    def submit(self, package: Package) -> Receipt:
        check_package(package)
        folder = self.path
        if not folder.is_dir():
            # Not created on the fly: a missing folder usually means an unmounted share, and writing into a fresh
            # local folder instead would lose the invoice silently. It may come back, so retryable.
            raise DestinationError(f"drop folder {folder} does not exist or is not a folder", retryable=True)
        target = folder / package.file_name

        existing = self._existing_sha256(target)
        if existing is not None:
            return self._receipt_for_existing(target, existing, package)

        tmp_name: str | None = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{package.file_name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(package.content)
                handle.flush()
                os.fsync(handle.fileno())
            # Last look before the rename: another run may have delivered meanwhile.
            existing = self._existing_sha256(target)
            if existing is not None:
                return self._receipt_for_existing(target, existing, package)
            os.replace(tmp_name, target)
            tmp_name = None
            _fsync_directory(folder)
        except OSError as exc:
            raise DestinationError(
                f"could not write {target}: {exc.strerror or exc}",
                retryable=not isinstance(exc, PermissionError),
            ) from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
        return Receipt(
            reference=str(target),
            state=PortalState.DELIVERED,
            already_there=False,
            at=dt.datetime.now(dt.UTC),
            raw={"path": str(target), "sha256": package.sha256, "bytes": len(package.content)},
        )

    def status(self, reference: str) -> Status:
        rejections = tuple(self.rejections(reference))
        if not rejections:
            state = PortalState.DELIVERED
        elif any(r.line_number is None for r in rejections):
            state = PortalState.REJECTED
        else:
            state = PortalState.ADJUSTED
        sidecar = self._sidecar(reference)
        return Status(
            reference=reference,
            state=state,
            rejections=rejections,
            raw={"path": str(self._resolve(reference)), "sidecar": str(sidecar) if sidecar.exists() else None},
        )

    def rejections(self, reference: str) -> list[Rejection]:
        sidecar = self._sidecar(reference)
        try:
            text = sidecar.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DestinationError(f"could not read {sidecar}: {exc.strerror or exc}", retryable=True) from exc
        return parse_sidecar(text, source=str(sidecar), invoice_number=_invoice_number_of(sidecar))

    # -- helpers ----------------------------------------------------------------------------------------------

    def _resolve(self, reference: str) -> Path:
        path = Path(reference)
        return path if path.is_absolute() else self.path / path

    def _sidecar(self, reference: str) -> Path:
        path = self._resolve(reference)
        stem = path.name[: -len(".txt")] if path.name.endswith(".txt") else path.name
        return path.with_name(stem + SIDECAR_SUFFIX)

    @staticmethod
    def _existing_sha256(target: Path) -> str | None:
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DestinationError(f"could not read existing {target}: {exc.strerror or exc}", retryable=True) from exc
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def _receipt_for_existing(target: Path, existing_sha256: str, package: Package) -> Receipt:
        if existing_sha256 != package.sha256:
            raise DestinationError(
                f"{target} already exists with different content (sha256 {existing_sha256[:12]}..., this invoice "
                f"{package.sha256[:12]}...): invoice number {package.invoice_number} must not be reused for a "
                "different invoice",
                retryable=False,
            )
        return Receipt(
            reference=str(target),
            state=PortalState.DELIVERED,
            already_there=True,
            at=dt.datetime.now(dt.UTC),
            raw={"path": str(target), "sha256": existing_sha256},
        )


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); silently skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _invoice_number_of(sidecar: Path) -> str:
    return sidecar.name[: -len(SIDECAR_SUFFIX)]


def parse_sidecar(text: str, *, source: str, invoice_number: str) -> list[Rejection]:
    """Read a rejections sidecar. Malformed content is a retryable ``DestinationError`` (a person can fix the file)
    naming the file and the problem."""

    def bad(message: str) -> DestinationError:
        return DestinationError(f"{source}: {message}", retryable=True)

    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise bad(f"line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})") from exc
    if isinstance(data, dict) and isinstance(data.get("rejections"), list):
        data = data["rejections"]
    if not isinstance(data, list):
        raise bad("expected a JSON list of rejections")

    seen: Counter[str] = Counter()
    out: list[Rejection] = []
    for index, item in enumerate(data, start=1):
        where = f"rejection {index}"
        if not isinstance(item, dict):
            raise bad(f"{where}: expected an object with at least \"reason\"")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise bad(f"{where}: \"reason\" must be a non-empty string")
        line = item.get("line_number")
        if line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 1):
            raise bad(f"{where}: \"line_number\" must be a positive whole number or null, not {line!r}")
        code = _optional_str(item, "reason_code", where, bad)
        comment = _optional_str(item, "comment", where, bad)
        amount = _optional_amount(item.get("amount"), where, bad)
        given_id = item.get("id")
        if given_id is not None and not isinstance(given_id, (str, int)):
            raise bad(f"{where}: \"id\" must be a string or a number")
        if given_id is not None:
            rid = f"sidecar:{given_id}"
        else:
            # Stable however often we poll and when a person appends to the file: derived from the content, with
            # an occurrence count for identical entries.
            key = json.dumps([invoice_number, line, reason, code], ensure_ascii=True)
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            seen[digest] += 1
            rid = f"sidecar:{digest}" + (f"-{seen[digest]}" if seen[digest] > 1 else "")
        out.append(
            Rejection(
                id=rid,
                line_number=line,
                reason=reason,
                reason_code=code,
                comment=comment,
                amount=amount,
                raw={k: (str(v) if isinstance(v, Decimal) else v) for k, v in item.items()},
            )
        )
    return out


def _optional_str(item: dict[str, Any], key: str, where: str, bad: Any) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(f"{where}: \"{key}\" must be a string")
    return value


def _optional_amount(value: Any, where: str, bad: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise bad(f"{where}: \"amount\" must be a number or a string such as \"-120.00\"")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise bad(f"{where}: \"amount\" {value!r} is not a number") from None
    if not amount.is_finite():
        raise bad(f"{where}: \"amount\" {value!r} is not a number")
    return amount
