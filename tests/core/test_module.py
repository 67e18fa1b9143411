"""GANModule: the manual-optimization update, EMA, sampling, NaN handling, a real short fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from callbacks.interrupt import InterruptCheckpoint
from gan_lightning.errors import ConfigError, NonFiniteLossError
from gan_lightning.quality.swd import sliced_wasserstein
from tests.helpers import make_trainer, tiny_digits, tiny_module


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def _changed(before, net) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


@pytest.mark.parametrize("n_critic", [1, 3])
def test_each_batch_steps_discriminator_n_critic_times_then_generator(tmp_path, seeded, n_critic):
    module = tiny_module(n_critic=n_critic)
    g0, d0 = _params(module.generator), _params(module.discriminator)
    trainer = make_trainer(tmp_path, max_steps=-1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module, tiny_digits())
    assert trainer.global_step == 2 * (n_critic + 1)  # global_step counts optimizer steps
    assert _changed(g0, module.generator) and _changed(d0, module.discriminator)
    # toggle_optimizer must not leave either network frozen
    assert all(p.requires_grad for p in module.parameters() if p is not None and not _is_ema(module, p))


def _is_ema(module, p) -> bool:
    return module.generator_ema is not None and any(p is q for q in module.generator_ema.parameters())


def test_ema_follows_the_generator_by_the_decay(tmp_path, seeded):
    module = tiny_module(ema_decay=0.9)
    start = _params(module.generator)
    trainer = make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(module, tiny_digits())
    for s, p, e in zip(start, module.generator.parameters(), module.generator_ema.parameters()):
        torch.testing.assert_close(e, 0.9 * s + 0.1 * p.detach())
    assert not any(p.requires_grad for p in module.generator_ema.parameters())
    assert module.sampling_generator is module.generator_ema


@pytest.mark.parametrize(
    "kwargs,flag",
    [({"n_critic": 0}, "--model.n_critic"), ({"ema_decay": 1.0}, "--model.ema_decay"), ({"lr_g": 0.0}, "--model.lr_g"), ({"gp_weight": -1.0}, "--model.gp_weight")],
)
def test_bad_hyper_parameters_name_their_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag.replace(".", r"\.")):
        tiny_module(**kwargs)


def test_same_seed_gives_same_samples_and_different_seeds_differ(seeded):
    module = tiny_module()
    a, b, c = module.generate(4, seed=7), module.generate(4, seed=7), module.generate(4, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert module.generator.training  # generate() restores the mode it found


def test_generator_that_does_not_fit_the_data_is_refused_before_training(tmp_path):
    module = tiny_module()  # makes 8x8 images
    trainer = make_trainer(tmp_path)
    with pytest.raises(ConfigError, match=r"\(1, 8, 8\).*\(1, 16, 16\)"):
        trainer.fit(module, tiny_digits().__class__(image_size=16))


class _NaNAfter(pl.Callback):
    """Poisons the real batch from batch ``at`` on, as a diverged run would."""

    def __init__(self, at: int) -> None:
        self.at = at

    def transform_real_batch(self, trainer, module, real):
        return real * float("nan") if trainer.fit_loop.batch_idx >= self.at else real


def test_nan_loss_stops_with_one_sentence_and_keeps_the_last_finite_weights(tmp_path, seeded):
    module = tiny_module()
    saver = InterruptCheckpoint()
    trainer = make_trainer(tmp_path, limit_val_batches=0, callbacks=[_NaNAfter(at=2), saver])
    with pytest.raises(NonFiniteLossError, match=r"train/d_loss became nan at epoch 0, batch 2.*--model\.lr_d") as info:
        trainer.fit(module, tiny_digits())
    assert "\n" not in str(info.value)
    assert trainer.global_step == 4  # two full batches, nothing stepped on the NaN one
    assert all(torch.isfinite(p).all() for p in module.parameters())
    saved = torch.load(saver.ckpt_path, map_location="cpu", weights_only=True)
    assert str(saver.ckpt_path) in str(info.value)
    for k, v in module.state_dict().items():
        torch.testing.assert_close(saved["state_dict"][k], v)


@pytest.mark.slow
def test_a_short_fit_learns_the_digits(tmp_path, seeded):
    """The real-fit check: samples move much closer to held-out digits than the untrained generator's."""
    data = tiny_digits(batch_size=64)
    data.setup("fit")
    real = torch.stack([data.val_set[i][0] for i in range(len(data.val_set))])
    module = tiny_module(lr_g=2e-3, lr_d=2e-3)
    before = sliced_wasserstein(real, module.generate(len(real), seed=1)).item()
    trainer = make_trainer(tmp_path, max_epochs=8, check_val_every_n_epoch=8)
    trainer.fit(module, data)
    after = sliced_wasserstein(real, module.generate(len(real), seed=1)).item()
    assert after < 0.5 * before, (before, after)
    assert trainer.callback_metrics["val/swd"].item() < before


@pytest.mark.slow
def test_a_checkpoint_saved_from_a_loaded_model_loads_again(tmp_path):
    """Fine-tuning in Python from a train.py checkpoint, then saving: the new file must still
    know how to build the networks."""
    from gan_lightning.commands.train import GANLightningCLI
    from gan_lightning.core.module import GANModule
    from tests.helpers import REPO

    GANLightningCLI(args=["fit", "--config", str(REPO / "tests" / "tiny.yaml"), "--trainer.logger", "CSVLogger",
                          "--trainer.logger.save_dir", str(tmp_path), "--trainer.default_root_dir", str(tmp_path)])
    loaded = GANModule.load_from_checkpoint(next(tmp_path.rglob("last.ckpt")), map_location="cpu")
    trainer = make_trainer(tmp_path / "again", limit_train_batches=2, limit_val_batches=1)
    trainer.fit(loaded, tiny_digits())
    trainer.save_checkpoint(tmp_path / "again.ckpt")
    again = GANModule.load_from_checkpoint(tmp_path / "again.ckpt", map_location="cpu")
    assert torch.equal(again.generate(4, seed=1), loaded.cpu().generate(4, seed=1))
