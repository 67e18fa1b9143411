"""The vae plug-in: D sees exactly the configured synthetic fraction at every point of the schedule,
the VAE survives a checkpoint, pruning can calibrate on it, and bad input is one sentence."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from callbacks import target as target_module
from callbacks.prune import Prune
from callbacks.vae import VAEAugmentation, fraction_schedule, synthetic_count
from gan_lightning.core.hooks import GANCallback
from gan_lightning.errors import ConfigError
from gan_lightning.synth.vae import VAESettings, fit_vae, save_vae
from tests.helpers import make_trainer, tiny_digits, tiny_module
from tests.helpers import tiny_run_args as tiny_args
from train import main

TINY_VAE = {"epochs": 1, "width": 4, "latent_dim": 4}


def test_schedules_start_at_the_fraction_and_decay_to_zero_by_the_end_epoch():
    for kind in ("linear", "cosine"):
        f = fraction_schedule(kind, 0.4, 10)
        assert f(0) == pytest.approx(0.4) and f(10) == pytest.approx(0.0) and f(15) == pytest.approx(0.0)
        assert f(5) == pytest.approx(0.2)  # both pass half way at half time
        assert f(2) > f(4) > f(8)
    assert fraction_schedule("linear", 0.4, 10)(2.5) == pytest.approx(0.3)
    assert fraction_schedule("cosine", 0.4, 10)(2.5) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)))
    assert fraction_schedule("constant", 0.4, 10)(9.9) == 0.4
    assert synthetic_count("replace", 0.25, 32) == 8
    assert synthetic_count("append", 0.25, 30) == 10  # 10 of 40
    assert synthetic_count("fake", 0.5, 16) == 16


class BatchProbe(GANCallback):
    """After the vae callback: what D is given as real and as fake, against the loader's batch."""

    def __init__(self) -> None:
        self.original = None
        self.real: list[tuple[int, int, int, float]] = []  # (epoch, batch, size, rows changed)
        self.fake_sizes: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.original = batch[0].clone()

    def transform_real_batch(self, trainer, module, real):
        changed = int((real[: len(self.original)] != self.original[: len(real)]).flatten(1).any(1).sum())
        self.real.append((trainer.current_epoch, trainer.fit_loop.batch_idx, len(real), changed))
        return real

    def transform_fake_batch(self, trainer, module, fake):
        self.fake_sizes.append(len(fake))
        return fake


def fit_with(tmp_path, vae: VAEAugmentation, epochs: int = 2, batches: int = 4):
    probe = BatchProbe()
    trainer = make_trainer(tmp_path, callbacks=[vae, probe], max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(tiny_module(), datamodule=tiny_digits())
    return probe, trainer


def test_replace_swaps_exactly_the_scheduled_share_of_every_real_batch(tmp_path, seeded):
    vae = VAEAugmentation(mode="replace", fraction=0.5, schedule="linear", cache_dir=str(tmp_path / "cache"), **TINY_VAE)
    probe, trainer = fit_with(tmp_path, vae)
    expected_f = [0.5 * (1 - (epoch + b / 4) / 2) for epoch in range(2) for b in range(4)]
    assert [(e, b) for e, b, _, _ in probe.real] == [(e, b) for e in range(2) for b in range(4)]
    assert [size for _, _, size, _ in probe.real] == [32] * 8
    assert [changed for *_, changed in probe.real] == [round(f * 32) for f in expected_f]
    assert probe.fake_sizes == [32] * 8  # replace leaves the fakes alone
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    logged = [float(r["train/synthetic_fraction"]) for r in rows if r.get("train/synthetic_fraction")]
    assert logged == pytest.approx(expected_f)


def test_append_grows_the_real_batch_and_fake_mode_grows_the_fakes(tmp_path, seeded):
    probe, _ = fit_with(tmp_path / "a", VAEAugmentation(mode="append", fraction=0.2, cache_dir=str(tmp_path / "cache"), **TINY_VAE), epochs=1, batches=2)
    assert [(size, changed) for *_, size, changed in probe.real] == [(40, 0)] * 2  # 8 of 40 synthetic; the 32 real ones untouched
    probe, _ = fit_with(tmp_path / "f", VAEAugmentation(mode="fake", fraction=0.2, cache_dir=str(tmp_path / "cache"), **TINY_VAE), epochs=1, batches=2)
    assert [(size, changed) for *_, size, changed in probe.real] == [(32, 0)] * 2
    assert probe.fake_sizes == [40] * 2


def test_the_vae_is_in_the_checkpoint_state_and_comes_back_identical(tmp_path, seeded):
    vae = VAEAugmentation(mode="none", cache_dir=str(tmp_path / "cache"), **TINY_VAE)
    _, trainer = fit_with(tmp_path, vae, epochs=1, batches=1)
    module = trainer.lightning_module
    restored = VAEAugmentation(mode="none", **TINY_VAE)
    restored.load_state_dict(vae.state_dict())
    assert restored.source == {**vae.source, "resumed": True} and vae.source["from"] == "trained"
    assert torch.equal(restored.synthetic_samples(trainer, module, 6, seed=3), vae.synthetic_samples(trainer, module, 6, seed=3))
    assert not torch.equal(vae.synthetic_samples(trainer, module, 6, seed=3), vae.synthetic_samples(trainer, module, 6, seed=4))


@pytest.mark.slow
def test_resuming_uses_the_checkpoints_vae_without_training_one(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    flags = ["--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--callbacks", "vae", "--vae.epochs", "1", "--vae.width", "4", "--vae.latent_dim", "4"]
    assert main(tiny_args(run, *flags)) == 0
    ckpt = run / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = next(v for k, v in saved["callbacks"].items() if "VAEAugmentation" in k)

    def no_training(*args, **kwargs):
        raise AssertionError("a resumed run must use the checkpoint's VAE")

    monkeypatch.setattr("callbacks.vae.cached_vae", no_training)
    assert main(tiny_args(run, *flags, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt))) == 0
    resumed = torch.load(ckpt, map_location="cpu", weights_only=True)
    again = next(v for k, v in resumed["callbacks"].items() if "VAEAugmentation" in k)
    assert resumed["epoch"] == 1 and again["source"]["resumed"] is True
    assert all(torch.equal(v, again["weights"][k]) for k, v in state["weights"].items())


@pytest.mark.parametrize("extra, message", [
    (["--callbacks", "vae", "--vae.fraction", "1.5"], "--vae.fraction must be in [0, 1] (a share of the batch), got 1.5"),
    (["--callbacks", "vae", "--vae.fraction", "-0.1"], "--vae.fraction must be in [0, 1] (a share of the batch), got -0.1"),
    (["--callbacks", "vae", "--vae.mode", "append", "--vae.fraction", "1"], "--vae.fraction 1 with --vae.mode append would need infinitely many synthetic samples"),
    (["--vae.epochs", "3"], "--vae.epochs was set but the 'vae' callback is not switched on; add it with --callbacks vae"),
    (["--callbacks", "prune", "--prune.start_epoch", "0", "--prune.criterion", "taylor", "--prune.calibration_source", "vae"],
     "--prune.calibration_source vae draws calibration samples from the VAE: add it with --callbacks vae"),
    (["--callbacks", "prune,vae", "--prune.start_epoch", "0", "--prune.calibration_source", "vae"],
     "--prune.calibration_source vae changes nothing for --prune.criterion auto"),
])
def test_bad_input_is_one_sentence_before_training(tmp_path, capsys, extra, message):
    assert main(tiny_args(tmp_path / "run", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_a_vae_file_for_another_sample_shape_and_conditional_without_labels_are_refused(tmp_path, capsys):
    other, _ = fit_vae(torch.rand(64, 1, 16, 16) * 2 - 1, torch.zeros(64, dtype=torch.long), VAESettings(latent_dim=4, width=4, epochs=1))
    save_vae(other, tmp_path / "vae16.pt", {})
    assert main(tiny_args(tmp_path / "run", "--callbacks", "vae", "--vae.ckpt", str(tmp_path / "vae16.pt"))) == 2
    err = capsys.readouterr().err
    assert f"--vae.ckpt {tmp_path / 'vae16.pt'} makes samples of shape (1, 16, 16) but the data has (1, 8, 8)" in err and "Traceback" not in err
    unlabelled = tmp_path / "images"  # images straight in the folder: no classes
    unlabelled.mkdir()
    for i in range(20):
        Image.fromarray(np.full((8, 8), i * 10, dtype=np.uint8)).save(unlabelled / f"{i}.png")
    assert main(tiny_args(tmp_path / "run2", "--data", "datamodules.ImageFolderDataModule", "--data.root", str(unlabelled), "--data.image_size", "8",
                          "--data.channels", "1", "--callbacks", "vae", "--vae.conditional", "true", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null")) == 2
    assert "--vae.conditional needs data with class labels, and ImageFolderDataModule has none" in capsys.readouterr().err


def test_vae_calibration_feeds_the_vaes_samples_to_the_importance_criterion(tmp_path, seeded, monkeypatch):
    seen = []
    real_scores = target_module.weight_importance

    def recording(module, network, criterion, weights, batches, *args, **kwargs):
        seen.append((network, [b.clone() for b in batches]))
        return real_scores(module, network, criterion, weights, batches, *args, **kwargs)

    monkeypatch.setattr(target_module, "weight_importance", recording)
    vae = VAEAugmentation(mode="none", cache_dir=str(tmp_path / "cache"), **TINY_VAE)
    prune = Prune(generator_amount=0.5, discriminator_amount=0.5, criterion="taylor", calibration_source="vae", start_epoch=0,
                  calibration_samples=40, calibration_batch_size=16, metric="none", seed=7)
    trainer = make_trainer(tmp_path, callbacks=[vae, prune], limit_train_batches=1, limit_val_batches=0)
    module = tiny_module()
    trainer.fit(module, datamodule=tiny_digits())
    expected = vae.synthetic_samples(trainer, module, 40, seed=7)  # event 0: seed + 0
    assert {network for network, _ in seen} == {"generator", "discriminator"}
    for _, batches in seen:
        assert [len(b) for b in batches] == [16, 16, 8]
        assert torch.equal(torch.cat(batches), expected)
    real = torch.cat([b[0] for b in trainer.datamodule.train_dataloader()])
    assert not (real.flatten(1)[:, None] == expected.flatten(1)[None]).all(-1).any()  # none of them is a training image


def test_an_unknown_calibration_source_is_one_sentence():
    with pytest.raises(ConfigError, match="--prune.calibration_source must be real or vae, got 'synthetic'"):
        Prune(calibration_source="synthetic")
