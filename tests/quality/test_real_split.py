"""--metrics.real_split: which real samples FID & co. and mode coverage compare against."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from callbacks.compression import measure_quality
from callbacks.fidelity import FidelityEvaluation
from gan_lightning.commands.evaluate import main as evaluate_main
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.errors import ConfigError
from gan_lightning.quality.evaluation import evaluate_generator, real_samples
from tests.helpers import REPO
from train import main as train_main

TINY = str(REPO / "tests" / "tiny.yaml")


@pytest.fixture(scope="module")
def all_split_run(tmp_path_factory):
    """One tiny epoch measured against every digit (1617 train + 180 val)."""
    out = tmp_path_factory.mktemp("run")
    cli = GANLightningCLI(args=["fit", "--config", TINY, "--metrics.real_split", "all", "--metrics.num_real", "2000",
                                "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(out)])
    fidelity = next(cb for cb in cli.trainer.callbacks if isinstance(cb, FidelityEvaluation))
    return cli, fidelity, Path(cli.trainer.checkpoint_callback.dirpath).parent


def _measure(cli, fidelity, split: str, num_real: int) -> dict:
    return evaluate_generator(cli.model, cli.datamodule, num_fake=200, num_real=num_real,
                              domain_weights=fidelity.domain_weights, real_split=split)


@pytest.mark.slow
def test_each_split_sets_the_real_samples_and_changes_fid(all_split_run):
    cli, fidelity, _ = all_split_run
    data = cli.datamodule
    n_train, n_val = len(data.train_set), len(data.val_set)
    assert (n_train, n_val) == (1617, 180)
    val, train, capped, every = (_measure(cli, fidelity, s, n) for s, n in
                                 (("val", 5000), ("train", 5000), ("train", 1000), ("all", 5000)))
    assert (val["num_real"], train["num_real"], capped["num_real"], every["num_real"]) == (180, 1617, 1000, 1797)
    assert val["num_fake"] == train["num_fake"] == every["num_fake"] == 200  # the same generated samples
    assert len({val["fid"], train["fid"], capped["fid"], every["fid"]}) == 4
    assert val == _measure(cli, fidelity, "val", 180)  # val is still the default reference set
    assert evaluate_generator(cli.model, data, num_fake=200, domain_weights=fidelity.domain_weights)["fid"] == val["fid"]


def test_all_is_train_then_val():
    from datamodules.digits import DigitsDataModule

    data = DigitsDataModule(image_size=8)
    data.setup("fit")
    every = real_samples(data, "all")
    assert len(every) == len(data.train_set) + len(data.val_set) == 1797
    assert every[0][0].equal(data.train_set[0][0]) and every[len(data.train_set)][0].equal(data.val_set[0][0])
    assert real_samples(data, "train") is data.train_set and real_samples(data, "val") is data.val_set


def test_training_logs_the_split_it_measured_against(all_split_run):
    _, _, run = all_split_run
    described = yaml.safe_load((run / "hparams.yaml").read_text())["metrics"]
    assert (described["split"], described["num_real"]) == ("all", 1797)


def test_compression_measures_fid_against_the_runs_split(all_split_run):
    cli, fidelity, _ = all_split_run
    assert measure_quality(cli.trainer, cli.model, "fid", fidelity) == _measure(cli, fidelity, "all", 2000)["fid"]


@pytest.mark.slow
def test_evaluate_uses_the_runs_split_its_override_and_val_for_older_configs(all_split_run, tmp_path, capsys):
    _, _, run = all_split_run
    args = ["--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--seeds", "0"]
    assert evaluate_main([*args, "--out", str(tmp_path / "run.json")]) == 0
    assert "200 generated vs 1797 all samples" in capsys.readouterr().out
    assert evaluate_main([*args, "--real_split", "val", "--out", str(tmp_path / "val.json")]) == 0
    assert "200 generated vs 180 val samples" in capsys.readouterr().out
    older = yaml.safe_load((run / "config.yaml").read_text())
    assert older["metrics"].pop("real_split") == "all"
    (tmp_path / "older.yaml").write_text(yaml.safe_dump(older))
    assert evaluate_main([*args, "--config", str(tmp_path / "older.yaml"), "--out", str(tmp_path / "older.json")]) == 0
    by_run, by_flag, by_older = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("run", "val", "older"))
    assert (by_run["split"], by_run["num_real"]) == ("all", 1797)
    assert (by_flag["split"], by_flag["num_real"]) == ("val", 180)
    assert by_older == {**by_flag, "checkpoint": by_older["checkpoint"]}  # no real_split in the config: val
    logged = [float(r["val/fid"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/fid")][-1]
    assert by_run["per_seed"]["0"]["fid"] == pytest.approx(logged, rel=1e-4)  # training measured against all too
    assert by_run["per_seed"]["0"]["fid"] != by_flag["per_seed"]["0"]["fid"]


def test_an_unknown_split_is_refused_naming_the_flag(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", TINY, "--metrics.real_split", "nope", "--trainer.logger", "CSVLogger",
                    "--trainer.logger.save_dir", str(run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "metrics.real_split" in err and "'train'" in err and "'all'" in err
    assert not run.exists()
    with pytest.raises(ConfigError, match=r"^--metrics.real_split must be one of val, train, all, got 'nope'$"):
        FidelityEvaluation(real_split="nope")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--ckpt_path", str(tmp_path / "x.ckpt"), "--real_split", "nope"])
    assert exit_info.value.code == 2
    assert "--real_split: invalid choice: 'nope'" in capsys.readouterr().err
