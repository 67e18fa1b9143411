"""A checkpoint and an export written by the code before the sub-package restructure (commit
0757f81, tests/fixtures/make_pre_restructure.sh) still load and give the same images."""

from __future__ import annotations

import torch

from gan_lightning.compress.edits import EditRecord
from gan_lightning.deploy.export_file import load_exported
from gan_lightning.core.module import GANModule
from tests.helpers import REPO
from train import main

FIXTURES = REPO / "tests" / "fixtures"
CKPT = FIXTURES / "pruned_factorized_v0.ckpt"
EXPECTED = torch.load(FIXTURES / "pruned_factorized_v0_expected.pt", weights_only=True)


def test_an_old_pruned_and_factorized_checkpoint_loads_with_its_shapes_and_outputs():
    module = GANModule.load_from_checkpoint(CKPT, map_location="cpu").eval()
    assert module.z_dim == EXPECTED["z_dim"] == 6
    assert {n: module.edits.kept(n) for n in EXPECTED["structure"]} == EXPECTED["structure"]
    assert {f"generator.{k}": r for k, r in module.edits.ranks("generator").items()} == EXPECTED["lowrank"]
    assert module.generator.stem[0][0].weight.shape == (3, 6)  # cut to 6 latents, then factorized at rank 3
    with torch.no_grad():
        torch.testing.assert_close(module(EXPECTED["z"]), EXPECTED["images"], rtol=0, atol=1e-6)


def test_an_old_export_loads_and_matches_its_checkpoint():
    generator = load_exported(FIXTURES / "pruned_factorized_v0_export.pt")
    assert generator.z_dim == 6
    with torch.no_grad():
        torch.testing.assert_close(generator(EXPECTED["z"]), EXPECTED["images"], rtol=0, atol=1e-6)


def test_an_old_checkpoint_resumes_with_its_callback_state(tmp_path):
    args = [
        "--config", str(REPO / "tests" / "tiny.yaml"), "--callbacks", "prune,lowrank",
        "--prune.start_epoch", "0", "--prune.latent_amount", "0.25", "--prune.metric", "swd", "--prune.latency_batch", "4",
        "--lowrank.epoch", "1", "--lowrank.rank_value", "0.5", "--lowrank.metric", "swd", "--lowrank.latency_batch", "4",
        "--trainer.max_epochs", "3", "--model.ema_decay", "0.9", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path),
        "--checkpoint.dirpath", str(tmp_path / "ckpts"), "--ckpt_path", str(CKPT),
    ]
    assert main(args) == 0
    old = torch.load(CKPT, weights_only=True)
    new = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert new["epoch"] == 2 and new["global_step"] > old["global_step"]
    assert EditRecord.from_checkpoint(new) == EditRecord.from_checkpoint(old) and "structure" in old  # neither event ran again
    for name in ("Prune", "LowRankFactorization"):
        assert new["callbacks"][name]["history"] == old["callbacks"][name]["history"]
        assert new["callbacks"][name].keys() == old["callbacks"][name].keys()
