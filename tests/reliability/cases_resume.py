"""Battery: resuming means the same run (plug-ins and their options), and preemption."""

from __future__ import annotations

import torch

from tests.reliability.battery import Case, Workspace
from tests.reliability.cases_cli import tiny

CATEGORY = "resume"
RUN = ("--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")
PRUNE = ("--callbacks", "prune", "--prune.granularity", "unstructured", "--prune.metric", "none", "--prune.start_epoch", "0")


def pruned_checkpoint(ws: Workspace, record: bool = True) -> str:
    """A one-epoch run pruned (unstructured, masks) at its start, trained by train.py here."""
    from train import main

    assert main(tiny(ws, *RUN, *PRUNE, "--checkpoint.dirpath", str(ws.dir / "pruned"))) == 0
    path = ws.dir / "pruned" / "last.ckpt"
    if not record:  # as written before the plug-ins' options were recorded
        checkpoint = torch.load(path, weights_only=True)
        del checkpoint["gan_lightning_plug_ins"]
        torch.save(checkpoint, path)
    return str(path)


CASES = [
    Case("resume-without-prune", CATEGORY, "train",
         lambda ws: tiny(ws, *RUN, "--trainer.max_epochs", "2", "--ckpt_path", pruned_checkpoint(ws)),
         r"error: --ckpt_path .*last\.ckpt was trained with --callbacks prune, and resuming without prune would lose its state.*resume with --callbacks prune", slow=True),
    Case("resume-without-prune-old-checkpoint", CATEGORY, "train",
         lambda ws: tiny(ws, *RUN, "--trainer.max_epochs", "2", "--ckpt_path", pruned_checkpoint(ws, record=False)),
         r"error: --ckpt_path .*was trained with --callbacks prune", slow=True),
    Case("resume-with-changed-prune-amount", CATEGORY, "train",
         lambda ws: tiny(ws, *RUN, *PRUNE, "--prune.generator_amount", "0.8", "--trainer.max_epochs", "2", "--ckpt_path", pruned_checkpoint(ws)),
         r"error: --ckpt_path .* plug-in options differ: --prune\.generator_amount 0\.8 \(the checkpoint's run used 0\.5\)", slow=True),
]
