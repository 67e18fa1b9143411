"""The GAN hook protocol: how plug-in callbacks take part in the adversarial update.

Lightning has no hook "after the discriminator stepped", so :class:`~gan_lightning.core.module.GANModule`
calls the methods below on every callback in ``trainer.callbacks`` that defines them, in
trainer order. A callback may subclass :class:`GANCallback` (which documents the methods and
provides no-op defaults) or simply define the methods it needs.

Order inside one training batch::

    real = transform_real_batch(real)                     # chained through all callbacks
    repeat n_critic times:
        fake = transform_fake_batch(G(z))                 # no graph to G in the D step
        discriminator step on D(augment_discriminator_input(real)), D(augment_discriminator_input(fake))
        on_discriminator_outputs(mean D(real), mean D(fake))
        on_discriminator_step_end()
    fake = G(z)
    g_loss = prod(adversarial_weight()) * adversarial(D(augment_discriminator_input(fake)))
             + sum(generator_loss_terms(z, fake).values())
    generator step
    on_generator_step_end()
    EMA update (if on), from the generator as the hooks left it

And whenever a callback replaces layers of a network (structured pruning, low-rank
factorization) or the network itself (a distillation student), it calls
:func:`architecture_changed` (``GANModule.architecture_changed`` for short) with the edit the
compression function returned; the hook appends it to the module's record
(``GANModule.edits``, :mod:`gan_lightning.compress.edits`), runs ``on_architecture_changed`` on every callback (e.g. distillation re-attaches
its feature taps and resizes its adapters) and then rebuilds the optimizers (and the DDP
wrapper) over the new parameters. That one hook also runs for the networks of any other
LightningModule, whose training loop knows none of the GAN hooks above. Modules that train
with the generator but are not part of it (distillation adapters) live in
``GANModule.auxiliary``, which the generator's optimizer includes.

A callback that can make training-like samples (the VAE) answers ``synthetic_samples``; others
that need samples without touching the real data (pruning's ``calibration_source vae``) ask
for them through :func:`synthetic_samples`, so no callback imports another.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

import torch
from pytorch_lightning import Callback, Trainer
from torch import nn

from gan_lightning.compress.edits import Edit, EditRecord
from gan_lightning.core.lightning_private import refresh_training_state


@runtime_checkable
class AdversarialModule(Protocol):
    """What a GAN hook may use of the module that calls it. :class:`~gan_lightning.core.module.GANModule`
    is one; a module of the user's that keeps these attributes and calls the hooks is another,
    so callbacks are typed against this, not against the class."""

    generator: nn.Module
    discriminator: nn.Module
    generator_ema: Optional[nn.Module]
    auxiliary: nn.ModuleDict  # modules that train with the generator without being part of it
    edits: EditRecord  # every structural edit of the networks, in order
    hparams: Any
    device: torch.device

    @property
    def z_dim(self) -> int: ...

    @property
    def sampling_generator(self) -> nn.Module: ...

    def sample_z(self, n: int, seed: Optional[int] = None) -> torch.Tensor: ...

    def generate(self, n: int, seed: Optional[int] = None, chunk: int = 500) -> torch.Tensor: ...

HOOK_NAMES = (
    "transform_real_batch", "transform_fake_batch", "augment_discriminator_input", "on_discriminator_step_end",
    "on_discriminator_outputs", "adversarial_weight", "generator_loss_terms", "on_generator_step_end",
    "on_architecture_changed", "restore_auxiliary", "synthetic_samples",
)


class GANCallback(Callback):
    """Base class for callbacks that take part in the adversarial update."""

    def transform_real_batch(self, trainer: Trainer, module: AdversarialModule, real: torch.Tensor) -> torch.Tensor:
        """Return the real batch the discriminator sees (e.g. mixed with synthetic samples)."""
        return real

    def transform_fake_batch(self, trainer: Trainer, module: AdversarialModule, fake: torch.Tensor) -> torch.Tensor:
        """Return the fakes the discriminator sees in its own step (made without a graph to the
        generator), e.g. with VAE samples appended as extra fakes. The G step's fakes are G's."""
        return fake

    def augment_discriminator_input(self, trainer: Trainer, module: AdversarialModule, samples: torch.Tensor) -> torch.Tensor:
        """Return what the discriminator is shown instead of ``samples``: called on every batch
        it judges, real and fake, in the D step and in the G step (DiffAugment); must be
        differentiable, since the generator's gradient flows back through it."""
        return samples

    def synthetic_samples(self, trainer: Trainer, module: AdversarialModule, n: int, seed: int) -> Optional[torch.Tensor]:
        """``n`` training-like samples on the module's device, the same for the same seed, or None
        when this callback makes none (the VAE makes some)."""
        return None

    def on_discriminator_step_end(self, trainer: Trainer, module: AdversarialModule) -> None:
        """Called after every discriminator optimizer step (e.g. weight clipping, mask re-application)."""

    def on_discriminator_outputs(self, trainer: Trainer, module: AdversarialModule, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        """Called after every discriminator step with its mean outputs on that step's real and fake
        batch (this rank's: a callback that decides on them reduces them across ranks first, so
        that every rank decides the same), e.g. the balance control's margin."""

    def adversarial_weight(self, trainer: Trainer, module: AdversarialModule) -> float:
        """Factor on the generator's adversarial loss; the factors of all callbacks multiply
        (e.g. 0 to train the generator from distillation terms alone)."""
        return 1.0

    def generator_loss_terms(
        self, trainer: Trainer, module: AdversarialModule, z: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Extra scalar terms added to the generator loss (e.g. distillation); each is logged
        as ``train/g_term/<name>``. ``fake`` is ``module.generator(z)`` with its graph attached."""
        return {}

    def on_generator_step_end(self, trainer: Trainer, module: AdversarialModule) -> None:
        """Called after every generator optimizer step."""

    def on_architecture_changed(self, trainer: Trainer, module: AdversarialModule, network: str, previous: Optional[nn.Module]) -> None:
        """Called after a compression event replaced, resized or masked layers of ``network``
        (``generator`` or ``discriminator``; on any other LightningModule, the attribute named),
        before the optimizers are rebuilt: re-attach hooks, resize modules in ``module.auxiliary``.
        ``previous`` is a copy of the sampling generator (the EMA copy when there is one) from
        before the change, when the generator changed; of the network itself on any other
        LightningModule; else None."""

    def restore_auxiliary(self, trainer: Trainer, module: AdversarialModule, checkpoint: dict[str, Any]) -> None:
        """Called when a run resumes from ``checkpoint``, before its weights are loaded into the
        module and before the optimizers are built: rebuild the modules this callback keeps in
        ``module.auxiliary`` (its own state is in ``checkpoint["callbacks"]``)."""


def callbacks_with_hook(trainer: Trainer, name: str) -> list[Any]:
    """The callbacks that implement hook ``name``, in trainer order."""
    return [cb for cb in trainer.callbacks if callable(getattr(cb, name, None))]


def synthetic_sources(trainer: Trainer) -> list[Any]:
    """The callbacks that make synthetic samples: those that override ``GANCallback.synthetic_samples``."""
    return [cb for cb in callbacks_with_hook(trainer, "synthetic_samples") if getattr(type(cb), "synthetic_samples", None) is not GANCallback.synthetic_samples]


def synthetic_samples(trainer: Trainer, module, n: int, seed: int) -> Optional[torch.Tensor]:
    """``n`` samples from the first callback that makes them (see ``GANCallback.synthetic_samples``), or None."""
    for cb in callbacks_with_hook(trainer, "synthetic_samples"):
        samples = cb.synthetic_samples(trainer, module, n, seed)
        if samples is not None:
            return samples
    return None


def architecture_changed(
    trainer: Trainer, module, network: str, previous: Optional[nn.Module] = None, rebuild_optimizers: bool = True, edit: Optional[Edit] = None,
) -> None:
    """Record ``edit`` (the structural edit a compression function returned, None when only
    weights were masked) in ``module.edits`` where the module keeps that record (a GANModule),
    tell every callback that ``module.<network>`` changed (``on_architecture_changed``, which
    finds the edit already recorded), then rebuild the optimizers over the new parameters (and,
    under DDP, the wrapper). ``previous``: a copy of the network from before the change (for a
    GAN's generator, of its sampling generator), when some callback may want it as a teacher.
    ``rebuild_optimizers`` False: only weights were masked, shapes are unchanged, and the
    optimizers keep their moments."""
    record = getattr(module, "edits", None)
    if edit is not None and isinstance(record, EditRecord):
        record.append(network, edit)
    for cb in callbacks_with_hook(trainer, "on_architecture_changed"):
        cb.on_architecture_changed(trainer, module, network, previous)
    if rebuild_optimizers:
        refresh_training_state(trainer)
