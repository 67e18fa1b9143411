"""The GAN hook protocol, exercised by a toy callback."""

from __future__ import annotations

import pytest
import torch

from gan_lightning.core.hooks import AdversarialModule, GANCallback
from tests.helpers import make_trainer, tiny_digits, tiny_module


class Recorder(GANCallback):
    """Records hook order, what the discriminator was shown, and the parameters each hook saw."""

    def __init__(self, term_weight: float = 0.0, real_value: float | None = None) -> None:
        self.events: list[str] = []
        self.term_weight = term_weight
        self.real_value = real_value
        self.d_params_at_hook: list[torch.Tensor] = []

    def transform_real_batch(self, trainer, module, real):
        self.events.append("transform")
        return torch.full_like(real, self.real_value) if self.real_value is not None else real

    def on_discriminator_step_end(self, trainer, module):
        self.events.append("d_step")
        self.d_params_at_hook.append(next(module.discriminator.parameters()).detach().clone())

    def generator_loss_terms(self, trainer, module, z, fake):
        self.events.append("g_terms")
        assert fake.requires_grad, "the fake handed to generator_loss_terms must carry G's graph"
        return {"toy": self.term_weight * fake.mean()}

    def on_generator_step_end(self, trainer, module):
        self.events.append("g_step")


class NotAGANCallback:
    """Has none of the hooks: must be ignored, not crash the step."""


def _fit(tmp_path, *callbacks, batches=2, **module_kwargs):
    module = tiny_module(**module_kwargs)
    trainer = make_trainer(tmp_path, limit_train_batches=batches, limit_val_batches=0, callbacks=list(callbacks), log_every_n_steps=1)
    trainer.fit(module, tiny_digits())
    return module, trainer


def test_hooks_run_in_protocol_order_each_batch(tmp_path, seeded):
    rec = Recorder()
    _fit(tmp_path, rec, n_critic=2)
    assert rec.events == ["transform", "d_step", "d_step", "g_terms", "g_step"] * 2


def test_on_discriminator_step_end_sees_the_stepped_weights(tmp_path, seeded):
    rec = Recorder()
    module = tiny_module(n_critic=2)
    start = next(module.discriminator.parameters()).detach().clone()
    trainer = make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, callbacks=[rec])
    trainer.fit(module, tiny_digits())
    first, second = rec.d_params_at_hook
    assert not torch.equal(first, start) and not torch.equal(second, first)


def test_transformed_real_batch_is_what_the_discriminator_sees(tmp_path, seeded):
    seen = []
    module = tiny_module()
    # grad mode tells the training step's calls from the no-grad shape probe at setup
    module.discriminator.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].detach().clone()) if torch.is_grad_enabled() else None
    )
    trainer = make_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0, callbacks=[Recorder(real_value=0.25)])
    trainer.fit(module, tiny_digits())
    # D step sees real then fake; the real one is the transformed batch
    assert torch.all(seen[0] == 0.25)
    assert not torch.all(seen[1] == 0.25)


def test_generator_loss_terms_are_added_logged_and_steer_the_generator(tmp_path):
    torch.manual_seed(0)
    plain, _ = _fit(tmp_path / "a", Recorder(term_weight=0.0), batches=3, lr_g=1e-2)
    torch.manual_seed(0)
    steered, trainer = _fit(tmp_path / "b", Recorder(term_weight=50.0), batches=3, lr_g=1e-2)
    logged = trainer.callback_metrics
    assert logged["train/g_loss"] == pytest.approx((logged["train/g_adv"] + logged["train/g_term/toy"]).item(), rel=1e-5)
    # a large penalty on the mean pixel pushes samples darker than the same run without it
    assert steered.generate(64, seed=3).mean() < plain.generate(64, seed=3).mean() - 0.05


def test_callbacks_without_hooks_are_left_alone(tmp_path, seeded):
    import pytorch_lightning as pl

    class Plain(pl.Callback, NotAGANCallback):
        pass

    rec = Recorder()
    _fit(tmp_path, Plain(), rec, batches=1)
    assert rec.events == ["transform", "d_step", "g_terms", "g_step"]


def test_the_gan_module_is_what_the_hooks_are_typed_against():
    """Callbacks are typed against AdversarialModule, not GANModule: the module must keep
    every attribute the protocol promises them, and a module lacking one is not one."""
    module = tiny_module(ema_decay=0.9)
    assert isinstance(module, AdversarialModule)
    assert module.sample_z(3).shape == (3, module.z_dim)
    del module.generator_ema
    assert not isinstance(module, AdversarialModule)
