"""Checkpoints and exports written before the one record of structural edits (commit f5f0450,
tests/fixtures/make_pre_record.py) load, resume and replay their edits identically; a checkpoint
written now carries the versioned record, which a fresh process replays to the same outputs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gan_lightning.compress.edits import VERSION, Cut, EditRecord, Factorize, Replace
from gan_lightning.compress.lowrank import factorize_module
from gan_lightning.compress.pruning import cut_units
from gan_lightning.deploy.export_file import load_exported
from gan_lightning.core.module import GANModule
from gan_lightning.distill.teacher import rebuild_teacher
from tests.helpers import REPO, tiny_module
from train import main

FIXTURES = REPO / "tests" / "fixtures"
EXPECTED = torch.load(FIXTURES / "pre_record_expected.pt", weights_only=True)
CUT = FIXTURES / "cut_factorize_cut_pre_record.ckpt"
STUDENT = FIXTURES / "student_pre_record.ckpt"


def _images(module: GANModule, name: str) -> None:
    with torch.no_grad():
        torch.testing.assert_close(module.eval()(EXPECTED[name]["z"]), EXPECTED[name]["images"], rtol=0, atol=1e-6)


def _run(tmp_path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "tests" / "tiny.yaml"), "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
        "--checkpoint.dirpath", str(tmp_path / "ckpts"), *extra,
    ]


def test_an_old_cut_factorize_cut_checkpoint_and_export_replay_in_order():
    module = GANModule.load_from_checkpoint(CUT, map_location="cpu")
    old = EXPECTED["cut_factorize_cut"]["structure"]["generator"]
    # the factor's cut needs the factorization first: the old records become that order
    assert module.edits.edits("generator") == [Cut({"stem.0": old["stem.0"]}, old["<input>"]), Factorize({"stem.0": 3}), Cut({"stem.0.0": old["stem.0.0"]})]
    assert module.z_dim == 6 and module.generator.stem[0][0].weight.shape == module.generator_ema.stem[0][0].weight.shape == (2, 6)
    _images(module, "cut_factorize_cut")
    generator = load_exported(FIXTURES / "cut_factorize_cut_pre_record_export.pt")
    assert generator.z_dim == 6
    with torch.no_grad():
        torch.testing.assert_close(generator(EXPECTED["cut_factorize_cut"]["z"]), EXPECTED["cut_factorize_cut"]["images"], rtol=0, atol=1e-6)


def test_an_old_cut_factorize_cut_checkpoint_resumes_and_writes_the_new_record(tmp_path):
    args = _run(
        tmp_path, "--callbacks", "prune,lowrank", "--prune.start_epoch", "0", "--prune.latent_amount", "0.25", "--prune.metric", "swd",
        "--prune.latency_batch", "4", "--lowrank.epoch", "1", "--lowrank.rank_value", "0.5", "--lowrank.metric", "swd",
        "--lowrank.latency_batch", "4", "--trainer.max_epochs", "4", "--model.ema_decay", "0.9", "--ckpt_path", str(CUT),
    )
    assert main(args) == 0
    old, new = torch.load(CUT, weights_only=True), torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert new["epoch"] == 3 and new["global_step"] > old["global_step"]
    assert not {"structure", "lowrank", "replaced"} & set(new) and new["edits"]["version"] == VERSION
    assert EditRecord.from_checkpoint(new) == EditRecord.from_checkpoint(old)  # the same edits, in the same order; none ran again
    for name in ("Prune", "LowRankFactorization"):
        assert new["callbacks"][name]["history"] == old["callbacks"][name]["history"]
    assert {k: v.shape for k, v in new["state_dict"].items()} == {k: v.shape for k, v in old["state_dict"].items()}


def test_an_old_student_checkpoint_loads_resumes_and_keeps_its_teacher(tmp_path):
    module = GANModule.load_from_checkpoint(STUDENT, map_location="cpu")
    replaced = EXPECTED["student"]["replaced"]["generator"]
    assert module.edits.edits("generator") == [Replace({k: replaced[k] for k in ("class_path", "init_args")}, replaced["replaces"])]
    _images(module, "student")
    generator = load_exported(FIXTURES / "student_pre_record_export.pt")
    with torch.no_grad():
        torch.testing.assert_close(generator(EXPECTED["student"]["z"]), EXPECTED["student"]["images"], rtol=0, atol=1e-6)
    old = torch.load(STUDENT, weights_only=True)
    old_teacher = old["callbacks"]["Distill"]["teacher"]
    assert "structure" in old_teacher and rebuild_teacher(old_teacher).stem[0].out_features == 64  # the old teacher record rebuilds
    args = _run(tmp_path, "--callbacks", "distill", "--distill.student", "{init_args: {width: 2}}", "--distill.student_epoch", "0",
                "--trainer.max_epochs", "2", "--ckpt_path", str(STUDENT))
    assert main(args) == 0
    new = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert new["epoch"] == 1 and EditRecord.from_checkpoint(new) == EditRecord.from_checkpoint(old)  # replaced once, not again
    teacher = new["callbacks"]["Distill"]["teacher"]
    assert teacher["sha256"] == old_teacher["sha256"] and EditRecord.from_state(teacher["edits"]) == EditRecord()
    assert rebuild_teacher(teacher).stem[0].out_features == 64


@pytest.mark.slow
def test_a_new_cut_factorize_cut_checkpoint_replays_identically_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(ema_decay=0.9)
    module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([0, 1, 3])}, torch.tensor([0, 2, 3, 4, 5, 6, 7])))
    module.edits.append("generator", factorize_module(module, {"generator.stem.0": 3})["generator"])
    module.edits.append("generator", cut_units(module, "generator", {"stem.0.0": torch.tensor([0, 2])}))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh module has
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "new.ckpt")
    z = torch.randn(5, 7)
    code = (
        "import sys, torch; from tests.helpers import tiny_module;"
        "m = tiny_module(ema_decay=0.9); ckpt = torch.load(sys.argv[1], weights_only=True);"
        "assert m.checkpoint_mismatch(ckpt) is None; m.load_state_dict(ckpt['state_dict']); m.eval();"
        "torch.save({'z_dim': m.z_dim, 'edits': m.edits.to_state(), 'images': m(torch.load(sys.argv[2]))}, sys.argv[3])"
    )
    torch.save(z, tmp_path / "z.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "new.ckpt"), str(tmp_path / "z.pt"), str(tmp_path / "out.pt")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["z_dim"] == 7 and EditRecord.from_state(out["edits"]) == module.edits
    with torch.no_grad():
        assert torch.equal(out["images"], module.eval()(z))
