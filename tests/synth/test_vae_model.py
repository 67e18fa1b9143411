"""gan_lightning.synth.vae: the VAE learns, samples like the data, is deterministic and cached by data."""

from __future__ import annotations

import pytest
import torch

from datamodules.digits import load_digits_tensors
from gan_lightning.errors import CheckpointError
from gan_lightning.synth import vae as vae_module
from gan_lightning.synth.vae import VAESettings, cached_vae, fit_vae, load_vae, save_vae

SMALL = VAESettings(latent_dim=4, width=8, epochs=4, batch_size=64)


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits_tensors(8)
    return images[:400], labels[:400]


def test_the_elbo_improves_and_samples_have_the_datas_shape_and_range(digits):
    images, labels = digits
    vae, record = fit_vae(images, labels, SMALL)
    assert len(record.elbo) == SMALL.epochs
    assert record.elbo[-1] > record.elbo[0] + 100  # nats per sample: a fresh decoder is far off
    assert all(e == pytest.approx(-(r + k)) for e, r, k in zip(record.elbo, record.recon, record.kl))
    samples = vae.sample(32, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (32, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    assert samples.std(0).mean() > 0.01  # different latents, different images


def test_flat_data_gets_an_mlp_vae_with_unbounded_outputs():
    points = torch.randn(256, 2) * 3 + 5  # far outside [-1, 1]
    vae, record = fit_vae(points, torch.zeros(256, dtype=torch.long), VAESettings(latent_dim=2, width=16, epochs=20, lr=1e-2, likelihood_std=1.0))
    assert isinstance(vae, vae_module.MLPVAE)
    samples = vae.sample(500, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (500, 2)
    assert (samples.mean(0) - points.mean(0)).abs().max() < 1.5  # a tanh would cap it at 1


def test_a_conditional_vae_draws_labels_in_the_training_frequencies(digits):
    images, labels = digits
    only_two = labels % 2  # labels 0 and 1, in the proportions of the even/odd digits
    vae, _ = fit_vae(images, only_two, VAESettings(latent_dim=4, width=8, epochs=1, conditional=True), num_classes=10)
    expected = torch.bincount(only_two, minlength=10).float() / len(only_two)
    assert torch.allclose(vae.class_prior, expected)
    drawn = vae.sample_labels(2000, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) <= {0, 1} and abs(drawn.float().mean().item() - expected[1].item()) < 0.05
    z = torch.Generator().manual_seed(1)
    a = vae.sample(4, torch.zeros(4, dtype=torch.long), torch.Generator().manual_seed(1))
    b = vae.sample(4, torch.ones(4, dtype=torch.long), z)
    assert not torch.equal(a, b)  # same latents, different labels: the label reaches the decoder


def test_training_is_deterministic_and_leaves_the_callers_rng_alone(digits):
    images, labels = digits
    settings = VAESettings(latent_dim=4, width=4, epochs=1)
    before = torch.get_rng_state()
    a, _ = fit_vae(images, labels, settings)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = fit_vae(images, labels, settings)
    c, _ = fit_vae(images, labels, VAESettings(latent_dim=4, width=4, epochs=1, seed=1))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_the_cache_is_reused_and_a_changed_pixel_trains_a_new_vae(digits, tmp_path, monkeypatch):
    images, labels = digits
    settings = VAESettings(latent_dim=4, width=4, epochs=1)
    first, record, path, hit = cached_vae(images, labels, settings, 10, tmp_path)
    assert not hit and path.is_file() and record["num_train"] == 400

    def no_training(*args, **kwargs):
        raise AssertionError("the cached VAE should have been used")

    monkeypatch.setattr(vae_module, "fit_vae", no_training)
    again, _, same_path, hit = cached_vae(images, labels, settings, 10, tmp_path)
    assert hit and same_path == path
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())
    changed = images.clone()
    changed[0, 0, 0, 0] += 0.5
    with pytest.raises(AssertionError, match="cached VAE"):  # a new key: it would train
        cached_vae(changed, labels, settings, 10, tmp_path)
    assert vae_module.vae_cache_key(changed, labels, settings) != vae_module.vae_cache_key(images, labels, settings)
    assert vae_module.vae_cache_key(images, labels, VAESettings(latent_dim=4, width=4, epochs=2)) != vae_module.vae_cache_key(images, labels, settings)


def test_load_vae_refuses_what_is_not_a_vae_file_naming_it(tmp_path, digits):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    (tmp_path / "folder").mkdir()
    for name, message in (("missing.pt", "does not exist"), ("folder", "is a folder"), ("other.pt", "is not a VAE file"), ("garbage.pt", "cannot be read")):
        with pytest.raises(CheckpointError, match=message) as info:
            load_vae(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "--vae.ckpt" in str(info.value)
    vae, _ = fit_vae(*digits, VAESettings(latent_dim=4, width=4, epochs=1))
    save_vae(vae, tmp_path / "ok.pt", {"key": "k"})
    loaded, record = load_vae(tmp_path / "ok.pt")
    assert record == {"key": "k"} and torch.equal(loaded.sample(3, generator=torch.Generator().manual_seed(0)), vae.sample(3, generator=torch.Generator().manual_seed(0)))
