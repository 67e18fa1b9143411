"""Sample-quality evaluation during training, from a checkpoint, and mode coverage through it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import gan_lightning.quality.features as features
from datamodules.digits import DigitsDataModule
from datamodules.gaussian_mixture import GaussianMixtureDataModule
from gan_lightning.commands.evaluate import main as evaluate_main
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.core.module import GANModule
from gan_lightning.networks import MLPDiscriminator
from gan_lightning.quality.evaluation import evaluate_generator
from tests.helpers import REPO

TINY = str(REPO / "tests" / "tiny.yaml")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cli = GANLightningCLI(args=["fit", "--config", TINY, "--trainer.max_epochs", "3",
                                "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out)])
    return cli, Path(cli.trainer.checkpoint_callback.dirpath).parent


def test_training_logs_named_metrics_and_keeps_the_best_fid(trained_run):
    cli, run = trained_run
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    fids = [float(r["val/fid"]) for r in rows if r.get("val/fid")]
    assert len(fids) == 3  # every epoch
    for name in ("val/kid", "val/is", "val/precision", "val/recall", "val/modes", "val/mode_kl"):
        assert any(r.get(name) for r in rows), name
    assert cli.trainer.checkpoint_callback.best_model_score.item() == pytest.approx(min(fids))
    described = yaml.safe_load((run / "hparams.yaml").read_text())["metrics"]
    assert described["features"] == "domain" and described["split"] == "val"
    assert (described["num_fake"], described["num_real"]) == (200, 180)
    assert described["domain_accuracy"] > 0.5


@pytest.mark.slow
def test_evaluating_a_checkpoint_reproduces_training_and_itself(trained_run, tmp_path, capsys):
    _, run = trained_run
    ckpt = str(run / "checkpoints" / "last.ckpt")
    args = ["--ckpt_path", ckpt, "--seeds", "0,1"]  # feature space, sample counts, classifier: the run's own
    assert evaluate_main([*args, "--out", str(tmp_path / "a.json")]) == 0
    assert evaluate_main([*args, "--out", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b
    per_seed = [a["per_seed"][s]["fid"] for s in ("0", "1")]
    assert per_seed[0] != per_seed[1]  # different latents
    assert a["metrics"]["fid"]["mean"] == pytest.approx(sum(per_seed) / 2)
    assert (a["features"], a["num_fake"], a["num_real"], a["split"]) == ("domain", 200, 180, "val")
    last_logged = [float(r["val/fid"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/fid")][-1]
    assert per_seed[0] == pytest.approx(last_logged, rel=1e-4)  # seed 0 is the training's --metrics.seed
    table = capsys.readouterr().out
    assert "fid" in table and "200 generated vs 180 val samples" in table


def test_evaluate_refuses_an_empty_seed_list(trained_run, capsys):
    _, run = trained_run
    assert evaluate_main(["--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--seeds", ","]) == 2
    assert "--seeds needs at least one seed" in capsys.readouterr().err


def test_evaluate_refuses_a_missing_checkpoint_in_one_sentence(tmp_path, capsys):
    assert evaluate_main(["--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert "--ckpt_path" in capsys.readouterr().err


def test_inception_without_weights_or_network_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from train import main

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(features, "_network_reachable", lambda *a, **k: False)
    rc = main(["--config", TINY, "--metrics.features", "inception", "--trainer.logger", "CSVLogger",
               "--trainer.logger.save_dir", str(tmp_path / "run")])
    assert rc == 2
    assert "--metrics.inception_weights PATH" in capsys.readouterr().err
    assert not list((tmp_path / "run").rglob("*.ckpt"))


class Replay(nn.Module):
    """A 'generator' that returns given samples, cycling: stands in for a collapsed or a perfect one."""

    def __init__(self, samples: torch.Tensor) -> None:
        super().__init__()
        self.z_dim = 4
        self.register_buffer("samples", samples)

    def forward(self, z):
        idx = torch.arange(z.shape[0]) % len(self.samples)
        return self.samples[idx] + 0 * z[:, :1].view(-1, *[1] * (self.samples.dim() - 1))


def _module(samples: torch.Tensor, d_shape) -> GANModule:
    return GANModule(Replay(samples), MLPDiscriminator(in_shape=d_shape, hidden=[4]))


def test_a_generator_stuck_on_one_ring_mode_covers_one_mode():
    data = GaussianMixtureDataModule(num_samples=2000)
    data.setup("fit")
    one_mode = data.centers[3] + data.std * torch.randn(500, 2)
    collapsed = evaluate_generator(_module(one_mode, [2]), data, features="none", num_fake=500)
    assert collapsed["modes"] == 1 and collapsed["high_quality"] > 0.95
    real = torch.stack([data.train_set[i][0] for i in range(1000)])
    healthy = evaluate_generator(_module(real, [2]), data, features="none", num_fake=1000)
    assert healthy["modes"] == 8 and healthy["mode_kl"] < collapsed["mode_kl"]


@pytest.mark.slow
def test_digit_classes_are_counted_by_the_domain_classifier(tmp_path):
    data = DigitsDataModule(image_size=8)
    data.setup("fit")
    path, _ = features.domain_classifier(data, cache_dir=tmp_path)
    images, labels = map(torch.stack, zip(*[data.train_set[i] for i in range(len(data.train_set))]))
    only_sevens = images[labels == 7]
    collapsed = evaluate_generator(_module(only_sevens, [1, 8, 8]), data, num_fake=300, domain_weights=str(path))
    varied = evaluate_generator(_module(images, [1, 8, 8]), data, num_fake=1000, domain_weights=str(path))
    assert collapsed["modes"] == 1 and varied["modes"] == 10
    assert collapsed["mode_kl"] > 1.5 > 0.2 > varied["mode_kl"]
    assert varied["fid"] < collapsed["fid"]


@pytest.mark.slow
def test_metrics_every_other_epoch_still_keep_a_best_checkpoint(tmp_path):
    cli = GANLightningCLI(args=["fit", "--config", TINY, "--trainer.max_epochs", "2", "--metrics.every_n_epochs", "2",
                                "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path)])
    rows = list(csv.DictReader((Path(cli.trainer.logger.log_dir) / "metrics.csv").open()))
    assert [r["epoch"] for r in rows if r.get("val/fid")] == ["1"]
    assert Path(cli.trainer.checkpoint_callback.best_model_path).name == "best-epoch001.ckpt"


@pytest.mark.slow
def test_filling_the_classifier_cache_does_not_change_the_gan_run(tmp_path):
    def final_generator(cache: Path) -> dict:
        cli = GANLightningCLI(args=["fit", "--config", TINY, "--metrics.domain_cache_dir", str(cache),
                                    "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path / "logs")])
        return {k: v.clone() for k, v in cli.model.generator.state_dict().items()}

    cold = final_generator(tmp_path / "cache")  # trains the classifier first
    warm = final_generator(tmp_path / "cache")  # finds it cached
    for k in cold:
        assert torch.equal(cold[k], warm[k]), k


def test_an_evaluation_failure_stops_training_with_one_sentence(tmp_path, monkeypatch, capsys):
    import callbacks.fidelity as evaluation
    from train import main

    def broken(*args, **kwargs):
        raise RuntimeError("feature extractor exploded")

    monkeypatch.setattr(evaluation, "evaluate_generator", broken)
    assert main(["--config", TINY, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]) == 2
    assert "evaluating the generator failed (RuntimeError: feature extractor exploded)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_generator_making_nan_is_scored_nan_not_a_crash(tmp_path):
    data = DigitsDataModule(image_size=8)
    data.setup("fit")
    path, _ = features.domain_classifier(data, cache_dir=tmp_path)
    nan_images = torch.full((10, 1, 8, 8), float("nan"))
    out = evaluate_generator(_module(nan_images, [1, 8, 8]), data, num_fake=50, domain_weights=str(path))
    assert all(out[k] != out[k] for k in ("fid", "kid", "precision"))  # NaN, which ModelCheckpoint ranks worst


@pytest.mark.slow
def test_sparse_metrics_keep_last_checkpoint_current_and_any_val_key_monitorable(tmp_path):
    cli = GANLightningCLI(args=["fit", "--config", str(REPO / "configs" / "gmm_ring.yaml"), "--trainer.max_epochs", "3",
                                "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
                                "--metrics.every_n_epochs", "2", "--metrics.features", "none",
                                "--checkpoint.monitor", "val/modes", "--checkpoint.mode", "max",
                                "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path)])
    folder = Path(cli.trainer.checkpoint_callback.dirpath)
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3 * 2 * 2  # the third epoch too, though metrics ran only after the second
    assert Path(cli.trainer.checkpoint_callback.best_model_path).name == "best-epoch001.ckpt"


def test_unlabelled_images_with_domain_features_are_refused_before_a_run_folder(tmp_path, capsys):
    from PIL import Image

    from train import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), color=40 * i).save(images / f"{i}.png")
    run = tmp_path / "run"
    rc = main(["--config", TINY, "--data", "datamodules.ImageFolderDataModule", "--data.root", str(images),
               "--data.image_size", "8", "--data.channels", "1", "--trainer.logger", "CSVLogger",
               "--trainer.logger.save_dir", str(run)])
    assert rc == 2
    assert "--metrics.features none with --checkpoint.monitor val/swd" in capsys.readouterr().err
    assert not run.exists()
