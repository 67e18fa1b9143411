"""``python -m gan_lightning.commands.synthesize``: the written folder is a dataset the image-folder
datamodule loads with the labels the command assigned, and the score compares it with real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from datamodules.digits import load_digits_tensors
from datamodules.image_folder import ImageFolderDataModule
from gan_lightning.commands import synthesize as synthesize_command
from gan_lightning.commands.generate import to_uint8
from gan_lightning.synth.vae import VAESettings, fit_vae, save_vae
from tests.helpers import tiny_run_args
from train import main

TINY_DATA = {"class_path": "datamodules.DigitsDataModule", "init_args": {"image_size": 8, "batch_size": 16}}


@pytest.fixture(scope="module")
def conditional_vae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    images, labels = load_digits_tensors(8)
    vae, _ = fit_vae(images[:400], labels[:400], VAESettings(latent_dim=4, width=4, conditional=True, epochs=2), num_classes=10)
    save_vae(vae, folder / "vae.pt", {"key": "test"})
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"data": TINY_DATA}))
    return folder / "vae.pt", config


def test_a_conditional_vae_dataset_loads_with_the_labels_it_was_drawn_for(tmp_path, conditional_vae, capsys):
    source, config = conditional_vae
    out = tmp_path / "synthetic"
    assert synthesize_command.main(["--source", str(source), "--config", str(config), "--num_samples", "50", "--out", str(out), "--seed", "3"]) == 0
    record = json.loads((out / "dataset.json").read_text())
    assert record["labels"] == "vae" and record["kind"] == "conditional vae"
    images, labels, _ = synthesize_command.draw(source, 50, seed=3, batch_size=256)  # what the command drew
    assert record["class_counts"] == torch.bincount(labels, minlength=10).tolist()
    data = ImageFolderDataModule(root=str(out), image_size=8, channels=1)
    assert data.classes == [str(i) for i in range(10)]  # every class has its folder, empty or not
    loaded = {path.name: label for path, label in zip(data.paths, data.labels)}
    assert len(loaded) == 50
    expected = to_uint8(images)
    for i in range(50):
        assert loaded[f"{i:06d}.png"] == int(labels[i])
        pixels = np.asarray(Image.open(out / str(int(labels[i])) / f"{i:06d}.png"))
        assert np.array_equal(pixels, expected[i, ..., 0].numpy())


@pytest.mark.slow
def test_a_gan_checkpoint_is_labelled_by_the_domain_classifier_and_scored_against_real_data(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_run_args(run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null")) == 0
    out = tmp_path / "synthetic"
    # the run's config.yaml (next to checkpoints/) gives the data: no --config needed
    assert synthesize_command.main(["--source", str(run / "version_0" / "checkpoints" / "last.ckpt"), "--num_samples", "40", "--out", str(out), "--score"]) == 0
    record = json.loads((out / "dataset.json").read_text())
    assert record["labels"] == "domain" and record["kind"] == "gan"
    data = ImageFolderDataModule(root=str(out), image_size=8, channels=1)
    assert sum(record["class_counts"]) == 40 == len(data.paths)
    assert np.bincount(data.labels, minlength=10).tolist() == record["class_counts"]
    cas = record["cas"]
    assert cas["num_train"] == 40 and cas["num_test"] == 180  # the 8x8 digits' validation split
    # a real-trained classifier beats one trained on samples of a GAN trained for 3 batches
    assert cas["cas_real"] > cas["cas_synthetic"] and cas["cas_ratio"] == pytest.approx(cas["cas_synthetic"] / cas["cas_real"])
    assert "classification accuracy on 180 real validation images" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--labels", "vae", "--num_samples", "5"], None),  # works: the fixture VAE is conditional
    (["--labels", "maybe"], "--labels must be one of auto, vae, domain, none"),
    (["--num_samples", "0"], "--num_samples and --batch_size must be >= 1"),
    (["--num_samples", "5000", "--score"], "--score compares with as many real training images as --num_samples (5000)"),
])
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, conditional_vae, capsys, extra, message):
    source, config = conditional_vae
    out = tmp_path / "synthetic"
    status = synthesize_command.main(["--source", str(source), "--config", str(config), "--out", str(out), *extra])
    if message is None:
        assert status == 0 and (out / "dataset.json").is_file()
        return
    assert status == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_refuses_an_unconditional_vae_for_vae_labels_and_a_folder_that_is_not_empty(tmp_path, conditional_vae, capsys):
    _, config = conditional_vae
    images, labels = load_digits_tensors(8)
    vae, _ = fit_vae(images[:64], labels[:64], VAESettings(latent_dim=4, width=4, epochs=1), num_classes=10)
    save_vae(vae, tmp_path / "plain.pt", {})
    assert synthesize_command.main(["--source", str(tmp_path / "plain.pt"), "--config", str(config), "--out", str(tmp_path / "a"), "--labels", "vae"]) == 2
    assert "--labels vae needs a conditional VAE" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    assert synthesize_command.main(["--source", str(tmp_path / "plain.pt"), "--config", str(config), "--out", str(tmp_path / "b")]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "b" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["keep.txt"]
