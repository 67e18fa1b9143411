"""train.py / GANLightningCLI: flags, presets, error paths, resume and the loggers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from callbacks.grad_norm import GradNormMonitor
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.networks import MLPGenerator
from tests.helpers import REPO, read_wandb_records
from tests.helpers import tiny_run_args as tiny_args
from tests.probes import TrainStartState
from train import main



def fit(tmp_path: Path, *extra: str, logger: str = "CSVLogger") -> GANLightningCLI:
    return GANLightningCLI(args=["fit", *tiny_args(tmp_path, *extra, logger=logger)])


def test_help_lists_the_callback_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--callbacks" in out and "grad_norm" in out and "--grad_norm.norm_type" in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--callbacks", "grad_norm,nope"], "error: --callbacks got unknown name(s) nope; available: "),
        (["--callbacks", "grad_norm,grad_norm"], "--callbacks names grad_norm more than once"),
        (["--grad_norm.norm_type", "1"], "--grad_norm.norm_type was set but the 'grad_norm' callback is not switched on"),
        (["--callbacks", "grad_norm", "--grad_norm.norm_type", "-1"], "--grad_norm.norm_type must be > 0"),
        (["--data.init_args.train_fraction", "1.5"], "--data.train_fraction must be in (0, 1]"),
        (["--model.n_critic", "0"], "--model.n_critic must be an integer >= 1"),
        (["--data.init_args.image_size", "16"], "the generator makes samples of shape (1, 8, 8) but the data has (1, 16, 16)"),
        (["--model.discriminator.init_args.image_size", "16"], "the discriminator cannot take samples of shape (1, 8, 8)"),
        (["--model.generator.init_args.image_size", "30"], "--model.generator.init_args.image_size and --model.discriminator.init_args.image_size must be a power of two"),
        (["--data", "datamodules.GaussianMixtureDataModule"], "but the data has (2,): use 2-D networks such as configs/gmm_ring.yaml"),
        (["--trainer.gradient_clip_val", "1.0"], "--trainer.gradient_clip_val does not apply to the GAN's manual optimization"),
        (["--ckpt_path", "last"], "--ckpt_path last is not supported by train.py: pass the .ckpt file"),
        (["--metrics.features", "none"], "--checkpoint.monitor val/fid needs --metrics.every_n_epochs >= 1 and --metrics.features domain or inception"),
        (["--data", "datamodules.ImageFolderDataModule", "--data.root", "/no/such/folder"], "--data.root"),
        (["--callbacks", "prune", "--prune.generator_amount", "1.5"], "--prune.generator_amount must be in [0, 1) (a fraction removed), got 1.5"),
        (["--callbacks", "prune", "--prune.skip_layers", "[generator.nope]"], "--prune.skip_layers names unknown layer(s) generator.nope; prunable layers: discriminator.net.0,"),
        (["--callbacks", "prune", "--prune.start_epoch", "3"], "--prune schedule oneshot prunes at epoch 3 but training ends after epoch 0 (--trainer.max_epochs)"),
        (["--callbacks", "prune"], "--prune.start_epoch has no default without --trainer.max_epochs >= 2: set it"),
        (["--callbacks", "prune", "--prune.start_epoch", "0", "--prune.metric", "fid", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "val/swd"],
         "--prune.metric fid needs the run to measure FID (--metrics.every_n_epochs >= 1 and --metrics.features domain or inception)"),
        (["--callbacks", "prune", "--prune.schedule", "gradual", "--prune.end_step", "0"], "--prune.schedule gradual needs 0 <= --prune.start_step < --prune.end_step"),
    ],
)
def test_bad_input_is_one_clear_sentence(tmp_path, capsys, extra, message):
    run = tmp_path / "run"
    assert main(tiny_args(run, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not run.exists()  # refused before the logger made a run folder


def test_unknown_choice_lists_the_allowed_values(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(tiny_args(tmp_path, "--model.loss", "nope"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "model.loss" in err and "hinge" in err and "wasserstein" in err


def _printed_config(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit):
        main([*args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_no_arguments_means_the_default_preset(capsys):
    bare = _printed_config(capsys)
    explicit = _printed_config(capsys, "--config", str(REPO / "configs" / "default.yaml"))
    assert bare == explicit
    assert bare["model"]["generator"]["class_path"].endswith("DCGANGenerator")
    assert bare["data"]["class_path"].endswith("DigitsDataModule")
    assert bare["trainer"]["logger"]["class_path"].endswith("WandbLogger")


def test_a_preset_replaces_the_network_without_leaking_the_defaults(capsys):
    config = _printed_config(capsys, "--config", str(REPO / "configs" / "mlp_digits.yaml"))
    assert config["model"]["generator"]["class_path"].endswith("MLPGenerator")
    assert config["model"]["generator"]["init_args"]["hidden"] == [256, 256]
    assert "image_size" not in config["model"]["generator"]["init_args"]


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
@pytest.mark.slow
def test_every_preset_trains_a_batch(tmp_path, preset):
    cli = GANLightningCLI(
        args=["fit", "--config", str(REPO / "configs" / preset), "--trainer.fast_dev_run", "1",
              "--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"]
    )
    # one batch is n_critic discriminator steps and one generator step
    assert cli.trainer.global_step == cli.model.hparams.n_critic + 1
    sample = cli.model.generate(2, seed=0)
    assert sample.shape[1:] == cli.datamodule.sample_shape
    if preset == "mlp_digits.yaml":
        assert isinstance(cli.model.generator, MLPGenerator)


def test_callbacks_flag_switches_on_a_configured_callback(tmp_path):
    cli = fit(tmp_path, "--callbacks", "grad_norm", "--grad_norm.norm_type", "1")
    monitors = [cb for cb in cli.trainer.callbacks if isinstance(cb, GradNormMonitor)]
    assert len(monitors) == 1 and monitors[0].norm_type == 1.0
    assert cli.trainer.callback_metrics["train/d_grad_norm"] > 0
    assert cli.trainer.callback_metrics["train/g_grad_norm"] > 0


def test_checkpointing_can_be_switched_off(tmp_path):
    cli = fit(tmp_path, "--trainer.enable_checkpointing", "false")
    assert cli.trainer.global_step == 3 * 2
    assert not list(tmp_path.rglob("*.ckpt"))


def test_run_writes_checkpoints_samples_config_and_metrics(tmp_path):
    cli = fit(tmp_path, "--trainer.max_epochs", "2")
    run = Path(cli.trainer.checkpoint_callback.dirpath).parent
    assert (run / "checkpoints" / "last.ckpt").is_file()
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.is_file() and best.name.startswith("best-epoch")
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["epoch_0000.png", "epoch_0001.png"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 2
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/d_loss", "train/g_loss", "val/swd", "compress/g_params"} <= set(header)
    import csv

    rows = list(csv.DictReader((run / "tables" / "model_layers.csv").open()))
    g_rows = [r for r in rows if r["network"] == "generator"]
    assert sum(int(r["parameters"]) for r in g_rows) == sum(p.numel() for p in cli.model.generator.parameters())
    assert {r["type"] for r in g_rows} == {"Linear", "BatchNorm1d", "ConvTranspose2d"}  # 8x8: one upsampling


def _resume(tmp_path, last: Path, *extra: str) -> tuple[GANLightningCLI, TrainStartState]:
    cli = fit(tmp_path, "--ckpt_path", str(last), "--trainer.callbacks+=tests.probes.TrainStartState", *extra)
    return cli, next(cb for cb in cli.trainer.callbacks if isinstance(cb, TrainStartState))


@pytest.mark.slow
def test_resume_from_last_continues_steps_weights_and_best_score_in_the_same_folder(tmp_path):
    first = fit(tmp_path, "--trainer.max_epochs", "2")
    folder = Path(first.trainer.checkpoint_callback.dirpath)
    best_before = first.trainer.checkpoint_callback.best_model_score.item()
    saved = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 * 3 * 2  # epochs * batches * (D step + G step)

    resumed, start = _resume(tmp_path, folder / "last.ckpt", "--trainer.max_epochs", "3")
    for k, v in saved["state_dict"].items():
        torch.testing.assert_close(start.state[k], v)
    assert start.best_model_score.item() == pytest.approx(best_before)  # not reset by a new folder
    assert resumed.trainer.global_step == 3 * 3 * 2 and resumed.trainer.current_epoch == 3
    assert Path(resumed.trainer.checkpoint_callback.dirpath) == folder
    after = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["global_step"] == 3 * 3 * 2


@pytest.mark.slow
def test_resume_starts_an_ema_from_a_checkpoint_without_one_and_names_the_flag_the_other_way(tmp_path, capsys):
    plain = fit(tmp_path / "plain", "--model.ema_decay", "null")
    plain_last = Path(plain.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    _, start = _resume(tmp_path / "plain", plain_last, "--model.ema_decay", "0.9", "--trainer.max_epochs", "2")
    for k, v in start.state.items():
        if k.startswith("generator_ema."):
            torch.testing.assert_close(v, start.state["generator." + k[len("generator_ema."):]])

    ema = fit(tmp_path / "ema", "--model.ema_decay", "0.9")
    ema_last = Path(ema.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    assert main(tiny_args(tmp_path / "ema", "--model.ema_decay", "null", "--ckpt_path", str(ema_last))) == 2
    assert "resume with --model.ema_decay 0.9" in capsys.readouterr().err


@pytest.mark.slow
def test_checkpoint_of_another_architecture_is_refused_and_left_intact(tmp_path, capsys):
    first = fit(tmp_path)
    last = Path(first.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    before = last.read_bytes()
    rc = main(tiny_args(tmp_path / "wide", "--model.generator.init_args.width", "8", "--ckpt_path", str(last)))
    assert rc == 2
    err = capsys.readouterr().err
    assert "different architecture" in err and "generator.stem.0.weight" in err
    assert last.read_bytes() == before


@pytest.mark.parametrize("content,message", [(b"not a checkpoint", "is not a readable checkpoint"), (None, "does not exist")])
def test_unreadable_checkpoint_is_refused_before_building_anything(tmp_path, capsys, content, message):
    ckpt = tmp_path / "broken.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    assert main(tiny_args(tmp_path, "--ckpt_path", str(ckpt))) == 2
    err = capsys.readouterr().err
    assert message in err and str(ckpt) in err


@pytest.mark.slow
def test_wandb_without_credentials_logs_offline_with_scalars_images_and_config(tmp_path, monkeypatch):
    import json

    import wandb

    # No key, no ~/.netrc, no WANDB_MODE: online would prompt for a key and hang, so offline is forced.
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cli = fit(tmp_path, "--callbacks", "grad_norm", logger="WandbLogger")
    wandb.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    records = read_wandb_records(next(run_dir.glob("run-*.wandb")))
    by_kind: dict[str, list] = {}
    for record in records:
        by_kind.setdefault(record.WhichOneof("record_type"), []).append(record)
    run = by_kind["run"][0].run
    assert (run.display_name, run.run_group) == ("dcgan-digits+grad_norm", "dcgan-digits")
    assert set(run.tags) >= {"dcgan", "digits", cli.model.hparams.loss, "grad_norm"}
    logged = {item.key or "/".join(item.nested_key) for r in by_kind["history"] for item in r.history.item}
    assert {"train/d_loss", "train/g_loss", "val/swd", "train/d_grad_norm", "samples/filenames"} <= logged
    assert "compress/g_params" in logged and any(k.startswith("model/layers/") for k in logged)
    grid = np.asarray(Image.open(next((run_dir / "files" / "media" / "images").glob("samples_*.png"))))
    assert grid.max() == 255 and grid.std() > 20  # a float grid would have come out black
    config = {item.key: item.value_json for r in by_kind["config"] for item in r.config.update}
    assert json.loads(config["config"])["callbacks"] == "grad_norm"  # the full CLI config


@pytest.mark.slow
def test_tensorboard_receives_the_sample_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cli = fit(tmp_path, "--trainer.max_epochs", "2", logger="TensorBoardLogger")
    events = EventAccumulator(cli.trainer.logger.log_dir)
    events.Reload()
    assert "samples" in events.Tags()["images"]
    # one grid per epoch, on the same x-axis as that epoch's validation scalar (batches, not optimizer steps)
    assert [e.step for e in events.Images("samples")] == [e.step for e in events.Scalars("val/swd")] == [2, 5]
    image = events.Images("samples")[-1]
    assert (image.width, image.height) == (82, 82)  # 8x8 grid of 8x8 samples with 2-pixel padding
    assert "train/d_loss" in events.Tags()["scalars"]
    assert any(tag.startswith("model/layers") for tag in events.Tags()["tensors"])  # the layer table as text


@pytest.mark.slow
def test_cli_checkpoint_rebuilds_its_model_in_plain_python(tmp_path):
    from gan_lightning.core.module import GANModule

    cli = fit(tmp_path, "--model.ema_decay", "0.9", "--model.generator.init_args.width", "6")
    last = Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    loaded = GANModule.load_from_checkpoint(last, map_location="cpu")
    assert loaded.generator.blocks[0].in_channels == 6 and loaded.hparams.ema_decay == 0.9
    torch.testing.assert_close(loaded.generate(8, seed=5), cli.model.cpu().generate(8, seed=5))


@pytest.mark.slow
def test_resumed_wandb_run_continues_the_same_run(tmp_path):
    import wandb

    first = fit(tmp_path, logger="WandbLogger")
    run_id = first.trainer.logger.experiment.id
    wandb.finish()
    last = Path(first.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    resumed = fit(tmp_path, "--ckpt_path", str(last), "--trainer.max_epochs", "2", logger="WandbLogger")
    assert resumed.trainer.logger.experiment.id == run_id
    wandb.finish()


def test_last_checkpoint_is_written_every_epoch_when_the_monitored_metric_stops_improving(tmp_path):
    cli = fit(tmp_path, "--trainer.max_epochs", "3", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "probe/epoch",
              "--trainer.callbacks+=tests.probes.EpochScore")
    folder = Path(cli.trainer.checkpoint_callback.dirpath)
    assert Path(cli.trainer.checkpoint_callback.best_model_path).name == "best-epoch000.ckpt"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".gan-lightning.lock")) == ["best-epoch000.ckpt", "last.ckpt"]
