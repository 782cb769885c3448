from __future__ import annotations

import errno
import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.destinations import directory as directory_module
from connectors.destinations.directory import DirectoryDrop
from engine.workflows.billing.destinations import DestinationError, Package, PortalState
from tests.connectors import make_invoice


@pytest.fixture
def drop(tmp_path: Path) -> DirectoryDrop:
    return DirectoryDrop(tmp_path)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_build_renders_ledes_with_checksum(drop: DirectoryDrop) -> None:
    package = drop.build(make_invoice())
    assert package.file_name == "INV1001.txt"
    assert package.format == "1998b"
    assert package.content.startswith(b"LEDES1998B[]")
    assert package.sha256 == hashlib.sha256(package.content).hexdigest()
    package.content.decode("ascii")


def test_build_turns_the_writers_refusal_into_a_clear_error(drop: DirectoryDrop) -> None:
    # A 98BI file needs currency, tax and matter names this invoice does not have.
    with pytest.raises(DestinationError) as info:
        drop.build(make_invoice(), "98bi")
    assert not info.value.retryable
    assert "INV1001" in str(info.value) and "98bi" in str(info.value)


def test_build_refuses_an_invoice_number_that_is_not_a_file_name(drop: DirectoryDrop) -> None:
    with pytest.raises(DestinationError) as info:
        drop.build(make_invoice("../etc/passwd"))
    assert not info.value.retryable


def test_submit_writes_the_file_and_nothing_else(drop: DirectoryDrop, tmp_path: Path) -> None:
    package = drop.build(make_invoice())
    receipt = drop.submit(package)
    target = tmp_path / "INV1001.txt"
    assert receipt.reference == str(target)
    assert receipt.state is PortalState.DELIVERED
    assert not receipt.already_there
    assert target.read_bytes() == package.content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["INV1001.txt"]


def test_submit_renames_a_temporary_file_from_the_same_folder(drop: DirectoryDrop, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        assert Path(src).read_bytes() == package.content  # complete before it gets its final name
        real_replace(src, dst)

    monkeypatch.setattr(directory_module.os, "replace", spy)
    package = drop.build(make_invoice())
    drop.submit(package)
    [(src, dst)] = calls
    assert Path(src).parent == tmp_path and Path(src).name.endswith(".tmp")
    assert dst == str(tmp_path / "INV1001.txt")


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failure_mid_write_leaves_no_invoice_file_and_no_temp_file(
    drop: DirectoryDrop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    def boom(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(directory_module.os, failing, boom)
    with pytest.raises(DestinationError) as info:
        drop.submit(drop.build(make_invoice()))
    assert info.value.retryable
    assert "No space left" in str(info.value)
    assert not (tmp_path / "INV1001.txt").exists()
    assert leftovers(tmp_path) == []


def test_resubmitting_the_same_package_is_recognised(drop: DirectoryDrop, tmp_path: Path) -> None:
    package = drop.build(make_invoice())
    drop.submit(package)
    before = (tmp_path / "INV1001.txt").stat()
    again = drop.submit(drop.build(make_invoice()))
    assert again.already_there
    assert again.state is PortalState.DELIVERED
    after = (tmp_path / "INV1001.txt").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_different_invoice_under_a_used_number_is_refused(drop: DirectoryDrop, tmp_path: Path) -> None:
    drop.submit(drop.build(make_invoice()))
    original = (tmp_path / "INV1001.txt").read_bytes()
    with pytest.raises(DestinationError) as info:
        drop.submit(drop.build(make_invoice(first_hours="3.0")))
    assert not info.value.retryable
    assert "INV1001" in str(info.value) and "different content" in str(info.value)
    assert (tmp_path / "INV1001.txt").read_bytes() == original


def test_a_tampered_package_is_refused(drop: DirectoryDrop, tmp_path: Path) -> None:
    package = drop.build(make_invoice())
    tampered = Package(**{**package.__dict__, "content": package.content + b"x"})
    with pytest.raises(DestinationError) as info:
        drop.submit(tampered)
    assert not info.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_a_retryable_error(tmp_path: Path) -> None:
    drop = DirectoryDrop(tmp_path / "share-not-mounted")
    with pytest.raises(DestinationError) as info:
        drop.submit(drop.build(make_invoice()))
    assert info.value.retryable
    assert not (tmp_path / "share-not-mounted").exists()


def test_unknown_format_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(DestinationError) as info:
        DirectoryDrop(tmp_path, fmt="2000")
    assert not info.value.retryable


def test_status_without_sidecar_is_delivered(drop: DirectoryDrop) -> None:
    receipt = drop.submit(drop.build(make_invoice()))
    status = drop.status(receipt.reference)
    assert status.state is PortalState.DELIVERED
    assert status.rejections == ()
    assert drop.rejections(receipt.reference) == []


def test_sidecar_rejections_are_read_with_stable_ids(drop: DirectoryDrop, tmp_path: Path) -> None:
    receipt = drop.submit(drop.build(make_invoice()))
    (tmp_path / "INV1001.rejections.json").write_text(json.dumps([
        {"line_number": 1, "reason": "Fee - Excessive time", "reason_code": "EXCESS", "amount": -600.00,
         "comment": "cap is 6 hours"},
        {"line_number": 3, "reason": "Expense - Not reimbursable"},
    ]))
    status = drop.status(receipt.reference)
    assert status.state is PortalState.ADJUSTED
    first, second = status.rejections
    assert (first.line_number, first.reason, first.reason_code, first.comment) == (
        1, "Fee - Excessive time", "EXCESS", "cap is 6 hours")
    assert first.amount == Decimal("-600.00")
    assert (second.line_number, second.reason, second.amount) == (3, "Expense - Not reimbursable", None)
    assert first.id != second.id
    assert [r.id for r in drop.rejections(receipt.reference)] == [first.id, second.id]

    # A person appends a whole-invoice rejection: earlier ids do not change, the state becomes REJECTED.
    data = json.loads((tmp_path / "INV1001.rejections.json").read_text())
    data.insert(0, {"line_number": None, "reason": "Invoice - Wrong matter"})
    (tmp_path / "INV1001.rejections.json").write_text(json.dumps(data))
    status = drop.status(receipt.reference)
    assert status.state is PortalState.REJECTED
    assert status.rejections[0].line_number is None
    assert [r.id for r in status.rejections[1:]] == [first.id, second.id]


@pytest.mark.parametrize(("text", "message"), [
    ('[{"line_number": 1, "reason": "x"}', "line 1"),
    ('[{"line_number": 0, "reason": "x"}]', "line_number"),
    ('[{"line_number": 2}]', "reason"),
    ('{"line_number": 2, "reason": "x"}', "list"),
    ('[{"reason": "x", "amount": "lots"}]', "amount"),
])
def test_a_malformed_sidecar_is_a_clear_error(drop: DirectoryDrop, tmp_path: Path, text: str, message: str) -> None:
    receipt = drop.submit(drop.build(make_invoice()))
    (tmp_path / "INV1001.rejections.json").write_text(text)
    with pytest.raises(DestinationError) as info:
        drop.status(receipt.reference)
    assert "INV1001.rejections.json" in str(info.value)
    assert message in str(info.value)
