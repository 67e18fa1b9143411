"""Shipped presets: ``--config configs/NAME.yaml`` works where no such file exists (a pip install,
another folder), the user's own file wins where it does, and anything else is one sentence."""

from __future__ import annotations

import pytest
import yaml

from gan_lightning.commands.config_files import check_config_args
from gan_lightning.commands.presets import find_preset, preset_dir, preset_names
from gan_lightning.errors import ConfigError
from tests.helpers import REPO

PRESETS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


def test_the_package_reads_the_top_level_configs_folder():
    assert preset_dir().resolve() == (REPO / "configs").resolve()
    assert preset_names() == PRESETS and "default" in PRESETS


def test_a_preset_is_found_by_every_spelling_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["fit", "--config", "configs/wgan_clip.yaml", "-c", "gmm_ring", "--config=./configs/mlp_digits.yaml", "--config", "wgan_gp.yaml",
            "--config", "{trainer: {max_epochs: 1}}", "--trainer.max_epochs", "2"]
    resolved = check_config_args(argv)
    assert resolved[:2] == ["fit", "--config"] and resolved[-4:] == argv[-4:]
    files = [resolved[2], resolved[4], resolved[5].removeprefix("--config="), resolved[7]]
    assert resolved[5].startswith("--config=")
    assert [open(f, "rb").read() for f in files] == [(REPO / "configs" / f"{n}.yaml").read_bytes() for n in ("wgan_clip", "gmm_ring", "mlp_digits", "wgan_gp")]


def test_the_users_own_file_wins_over_a_preset_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "wgan_clip.yaml").write_text("trainer: {max_epochs: 3}\n")
    argv = ["--config", "configs/wgan_clip.yaml"]
    assert check_config_args(argv) == argv


@pytest.mark.parametrize("value", ["configs/nope.yaml", "nope", "configs/sweeps/prune_distill.yaml", "elsewhere/wgan_gp.yaml", "wgan_gp.yml"])
def test_a_name_that_is_neither_a_file_nor_a_preset_is_one_sentence(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    assert find_preset(value) is None
    with pytest.raises(ConfigError) as refused:
        check_config_args(["--config", value])
    message = str(refused.value)
    assert message.startswith(f"--config {value} does not exist; pass a YAML file, or one of the shipped presets") and "\n" not in message
    assert message.endswith(": " + ", ".join(PRESETS))


def test_train_applies_a_preset_named_outside_the_checkout(tmp_path, monkeypatch, capsys):
    from train import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["--config", "configs/wgan_gp.yaml", "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    # default.yaml (the seed) under the preset (the loss and critic steps)
    assert (config["seed_everything"], config["model"]["loss"], config["model"]["n_critic"]) == (0, "wasserstein", 5)
