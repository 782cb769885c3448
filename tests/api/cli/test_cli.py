"""The ``ocgate`` command line, called in-process: exit codes, positioned errors, parseable output."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from api.cli import main
from engine import ledes
from engine.entry_io import read_entries, write_jsonl
from engine.rules.features import FIELD_TYPES
from engine.rules.loader import load_file
from engine.rules.schema import ruleset_schema
from tests.conftest import BUNDLED_RULES, REPO, locate, make_entry, make_expense

PERIOD = ["--as-of", "2026-04-06", "--period-start", "2026-03-01", "--period-end", "2026-03-31"]
DECIMAL_FIELDS = {name for name, kind in FIELD_TYPES.items() if kind == "decimal"}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.jsonl"
    assert main(["sample", "--count", "50", "-o", str(path)]) == 0
    return path


def clean_entries() -> list:
    """Entries that keep every Acme guideline (checked against the bundled rules in the test)."""
    acme = {"ledes_client_id": "ACME01", "currency": "USD", "law_firm_matter_id": "2026-0017",
            "timekeeper_ledes_id": "TK1004", "timekeeper_name": "Reyes, Carlos", "timekeeper_classification": "ASSOC",
            "work_date": "2026-03-10"}
    return [
        make_entry(source_id="t1", hours_billed="1.5", rate="600.00", amount="900.00", utbms_task_code="L110",
                   utbms_activity_code="A104", narrative="Reviewed shipping records produced by Borealis", **acme),
        make_entry(source_id="t2", hours_billed="0.4", rate="600.00", amount="240.00", utbms_task_code="L310",
                   utbms_activity_code="A103", narrative="Drafted first set of requests for production", **acme),
        make_expense(source_id="x1", quantity="1", rate="45.00", amount="45.00", utbms_expense_code="E107",
                     narrative="Courier delivery of hearing binders to chambers", **acme),
    ]


# rules check / schema --------------------------------------------------------------------------------

def test_rules_check_bundled_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "check", str(BUNDLED_RULES))
    assert code == 0
    ruleset = load_file(BUNDLED_RULES)
    assert f"{BUNDLED_RULES}: ok: acme-corp-ocg version 2026.1, {len(ruleset.rules)} rules" in out
    assert f"revision {ruleset.revision}" in out


BROKEN = {
    "yaml": ("id: x\nversion: 1\nrules:\n  - id: R1\n    title: t\n   type: duplicate\n", "type: duplicate"),
    "schema": ("id: x\nversion: 1\nrules:\n  - id: R1\n    title: t\n    type: duplicate\n    severity: fatal\n",
               "fatal"),
    "semantic": ("id: x\nversion: 1\nrules:\n  - id: R1\n    title: t\n    type: blocked_codes\n"
                 "    params: {task_codes: [L999]}\n", "L999"),
    "named list of numbers": ("id: x\nversion: 1\nlists: {codes: [110]}\nrules:\n  - id: R1\n    title: t\n"
                              "    type: blocked_codes\n    params: {task_codes: {list: codes}}\n", "{list: codes}"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_rules_check_broken_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str) -> None:
    text, token = BROKEN[kind]
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, _ = cli(capsys, "rules", "check", str(BUNDLED_RULES), str(path))
    assert code == 2
    assert f"{BUNDLED_RULES}: ok:" in out  # the good file is still checked
    problems = [line for line in out.splitlines() if line.startswith(str(path))]
    assert problems, out
    line, _col = locate(text, token)
    assert re.match(rf"{re.escape(str(path))}:{line}:\d+: ", problems[0]), problems[0]


def test_rules_schema_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "schema")
    assert code == 0
    assert json.loads(out)["$id"] == "https://ocgate.dev/schemas/ocg-ruleset.schema.json"
    assert out == json.dumps(ruleset_schema(), indent=2) + "\n"


# rules test -----------------------------------------------------------------------------------------

def test_rules_test_bundled_folder(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "rules", "test", str(REPO / "rules"))
    assert code == 0, out
    assert re.search(r"acme-corp\.yaml: ok: 17 rules, \d+ cases, \d+ checks", out), out
    rule_files = [p for p in (REPO / "rules").glob("*.yaml") if not p.name.endswith(".tests.yaml")]
    assert out.rstrip().endswith(f"{len(rule_files)} passed, 0 failed")


SMALL_RULES = """\
id: small
version: 1
rules:
  - id: LONG
    title: Long entry
    type: max_hours_per_entry
    params: {max_hours: 8}
  - id: VAGUE
    title: Vague narrative
    type: narrative
    params: {forbidden_phrases: [follow up]}
"""

SMALL_TESTS = """\
defaults: {source_system: fixture, entry_kind: time, work_date: 2026-03-10, narrative: Drafted reply brief}
cases:
  - name: long entry
    entry: {hours_billed: 9}
    flags: [LONG]
    passes: [VAGUE]
  - name: short entry
    entry: {hours_billed: 8}
    passes: [LONG]
"""


def small_rule_folder(tmp_path: Path, tests: str) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "small.yaml").write_text(SMALL_RULES, encoding="utf-8")
    (folder / "small.tests.yaml").write_text(tests, encoding="utf-8")
    return folder


def test_rules_test_passes_when_every_rule_is_tested(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tests = SMALL_TESTS + "  - name: vague\n    entry: {narrative: Follow up with client}\n    flags: [VAGUE]\n"
    folder = small_rule_folder(tmp_path, tests)
    code, out, _ = cli(capsys, "rules", "test", str(folder))
    assert code == 0, out
    assert f"{folder / 'small.yaml'}: ok: 2 rules, 3 cases, 4 checks" in out


def test_rules_test_untested_rule_fails_and_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = small_rule_folder(tmp_path, SMALL_TESTS)
    code, out, _ = cli(capsys, "rules", "test", str(folder))
    assert code == 1
    assert "rule VAGUE is untested: no case that flags it" in out
    assert "rule LONG is untested" not in out
    assert "0 passed, 1 failed" in out


def test_rules_test_untested_rule_in_a_copy_of_the_bundled_file(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    """The bundled rules and tests, copied, with every check of one rule taken out of the tests."""
    bundled_tests = BUNDLED_RULES.with_name("acme-corp.tests.yaml")
    assert bundled_tests.exists(), "the bundled rule file needs its tests beside it"
    untested = "ACME-INTERN-001"
    data = yaml.safe_load(bundled_tests.read_text(encoding="utf-8"))
    kept = []
    for case in data["cases"]:
        for key in ("flags", "passes"):
            case[key] = [rule_id for rule_id in case.get(key) or [] if rule_id != untested]
        if case["flags"] or case["passes"]:
            kept.append(case)
    data["cases"] = kept
    rules = tmp_path / "acme-corp.yaml"
    shutil.copy(BUNDLED_RULES, rules)
    (tmp_path / "acme-corp.tests.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    code, out, _ = cli(capsys, "rules", "test", str(rules), "--backend", "python")
    assert code == 1
    failures = [line for line in out.splitlines() if "FAILED" not in line and "passed," not in line]
    assert len(failures) == 1, failures
    assert failures[0].startswith(f"{rules}: rule {untested} is untested: no case that flags")
    assert "passes it" in failures[0]


def test_rules_test_case_naming_a_missing_rule_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tests = SMALL_TESTS + "  - name: gone\n    entry: {hours_billed: 9}\n    flags: [LONG, REMOVED-001]\n"
    folder = small_rule_folder(tmp_path, tests)
    code, out, _ = cli(capsys, "rules", "test", str(folder))
    assert code == 1
    tests_file = folder / "small.tests.yaml"
    line, col = locate(tests, "REMOVED-001")
    assert f"{tests_file}:{line}:{col}: cases/2 (gone): rule 'REMOVED-001' is not in" in out


def test_rules_test_failing_case_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tests = SMALL_TESTS.replace("entry: {hours_billed: 9}", "entry: {hours_billed: 7}")
    folder = small_rule_folder(tmp_path, tests)
    code, out, _ = cli(capsys, "rules", "test", str(folder))
    assert code == 1
    assert "expected LONG to flag, it did not" in out


# validate --------------------------------------------------------------------------------------------

def test_validate_json(capsys: pytest.CaptureFixture[str], sample_file: Path) -> None:
    code, out, _ = cli(capsys, "validate", str(sample_file), "-r", str(BUNDLED_RULES), "--format", "json", *PERIOD)
    violations = json.loads(out)
    assert isinstance(violations, list) and violations
    uids = {e.entry_uid for e in read_entries(sample_file)}
    for v in violations:
        assert v["entry_uid"] in uids
        assert v["rule_status"] == "active"  # shadow findings are hidden unless asked for
        assert v["ruleset_id"] == "acme-corp-ocg"
    errors = [v for v in violations if v["severity"] == "error"]
    assert code == (1 if errors else 0)
    assert errors, "the generated sample has error-severity problems"


def test_validate_json_writes_decimals_as_strings(capsys: pytest.CaptureFixture[str], sample_file: Path) -> None:
    _, out, _ = cli(capsys, "validate", str(sample_file), "-r", str(BUNDLED_RULES), "--format", "json", *PERIOD)
    violations = json.loads(out)
    adjustments = [v["adjustment"] for v in violations if v["adjustment"]]
    assert adjustments
    for adj in adjustments:
        assert all(isinstance(adj[k], str) for k in ("current", "proposed", "amount")), adj
    numbers = []
    for v in violations:
        for ev in v["evidence"]:
            if ev["field"] in DECIMAL_FIELDS and ev["operator"] in ("eq", "ne", "lt", "le", "gt", "ge"):
                numbers.extend((v["rule_id"], ev["field"], ev[k]) for k in ("expected", "actual")
                               if not isinstance(ev[k], str))
    assert numbers == [], f"decimal values written as JSON numbers: {numbers[:5]}"
    assert json.loads(out, parse_float=lambda s: pytest.fail(f"float {s} in JSON output"))


def test_validate_include_shadow(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    intern = make_entry(source_id="i1", ledes_client_id="ACME01", timekeeper_ledes_id="TK1004",
                        timekeeper_classification="LGLINT", hours_billed="1.0", utbms_task_code="L110",
                        utbms_activity_code="A104", narrative="Summer associate research memo on jurisdiction")
    path = tmp_path / "e.jsonl"
    with path.open("w", encoding="utf-8") as out:
        write_jsonl([intern], out)
    args = ["validate", str(path), "-r", str(BUNDLED_RULES), "--format", "json", *PERIOD]
    _, out, _ = cli(capsys, *args)
    assert "ACME-INTERN-001" not in {v["rule_id"] for v in json.loads(out)}
    _, out, _ = cli(capsys, *args, "--include-shadow")
    shadow = [v for v in json.loads(out) if v["rule_id"] == "ACME-INTERN-001"]
    assert len(shadow) == 1 and shadow[0]["rule_status"] == "shadow"


def test_validate_clean_entries_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "clean.jsonl"
    with path.open("w", encoding="utf-8") as out:
        write_jsonl(clean_entries(), out)
    code, out, _ = cli(capsys, "validate", str(path), "-r", str(BUNDLED_RULES), "--format", "json", *PERIOD)
    assert json.loads(out) == []
    assert code == 0
    code, out, _ = cli(capsys, "validate", str(path), "-r", str(BUNDLED_RULES), *PERIOD)
    assert code == 0
    assert out.strip() == "3 entries checked: no violations"


def test_validate_table(capsys: pytest.CaptureFixture[str], sample_file: Path) -> None:
    args = ["validate", str(sample_file), "-r", str(BUNDLED_RULES), *PERIOD]
    code, out, _ = cli(capsys, *args, "--format", "table")
    _, as_json, _ = cli(capsys, *args, "--format", "json")
    violations = json.loads(as_json)
    lines = out.splitlines()
    assert re.match(r"ENTRY\s+RULE\s+SEVERITY\s+MESSAGE$", lines[0])
    rows = [line for line in lines[1:] if line and not line.startswith("50 entries")]
    assert len(rows) == len(violations)
    assert [row.split()[1] for row in rows] == [v["rule_id"] for v in violations]
    flagged = len({v["entry_uid"] for v in violations})
    assert lines[-1] == f"50 entries checked, {flagged} flagged, {len(violations)} violations"
    assert code == 1
    assert all(len(row) <= 110 for row in rows)


def test_validate_summary(capsys: pytest.CaptureFixture[str], sample_file: Path) -> None:
    code, out, _ = cli(capsys, "validate", str(sample_file), "-r", str(BUNDLED_RULES), "--format", "summary", *PERIOD)
    assert code == 1
    for rule in load_file(BUNDLED_RULES).rules:
        assert rule.id in out
    assert "50 entries checked:" in out


@pytest.mark.parametrize(("records", "bad_line", "field"), [
    (['{"source_system": "s", "source_id": "1", "entry_kind": "time", "work_date": "2026-03-01"}',
      '{"source_system": "s", "source_id": "2", "entry_kind": "time"'], 2, None),
    (['{"source_system": "s", "source_id": "1", "entry_kind": "time", "work_date": "2026-03-01"}',
      '{"source_system": "s", "source_id": "2", "entry_kind": "time"}'], 2, "work_date"),
    (['{"source_system": "s", "source_id": "1", "entry_kind": "time", "work_date": "2026-03-01", '
      '"hours_billed": "two"}'], 1, "hours_billed"),
], ids=["invalid-json", "missing-field", "non-numeric-hours"])
def test_validate_malformed_entries_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, records: list[str],
                                          bad_line: int, field: str | None) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(records) + "\n", encoding="utf-8")
    code, out, err = cli(capsys, "validate", str(path), "-r", str(BUNDLED_RULES), "--format", "json", *PERIOD)
    assert code == 2
    assert out == ""
    assert err.startswith(f"{path}:{bad_line}:"), err
    if field:
        assert err.startswith(f"{path}:{bad_line}: {field}: "), err


def test_validate_broken_rule_file_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          sample_file: Path) -> None:
    text, token = BROKEN["schema"]
    rules = tmp_path / "broken.yaml"
    rules.write_text(text, encoding="utf-8")
    code, out, err = cli(capsys, "validate", str(sample_file), "-r", str(rules))
    assert code == 2 and out == ""
    line, col = locate(text, token)
    assert err.startswith(f"{rules}:{line}:{col}: ")


# demo and sample -----------------------------------------------------------------------------------

def test_demo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, "demo", "--backend", "python", "--database", str(tmp_path / "demo.db"))
    assert code == 0
    # The month comes from a fake Clio: synced, synced again without change, then one entry edited and its webhook.
    assert re.search(r"ocgate sync clio: 300 activities pulled in 1 batch\(es\), each committed with the cursor; 300 "
                     r"new: \d+ ready to bill, \d+ waiting for review", out)
    assert re.search(r"Syncing again: \d+ pulled \(the overlap window\), 0 new, 0 changed, \d+ unchanged", out)
    assert re.search(r"Webhooks: subscription \d+ is enabled", out)
    assert re.search(r"Clio posts the signed event -> 200; the worker re-fetches the activity and judges it: ready -> "
                     r"in_review in \d\.\d\d s\n    ACME-NARR-", out)
    assert "POST .../approve without a reason -> 422 reason_required" in out
    assert re.search(r"approve\s+by key:demo reviewer in_review -> ready reason: Client approved", out)
    assert out.startswith("ocgate demo: 300 time and expense entries for Acme Corporation, March 2026, synced from a "
                          "fake Clio")
    assert re.search(r"^300 entries checked: \d+ clean, \d+ flagged \(\d+ with errors\), \d+ violations", out, re.M)
    assert "One finding of each rule:" in out
    # The firm's other systems feed the same queue: Efimis work items, Trackops expenses, a mattero export.
    assert re.search(r"ocgate sync efimis: 32 work items pulled from Efimis; 30 new, \d+ to review, 2 with "
                     r"data-quality flags \(MISSING_UTBMS_TASK 1, UNMAPPED_TASK_TYPE 1\)", out)
    assert re.search(r"ocgate sync mattero: 173 costs from the All Costs export in .* pulled from mattero; 173 new",
                     out)
    queue = dict(re.findall(r"^  (clio|efimis|mattero|trackops) +(\d+ +\d+ +\d+) ", out, re.M))
    assert re.search(r"ocgate sync trackops: 12 expense entries \(an entry per detail line\) pulled from Trackops; 19 "
                     r"new", out)
    assert set(queue) == {"clio", "efimis", "mattero", "trackops"}
    for source, counts in queue.items():  # entries = ready + to review, and each source has both
        total, ready, waiting = map(int, counts.split())
        assert total == ready + waiting and ready > 0 and waiting > 0, source
    assert re.search(r"^  efimis .*ACME-RATE-001 \d+", out, re.M)
    assert re.search(r"^  mattero .*NO_LEDES_CLIENT_ID \d+", out, re.M)
    assert re.search(r"^  trackops .*ACME-EXP-001 1", out, re.M)  # the investigator's dinner over the meal cap
    for rule in load_file(BUNDLED_RULES).rules:
        assert rule.id in out
    # The invoice part: LEDES files, a submission to the fake portal, one line rejected and back in the queue.
    assert re.search(r"POST /v1/invoices -> 201: HM000002 matter 2026-0017, \d+ lines, total [\d.]+ USD; line \d+ "
                     r"carries the reviewer's write-down -[\d.]+ as its LEDES adjustment", out)
    files = sorted(p.name for p in (tmp_path / "demo-invoices").iterdir())
    assert files == ["HM000001.txt", "HM000002.txt", "HM000003.txt"]
    for name in files:
        assert ledes.parse((tmp_path / "demo-invoices" / name).read_text()).invoices[0].invoice_number == name[:-4]
    assert "submitting HM000001 again -> 200, still one invoice at the portal (1)" in out
    assert re.search(r'line \d+ of HM\d+ rejected: "Expense - Non-reimbursable expense"', out)
    assert "proposal (tighten, verified: True): rule ACME-CODE-001 let this line pass" in out
    assert re.search(r"GET /v1/review-items: entry \d+ .* waits for a reviewer with the portal's reason: Expense - "
                     r"Non-reimbursable expense", out)


@pytest.mark.slow
def test_demo_backends_agree(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from engine.rules.backends import DURABLE_AVAILABLE

    if not DURABLE_AVAILABLE:
        pytest.skip("durable-rules is not importable on this interpreter")
    _, python_out, _ = cli(capsys, "demo", "--backend", "python", "--database", str(tmp_path / "a.db"))
    code, durable_out, _ = cli(capsys, "demo", "--backend", "durable", "--database", str(tmp_path / "b.db"))
    assert code == 0
    # The rules part is identical; the queue part differs only in file names and timestamps.
    rules_part = lambda text: text.split("\nReview queue in ")[0]  # noqa: E731
    assert rules_part(durable_out).replace("durable backend", "python backend") == rules_part(python_out)
    assert "POST .../approve with a reason -> 200" in durable_out
    assert "POST .../reject with the old ETag -> 412 version_mismatch" in durable_out


def test_sample_writes_jsonl(capsys: pytest.CaptureFixture[str], sample_file: Path) -> None:
    entries = read_entries(sample_file)
    assert len(entries) == 50
    assert len({e.entry_uid for e in entries}) == 50
    code, out, _ = cli(capsys, "sample", "--count", "3", "--seed", "1")
    assert code == 0 and len(out.splitlines()) == 3
    assert all(json.loads(line)["source_system"] == "sample" for line in out.splitlines())


def test_bad_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "sample", "--count", "-1")
    assert code == 2 and "--count" in err
