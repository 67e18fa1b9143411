"""Resuming a compressed run with ``--callbacks distill --distill.teacher_ckpt``: the adapters the
distillation attaches (the student's shapes no longer match the teacher's) are not in the
checkpoint, nor in its generator optimizer; they start fresh instead of refusing the resume."""

from __future__ import annotations

import csv

import torch

from tests.helpers import tiny_run_args
from train import main


def _args(run, *extra):
    return tiny_run_args(run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--checkpoint.dirpath", str(run / "ckpts"), *extra)


def test_a_pruned_run_resumes_with_distillation_from_its_dense_teacher(tmp_path):
    assert main(_args(tmp_path / "dense", "--trainer.max_epochs", "1")) == 0
    teacher = tmp_path / "dense" / "ckpts" / "last.ckpt"
    prune = ["--callbacks", "prune", "--prune.start_epoch", "1", "--prune.metric", "none", "--prune.generator_amount", "0.5"]
    assert main(_args(tmp_path / "pruned", *prune, "--ckpt_path", str(teacher), "--trainer.max_epochs", "2")) == 0
    pruned = tmp_path / "pruned" / "ckpts" / "last.ckpt"
    saved = torch.load(pruned, weights_only=True)
    assert saved["edits"] and not any(k.startswith("auxiliary.") for k in saved["state_dict"])
    distill = [*prune, "--callbacks", "prune,distill", "--distill.teacher_ckpt", str(teacher)]
    assert main(_args(tmp_path / "student", *distill, "--ckpt_path", str(pruned), "--trainer.max_epochs", "3")) == 0
    final = torch.load(tmp_path / "student" / "ckpts" / "last.ckpt", weights_only=True)
    adapters = [k for k in final["state_dict"] if k.startswith("auxiliary.")]
    assert final["epoch"] == 2 and adapters  # trained on, with the adapters the cut shapes need
    assert final["edits"] == saved["edits"]  # the pruning, done before, was not repeated
    group = final["optimizer_states"][0]["param_groups"][-1]["params"]
    trainable = [k for k in final["state_dict"] if k.startswith(("generator.", "auxiliary.")) and not k.split(".")[-1].startswith(("running", "num_batches"))]
    assert len(group) == len(trainable)  # the adapters train with the generator
    rows = list(csv.DictReader(open(next((tmp_path / "student").rglob("metrics.csv")))))
    terms = [float(r["train/g_term/distill_output"]) for r in rows if r.get("train/g_term/distill_output")]
    assert terms and all(t > 0 for t in terms)
