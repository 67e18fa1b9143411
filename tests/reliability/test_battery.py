"""Runs every case of the bad-input battery in-process: exit status, the one sentence, no file
that existed before changed (see battery.py)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from tests.reliability import battery

CASES = [
    case
    for info in pkgutil.iter_modules([str(Path(__file__).parent)])
    if info.name.startswith("cases_")
    for case in importlib.import_module(f"tests.reliability.{info.name}").CASES
]


def run_in_process(case: battery.Case, argv: list[str]) -> int:
    main = importlib.import_module(battery.COMMANDS[case.command]).main
    try:
        return main(argv)
    except SystemExit as exc:  # jsonargparse exits on a malformed command line
        return exc.code if isinstance(exc.code, int) else 1


def test_the_battery_has_unique_ids_and_covers_every_category():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "two cases share an id"
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_bad_input(case, tmp_path, tiny_checkpoint, monkeypatch, capfd):
    ws = battery.make_workspace(tmp_path / "ws", tiny_checkpoint)
    argv = case.prepare(ws)
    before = battery.sha256_tree(ws.dir)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ws.dir)
    rc = run_in_process(case, argv)
    out, err = capfd.readouterr()
    problems = battery.verdict(case, rc, err + out)
    assert not problems, f"{case.id}: {'; '.join(problems)}\n--- output ---\n{(err + out)[-3000:]}"
    assert not battery.changed_files(before, battery.sha256_tree(ws.dir)), f"{case.id} changed files that existed before"
    if case.check is not None:
        case.check(ws)
