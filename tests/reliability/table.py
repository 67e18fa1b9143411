"""The battery as a table: every case run as a real subprocess against a checkout.

    python -m tests.reliability.table --repo PATH [--json OUT] [--timeout 90]

``--repo`` is the checkout whose commands are run (default: this one), so the same cases can
be run on an older commit (``git worktree add /tmp/before <commit>``) for a before/after table.
The cases and their files come from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability import battery
from tests.reliability.test_battery import CASES

REPO = Path(__file__).resolve().parents[2]


def run(repo: Path, module: str, argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    full_env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **env}
    # a case's PYTHONPATH (e.g. the disk faults' sitecustomize) comes before the checkout, never instead of it
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(repo)]))
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
    try:
        done = subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return -9, f"hung: no exit after {timeout:.0f} s " + str(exc.stderr or "")[-500:]
    return done.returncode, done.stderr + done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--only", default="", help="comma-separated case ids")
    parser.add_argument("--timeout", type=float, default=90, help="seconds before a case counts as hung (the target is none past 30 s)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    work = Path(tempfile.mkdtemp(prefix="battery-"))
    run_root = work / "tiny-run"
    rc, out = run(repo, battery.COMMANDS["train"], ["--config", str(repo / "tests" / "tiny.yaml"), "--trainer.default_root_dir", str(run_root),
                  "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(run_root), "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0"], work, {})
    assert rc == 0, out[-2000:]
    checkpoint = run_root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = checkpoint if checkpoint.exists() else next(run_root.rglob("last.ckpt"))
    only = set(filter(None, args.only.split(",")))
    rows = []
    for case in CASES:
        if only and case.id not in only:
            continue
        ws = battery.make_workspace(work / case.id, checkpoint)
        argv = case.prepare(ws)
        before = battery.sha256_tree(ws.dir)
        began = time.monotonic()
        rc, output = run(repo, battery.COMMANDS[case.command], argv, ws.dir, case.env, args.timeout)
        seconds = time.monotonic() - began
        changed = battery.changed_files(before, battery.sha256_tree(ws.dir))
        problems = battery.verdict(case, rc, output) + [f"changed {', '.join(changed)}"] * bool(changed)
        if case.check is not None:
            try:
                case.check(ws)
            except Exception as exc:  # a check may also fail by finding nothing to check
                problems.append(str(exc).splitlines()[0] if str(exc) else f"check failed ({type(exc).__name__})")
        rows.append({"id": case.id, "category": case.category, "rc": rc, "seconds": round(seconds, 1), "line": battery.one_line(output)[:200],
                     "ok": not problems, "problems": problems})
        print(f"{'ok  ' if not problems else 'FAIL'} {case.id:<44} rc={rc:<3} {seconds:5.1f} s {'; '.join(problems)[:120]}", flush=True)
    slow = [r["id"] for r in rows if r["seconds"] > 30]
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} cases behave; {len(slow)} took over 30 s{': ' + ', '.join(slow) if slow else ''}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
