"""Battery: one writer per checkpoint folder, and outputs on a full or read-only disk.

The disks are simulated (tests/reliability/faults.py: ``open`` refuses writes under one folder
as the kernel would), so nothing fills a real disk. A second writer is this test process
holding the folder's lock through the same API as train.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from callbacks.folder_lock import HOLDER_NAME, LOCK_NAME, FolderLock
from tests.reliability import faults
from tests.reliability.battery import Case, Workspace
from tests.reliability.cases_cli import tiny

CATEGORY = "writers"
RUN = ("--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")
_held: dict[Path, FolderLock] = {}  # locks this process holds for a case, released by its check


def resume(ws: Workspace) -> list[str]:
    return tiny(ws, *RUN, "--trainer.max_epochs", "2", "--ckpt_path", str(ws.ckpt))


def hold(folder: Path) -> None:
    lock = FolderLock(folder)
    lock.acquire()
    _held[folder] = lock


def run_still_writing(ws: Workspace) -> list[str]:
    """The run of ws.ckpt is still training (its lock is held) when the user resumes it."""
    hold(ws.ckpt.parent)
    return resume(ws)


def shared_dirpath(ws: Workspace) -> list[str]:
    """Two fresh runs given the same --checkpoint.dirpath, the first one still writing."""
    hold(ws.path("shared"))
    return tiny(ws, *RUN, "--checkpoint.dirpath", str(ws.path("shared")))


def stale_folder(ws: Workspace) -> Path:
    # beside the workspace: the lock record is replaced by the new run, which the battery
    # would count as a changed file of the user's
    return ws.dir.parent / f"{ws.dir.name}-stale"


def stale_lock(ws: Workspace) -> list[str]:
    """A run that crashed left its lock file and record; its pid is gone."""
    folder = stale_folder(ws)
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / LOCK_NAME).touch()
    (folder / HOLDER_NAME).write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "command": "python train.py", "started": "yesterday", "token": "dead"}))
    return tiny(ws, *RUN, "--checkpoint.dirpath", str(folder))


def stale_lock_taken_over(ws: Workspace) -> None:
    folder = stale_folder(ws)
    assert (folder / "last.ckpt").is_file(), "the run wrote no last.ckpt"
    assert not (folder / HOLDER_NAME).exists(), "the run left its lock record behind"
    assert FolderLock(folder).lock.acquire(timeout=0), "the lock is still held"


def earlier_evaluation(ws: Workspace) -> list[str]:
    ws.path("run/evaluation.json").write_text(json.dumps({"checkpoint": str(ws.ckpt), "metrics": {}, "per_seed": []}))
    return ["--ckpt_path", str(ws.ckpt), "--features", "none", "--seeds", "0"]


def earlier_export(ws: Workspace) -> list[str]:
    ws.path("out/g.pt").write_bytes(b"an earlier export")
    return ["--ckpt_path", str(ws.ckpt), "--out", str(ws.path("out/g.pt")), "--overwrite"]


def into(folder: str, argv):
    """prepare: make ``folder`` and install the disk faults (inert until the case's env sets them)."""
    def prepare(ws: Workspace) -> list[str]:
        faults.install()
        ws.path(folder).mkdir(parents=True, exist_ok=True)
        return argv(ws)
    return prepare


def no_partial_files(ws: Workspace) -> None:
    partial = [str(p) for p in ws.dir.rglob("*") if p.name.endswith(".partial") or p.name.endswith(".tmp")]
    assert not partial, f"partial files left: {partial}"


def no_images(ws: Workspace) -> None:
    no_partial_files(ws)
    assert not list(ws.path("ds").rglob("*.png")), "the images of the failed dataset were left"


CASES = [
    Case("second-writer-resumes-a-running-run", CATEGORY, "train", run_still_writing,
         r"error: the checkpoint folder .*checkpoints is being written by another run \(pid \d+ on .*\); wait for it to end",
         check=lambda ws: _held.pop(ws.ckpt.parent).release()),
    Case("second-writer-same-dirpath", CATEGORY, "train", shared_dirpath,
         r"error: the checkpoint folder .*shared is being written by another run \(pid \d+",
         check=lambda ws: _held.pop(ws.path("shared")).release()),
    Case("stale-lock-of-a-dead-run-is-taken-over", CATEGORY, "train", stale_lock, r"taking over the lock of .*-stale: its holder, pid \d+ on elsewhere, has ended",
         rc=0, check=stale_lock_taken_over, slow=True),
    Case("disk-full-on-checkpoint-save", CATEGORY, "train", into("run/checkpoints", resume),
         r"error: could not write the checkpoint .*\.ckpt \(disk full\); .*: free space or choose another --checkpoint\.dirpath, then resume",
         env=faults.env("enospc", "run/checkpoints", free=4096), check=no_partial_files, slow=True),
    Case("read-only-checkpoint-folder", CATEGORY, "train", into("ro", lambda ws: tiny(ws, *RUN, "--checkpoint.dirpath", str(ws.path("ro")))),
         r"error: could not write the lock record .*ro/\.gan-lightning\.lock\.json \(read-only file system\); nothing was written: choose another --checkpoint\.dirpath",
         env=faults.env("erofs", "ro"), check=no_partial_files),
    Case("disk-full-on-export", CATEGORY, "export", into("out", lambda ws: ["--ckpt_path", str(ws.ckpt), "--out", str(ws.path("out/g.pt"))]),
         r"error: could not write --out .*g\.pt \(disk full\); nothing was written: free space or choose another --out",
         env=faults.env("enospc", "out"), check=no_partial_files),
    Case("disk-full-keeps-the-earlier-export", CATEGORY, "export", into("out", earlier_export),
         r"error: could not write --out .*g\.pt \(disk full\); the earlier g\.pt is intact",
         env=faults.env("enospc", "out"), check=no_partial_files),
    Case("read-only-export-folder", CATEGORY, "export", into("ro", lambda ws: ["--ckpt_path", str(ws.ckpt), "--out", str(ws.path("ro/g.pt"))]),
         r"error: could not write --out .*g\.pt \(read-only file system\); nothing was written: choose another --out",
         env=faults.env("erofs", "ro"), check=no_partial_files),
    Case("disk-full-keeps-the-earlier-evaluation", CATEGORY, "evaluate", into("run", earlier_evaluation),
         r"error: could not write --out .*evaluation\.json \(disk full\); the earlier evaluation\.json is intact",
         env=faults.env("enospc", "run", free=100), check=no_partial_files),
    Case("read-only-evaluate-output", CATEGORY, "evaluate",
         into("ro", lambda ws: ["--ckpt_path", str(ws.ckpt), "--features", "none", "--seeds", "0", "--out", str(ws.path("ro/e.json"))]),
         r"error: could not write --out .*e\.json \(read-only file system\)", env=faults.env("erofs", "ro"), check=no_partial_files),
    Case("disk-full-on-synthesize-output", CATEGORY, "synthesize",
         into("ds", lambda ws: ["--source", str(ws.ckpt), "--out", str(ws.path("ds")), "--num_samples", "40", "--labels", "none"]),
         r"error: could not write image \d+ of 40 into --out .*ds \(disk full\); the images written before it were removed again",
         env=faults.env("enospc", "ds", free=2000), check=no_images),
    Case("disk-full-on-the-sample-grid", CATEGORY, "train", into("runs/v/samples", lambda ws: tiny(ws, *RUN, "--trainer.logger.version", "v")),
         r"error: could not write the sample grid .*samples/epoch_0000\.png \(disk full\); nothing was written: free space or choose"
         r" another --trainer\.default_root_dir, then resume from the newest checkpoint with --ckpt_path",
         env=faults.env("enospc", "runs/v/samples", free=0), check=no_partial_files),
    Case("disk-full-under-the-loggers-writer", CATEGORY, "train", into("runs/v", lambda ws: tiny(ws, *RUN, "--trainer.logger.version", "v")),
         r"error: a write was refused \(disk full\), so the command stopped; the files it had finished are intact: free space \(train\.py: then resume",
         env=faults.env("enospc", "runs/v", free=0), check=no_partial_files),
    Case("disk-full-on-generate-images", CATEGORY, "generate",
         into("ds", lambda ws: ["--source", str(ws.ckpt), "--out", str(ws.path("ds")), "--num_samples", "40"]),
         r"error: could not write image \d+ of 40 into --out .*ds \(disk full\); the images written before it were removed again: free space",
         env=faults.env("enospc", "ds", free=2000), check=no_images),
    Case("read-only-generate-grid", CATEGORY, "generate",
         into("ro", lambda ws: ["--source", str(ws.ckpt), "--out", str(ws.path("ro/grid.png")), "--grid", "--num_samples", "9"]),
         r"error: could not write --out .*grid\.png \(read-only file system\); nothing was written: choose another --out",
         env=faults.env("erofs", "ro"), check=no_partial_files),
]
