"""FID and friends in the offline domain feature space, its cache, and the Inception fail-fast."""

from __future__ import annotations

import time

import pytest
import torch

import gan_lightning.quality.features as features
from datamodules.digits import DigitsDataModule
from gan_lightning.errors import ConfigError
from gan_lightning.quality.fidelity import fidelity_metrics


@pytest.fixture(scope="module")
def digits():
    data = DigitsDataModule(image_size=8)
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def classifier(digits, tmp_path_factory):
    return features.domain_classifier(digits, cache_dir=tmp_path_factory.mktemp("cache"))


def _images(dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_domain_classifier_learns_the_digits(classifier):
    _, record = classifier
    assert record["accuracy"] > 0.9  # held-out digits; chance is 0.1
    assert record["num_val"] == 180


def test_fid_is_zero_against_itself_and_large_against_noise(digits, classifier):
    path, _ = classifier
    real = _images(digits.val_set)
    same = fidelity_metrics(real, real, domain_weights=str(path))
    noise = fidelity_metrics(torch.rand_like(real) * 2 - 1, real, domain_weights=str(path))
    held_out = fidelity_metrics(_images(digits.train_set)[:180], real, domain_weights=str(path))
    assert abs(same["fid"]) < 1e-3
    assert noise["fid"] > 10 * held_out["fid"] > 0  # small sets bias FID upwards, yet noise is far off
    # KID of a set with itself is degenerate (the unbiased estimator counts each pair once); against held-out digits it is tiny
    assert noise["kid"] > 10 * abs(held_out["kid"])
    assert same["precision"] == pytest.approx(1.0) and same["recall"] == pytest.approx(1.0)
    assert noise["precision"] < 0.2
    assert same["is"] > noise["is"] * 0.5  # IS of the real digits is high (about the 10 classes)


def test_held_out_digits_score_much_better_than_shifted_ones(digits, classifier):
    path, _ = classifier
    train = _images(digits.train_set)[:180]
    val = _images(digits.val_set)
    shifted = torch.roll(train, shifts=3, dims=-1)  # digits pushed off-centre: similar pixels, wrong shapes
    assert fidelity_metrics(train, val, domain_weights=str(path))["fid"] < fidelity_metrics(shifted, val, domain_weights=str(path))["fid"]


@pytest.mark.slow
def test_cache_is_reused_and_invalidated_when_the_data_changes(tmp_path, monkeypatch):
    calls = []
    original = features.DomainClassifier

    class Counting(original):
        def __init__(self, *args, **kwargs):
            calls.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(features, "DomainClassifier", Counting)
    small = DigitsDataModule(image_size=8)
    first, _ = features.domain_classifier(small, cache_dir=tmp_path, epochs=1)
    again, _ = features.domain_classifier(DigitsDataModule(image_size=8), cache_dir=tmp_path, epochs=1)
    assert first == again and len(calls) == 1  # same data and settings: trained once
    other, _ = features.domain_classifier(DigitsDataModule(image_size=8, seed=1), cache_dir=tmp_path, epochs=1)
    bigger, _ = features.domain_classifier(DigitsDataModule(image_size=16), cache_dir=tmp_path, epochs=1)
    assert len({first, other, bigger}) == 3 and len(calls) == 3  # different split or pixels: retrained


def test_unlabelled_data_cannot_train_domain_features(tmp_path):
    class Unlabelled(DigitsDataModule):
        num_classes = None

    with pytest.raises(ConfigError, match="--metrics.features inception"):
        features.domain_classifier(Unlabelled(image_size=8), cache_dir=tmp_path)


def test_inception_without_weights_or_network_fails_fast_with_how_to(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    monkeypatch.setattr(features, "_network_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"pass --metrics.inception_weights PATH, or use --metrics.features domain"):
        fidelity_metrics(torch.zeros(4, 1, 8, 8), torch.zeros(4, 1, 8, 8), features="inception")
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ConfigError, match="--metrics.inception_weights /nope.pth does not exist"):
        features.inception_weights_or_fail("/nope.pth")
