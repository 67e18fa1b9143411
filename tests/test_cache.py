"""$GAN_LIGHTNING_CACHE is read when a cache is used, not when the package is imported: the
variable set after import (here by monkeypatch, after conftest set another folder and every
module was loaded) is where the files go."""

from __future__ import annotations

import torch

from datamodules.digits import DigitsDataModule
from gan_lightning.quality.features import domain_classifier
from gan_lightning.synth.vae import VAESettings, cached_vae


def test_a_cache_folder_set_after_import_receives_the_domain_classifier_and_the_vae(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_LIGHTNING_CACHE", str(tmp_path / "later"))
    path, _ = domain_classifier(DigitsDataModule(image_size=8), epochs=1)
    assert path.parent == tmp_path / "later" / "domain" and path.is_file()
    images, labels = torch.rand(16, 1, 8, 8) * 2 - 1, torch.arange(16) % 2
    _, _, vae_path, from_cache = cached_vae(images, labels, VAESettings(latent_dim=2, width=4, epochs=1), num_classes=2)
    assert vae_path.parent == tmp_path / "later" / "vae" and vae_path.is_file() and not from_cache


def test_an_empty_cache_variable_means_the_default_folder_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GAN_LIGHTNING_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    path, _ = domain_classifier(DigitsDataModule(image_size=8), epochs=1)
    assert path.parent == tmp_path / ".cache" / "gan-lightning" / "domain"
