"""Battery: no file is overwritten by accident."""

from __future__ import annotations

import torch

from tests.reliability.battery import Case, Workspace
from tests.reliability.cases_cli import tiny

CATEGORY = "overwrite"


def other_runs_folder(ws: Workspace) -> list[str]:
    return tiny(ws, "--checkpoint.dirpath", str(ws.ckpt.parent), "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")


def older_checkpoint_of_the_run(ws: Workspace) -> list[str]:
    """The run's folder holds last.ckpt at a later step than best.ckpt, which the user resumes."""
    older = ws.ckpt.parent / "best-epoch000.ckpt"
    checkpoint = torch.load(ws.ckpt, weights_only=True)
    torch.save(checkpoint, older)
    checkpoint["global_step"] += 10
    torch.save(checkpoint, ws.ckpt)
    return tiny(ws, "--ckpt_path", str(older), "--trainer.max_epochs", "2", "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")


def evaluation(ws: Workspace, *extra: str) -> list[str]:
    return ["--ckpt_path", str(ws.ckpt), "--features", "none", "--seeds", "0", *extra]


CASES = [
    Case("evaluate-out-is-the-checkpoint", CATEGORY, "evaluate", lambda ws: evaluation(ws, "--out", str(ws.ckpt)),
         r"error: --out .*last\.ckpt exists and is not an earlier evaluation result"),
    Case("evaluate-out-is-a-config", CATEGORY, "evaluate", lambda ws: evaluation(ws, "--out", str(ws.dir / "run" / "config.yaml")),
         r"error: --out .*config\.yaml exists and is not an earlier evaluation result"),
    Case("export-out-is-the-checkpoint", CATEGORY, "export", lambda ws: ["--ckpt_path", str(ws.ckpt), "--out", str(ws.ckpt), "--overwrite"],
         r"error: .*(is the checkpoint|would replace the checkpoint)"),
    Case("dirpath-of-another-run", CATEGORY, "train", other_runs_folder,
         r"error: --checkpoint.dirpath .* already holds checkpoints of another run \(last\.ckpt\).*--ckpt_path"),
    Case("resume-older-checkpoint-of-the-run", CATEGORY, "train", older_checkpoint_of_the_run,
         r"error: --ckpt_path .*best-epoch000\.ckpt \(step \d+\) is older than .*last\.ckpt \(step \d+\)"),
    Case("ckpt-path-is-a-folder", CATEGORY, "train", lambda ws: tiny(ws, "--ckpt_path", str(ws.ckpt.parent)),
         r"error: --ckpt_path .*checkpoints is a folder; pass the \.ckpt file itself, e.g\. .*last\.ckpt"),
]
