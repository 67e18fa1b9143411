"""Multi-process DDP on CPU (gloo) and bf16-mixed on CPU with the manual-optimization step."""

from __future__ import annotations

import pytest
import torch

from gan_lightning.core.hooks import GANCallback
from tests.helpers import REPO, make_trainer, tiny_digits, tiny_module, train_py_ddp


@pytest.mark.slow
def test_plain_ddp_flag_trains_and_keeps_both_ranks_identical(tmp_path):
    """What a user types: `--trainer.strategy ddp --trainer.devices 2` through train.py (the
    launcher re-executes the script), with the generator step's unused D parameters and the
    vae plug-in (its VAE trained on rank 0 and broadcast)."""
    dump = tmp_path / "ranks"
    cmd = [
        "--config", str(REPO / "tests" / "tiny.yaml"),
        "--trainer.max_epochs", "2",
        # the harder step: several critic steps, an R1 penalty (double backward) and a GAN-hook callback
        "--model.n_critic", "2", "--model.r1_weight", "1.0", "--model.discriminator.init_args.norm", "none",
        "--callbacks", "grad_norm,vae", "--vae.epochs", "1", "--vae.width", "4", "--vae.latent_dim", "4",
        "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--trainer.callbacks+=tests.probes.RankDump", "--trainer.callbacks.out_dir", str(dump),
    ]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["first_batch"] != r1["first_batch"]  # each rank trained on its own shard...
    assert r0["global_step"] == r1["global_step"] == 2 * 3 * (2 + 1)
    assert r0["val_fid"] == r1["val_fid"] > 0  # computed on rank 0, broadcast, no deadlock
    assert r0["vae"] and r0["vae"].keys() == r1["vae"].keys()  # trained on rank 0, broadcast
    assert all(torch.equal(v, r1["vae"][k]) for k, v in r0["vae"].items())
    for name, p in r0["params"].items():  # ...yet gradient sync kept the weights identical
        assert torch.equal(p, r1["params"][name]), name
    init = tiny_module(r1_weight=1.0).state_dict()
    assert not torch.equal(r0["params"]["generator.stem.0.weight"], init["generator.stem.0.weight"])


class PrecisionProbe(GANCallback):
    def __init__(self) -> None:
        self.seen: list[dict] = []

    def generator_loss_terms(self, trainer, module, z, fake):
        self.seen.append(
            {
                "autocast": torch.is_autocast_enabled("cpu"),
                "fake": fake.dtype,
                "params": {p.dtype for p in module.parameters()},
            }
        )
        return {}

    def on_generator_step_end(self, trainer, module):
        self.seen[-1]["grads"] = {p.grad.dtype for p in module.generator.parameters() if p.grad is not None}


def test_bf16_mixed_autocasts_the_step_and_keeps_fp32_master_weights(tmp_path, seeded):
    probe = PrecisionProbe()
    module = tiny_module()
    before = module.generator.stem[0].weight.detach().clone()
    trainer = make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=3, limit_val_batches=1, callbacks=[probe])
    trainer.fit(module, tiny_digits())
    assert len(probe.seen) == 3
    for step in probe.seen:
        assert step["autocast"] and step["fake"] == torch.bfloat16
        assert step["params"] == {torch.float32} and step["grads"] == {torch.float32}
    assert not torch.equal(before, module.generator.stem[0].weight)
    assert torch.isfinite(trainer.callback_metrics["val/swd"])


@pytest.mark.slow
def test_a_data_error_on_one_rank_is_its_sentence_not_a_page_of_collective_traceback(tmp_path):
    """One rank reads a truncated image and stops with its sentence; the other rank's collective
    then fails, and says so in one line instead of ~100 lines of gloo traceback."""
    import os
    import subprocess
    import sys

    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(9):
        Image.new("L", (12, 12), 25 * i).save(folder / f"ok{i}.png")
    (folder / "bad.png").write_bytes((folder / "ok1.png").read_bytes()[:40])
    cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "tests" / "tiny.yaml"), "--trainer.accelerator", "cpu",
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
           "--data", "datamodules.ImageFolderDataModule", "--data.root", str(folder), "--data.image_size", "8", "--data.channels", "1",
           "--data.batch_size", "4", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stderr + proc.stdout
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, output[-3000:]
    assert errors[0].startswith(f"error: The image file {folder / 'bad.png'} (under --data.root) is unreadable"), errors
    assert errors[1:] == ["error: another process of this distributed run stopped (its error is printed above), so this one stopped too"]
    assert "Traceback" not in output
