"""``ocgate rules check`` on folders and ``ocgate rules explain``: exit codes, positions, suggestions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from api.cli import main
from engine.rules.loader import load_file
from tests.conftest import REPO, locate

RULES = REPO / "rules"
GLOBEX = RULES / "globex-plc.yaml"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def bundled_rule_files() -> list[Path]:
    return sorted(p for p in RULES.rglob("*.y*ml") if not p.name.endswith((".tests.yaml", ".tests.yml")))


# rules check FOLDER -----------------------------------------------------------------------------------

def test_check_the_bundled_folder(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "check", str(RULES))
    assert code == 0, out
    files = bundled_rule_files()
    for file in files:
        ruleset = load_file(file)
        assert f"{file}: ok: {ruleset.id} version {ruleset.version}, {len(ruleset.rules)} rules" in out
    assert ".tests.yaml" not in out and "schema" not in out
    assert out.rstrip().endswith(f"{len(files)} ok, 0 with problems")


def test_check_the_bundled_folder_explains_rate_cap_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "check", str(GLOBEX))
    assert code == 0
    assert (f"{GLOBEX}: GLX-RATE-001: which cap applies (the default): the first that exists of matter_timekeeper > "
            "matter_classification > timekeeper > classification") in out
    assert "ok, 0 with problems" not in out  # one file: no tally


BROKEN = "id: broken\nversion: 1\nrules:\n  - id: R1\n    title: t\n    type: blocked_codes\n" \
         "    params: {task_codes: [L999]}\n"


def test_check_a_folder_with_a_broken_file_exits_2_with_positions(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    nested = folder / "clients"
    nested.mkdir(parents=True)
    shutil.copy(GLOBEX, folder / "globex-plc.yaml")
    shutil.copy(RULES / "globex-plc.tests.yaml", folder / "globex-plc.tests.yaml")  # not a rule file: skipped
    (folder / "ocg-ruleset.schema.yaml").write_text("{}\n", encoding="utf-8")  # nor is a schema
    (folder / "notes.txt").write_text("not yaml at all: [", encoding="utf-8")
    broken = nested / "broken.yml"
    broken.write_text(BROKEN, encoding="utf-8")
    code, out, _ = cli(capsys, "rules", "check", str(folder))
    assert code == 2
    line, column = locate(BROKEN, "L999")
    assert f"{broken}:{line}:{column}: rules/0 (R1)/params/task_codes/0: unknown UTBMS code 'L999'" in out
    assert f"{folder / 'globex-plc.yaml'}: ok:" in out
    assert "tests.yaml" not in out and "schema" not in out and "notes.txt" not in out
    assert out.rstrip().endswith("1 ok, 1 with problems")


def test_check_an_empty_folder_and_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "only.tests.yaml").write_text("cases: []\n", encoding="utf-8")
    missing = tmp_path / "missing.yaml"
    code, out, _ = cli(capsys, "rules", "check", str(empty), str(missing), str(GLOBEX))
    assert code == 2
    assert f"{empty}: no rule files (*.yaml, *.yml) in this folder" in out
    assert f"{missing}:1:1: cannot read file" in out
    assert f"{GLOBEX}: ok:" in out
    assert out.rstrip().endswith("1 ok, 2 with problems")


# rules explain ----------------------------------------------------------------------------------------

def test_explain_one_rule(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "explain", str(GLOBEX), "GLX-NARR-001")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Globex Outside Counsel Guidelines (globex-ocg, version 2026.2, revision ")
    assert "GLX-NARR-001: Narrative too short" in lines
    assert "      - has fewer than 5 words;" in lines
    assert sum(1 for line in lines if line.startswith("GLX-")) == 1


@pytest.mark.parametrize("argv", [[], ["--all"], ["GLX-NARR-001", "--all"]])
def test_explain_every_rule(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = cli(capsys, "rules", "explain", str(GLOBEX), *argv)
    assert code == 0
    shown = [line.split(":")[0] for line in out.splitlines() if line.startswith("GLX-")]
    assert shown == [rule.id for rule in load_file(GLOBEX).rules]


def test_explain_an_unknown_rule_suggests_the_known_ids(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "rules", "explain", str(GLOBEX), "GLX-NARR-001", "GLX-NAR-002")
    assert code == 2
    assert out == ""
    assert err.startswith(f"ocgate: {GLOBEX}: no rule 'GLX-NAR-002' (did you mean GLX-NARR-002?); its rules are "
                          "GLX-RATE-001, GLX-STAFF-001, ")


def test_explain_a_broken_file_lists_its_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    code, out, _ = cli(capsys, "rules", "explain", str(broken), "R1")
    assert code == 2
    line, column = locate(BROKEN, "L999")
    assert out.startswith(f"{broken}:{line}:{column}: ")
