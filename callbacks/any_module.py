"""The compression callbacks on any LightningModule, not only a GANModule.

A GANModule trains with manual optimization and calls the GAN hooks (``gan_lightning/core/hooks.py``);
an ordinary LightningModule with automatic optimization (a classifier, say) calls none of them.
On such a module prune, lowrank and distill act on the networks the user names (attributes of
the module, e.g. ``Prune(networks={"model": 0.5})``) through Lightning's own hooks and public API:

- a network is traced on what it receives while the module runs on its ``example_input_array``
  (:func:`gan_lightning.compress.pruning.example_input`);
- masks are re-applied in ``on_train_batch_end``, after the optimizer step, and a structural
  change rebuilds the optimizers through the module's ``configure_optimizers``
  (:func:`gan_lightning.core.hooks.architecture_changed`);
- criteria that score weights by their effect on a loss use the module's own ``training_step``
  loss (:func:`importance_scores`);
- distillation adds its term to the loss ``training_step`` returns (``callbacks/distill.py``).

What only a GAN has is simply not engaged: latent cuts, the EMA, FID/SWD, the discriminator,
the adversarial weight. Such a module keeps no record of its edits (a GANModule saves
``structure`` and ``lowrank`` in its checkpoints), so resuming it mid-compression is not supported.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from pytorch_lightning import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Subset

from gan_lightning.compress.importance import Importance, NetworkLoss
from gan_lightning.compress.profiling import evaluating
from gan_lightning.core.module import GANModule
from gan_lightning.errors import ConfigError


def is_gan(module) -> bool:
    """Whether ``module`` calls the GAN hooks; any other module is compressed through Lightning's own."""
    return isinstance(module, GANModule)


def check_networks(module, names: Optional[Iterable[str]], flag: str, example: str) -> None:
    """``flag`` (``names``, None when unset) names the networks (nn.Module attributes) of a module
    that is not a GANModule, and is set there and only there; refused in one sentence otherwise."""
    if is_gan(module):
        if names is not None:
            raise ConfigError(f"{flag} names the networks of a LightningModule that is not a GANModule; leave it unset on a GAN")
        return
    if names is None:
        raise ConfigError(f"{type(module).__name__} is not a GANModule: name its network(s) with {flag}, e.g. {example}")
    for name in names:
        value = getattr(module, name, None)
        if not isinstance(value, nn.Module):
            what = "which it does not have" if value is None else f"which is a {type(value).__name__}, not a torch.nn.Module"
            owned = ", ".join(n for n, _ in module.named_children()) or "none"
            raise ConfigError(f"{flag} names {name!r}, {what}; the networks of {type(module).__name__}: {owned}")


def refuse_gan_only(module, settings: dict[str, bool], meaning: str = "") -> None:
    """Refuse the settings in use (``settings``: flag -> in use) that only a GAN has, in one sentence."""
    used = [flag for flag, on in settings.items() if on]
    if used:
        raise ConfigError(f"{' and '.join(used)} work(s) on a GANModule only{meaning}: on {type(module).__name__} leave it out")


@contextmanager
def unlogged(module: LightningModule) -> Iterator[None]:
    """``self.log`` and ``self.log_dict`` do nothing inside: a ``training_step`` called to score
    weights is not training, and what it logs would land in the run's metrics under the name of
    the hook that called it. Instance attributes shadow the methods, and are deleted after."""
    module.log = module.log_dict = lambda *args, **kwargs: None
    try:
        yield
    finally:
        del module.log, module.log_dict


def training_loss(module: LightningModule) -> NetworkLoss:
    """The loss automatic optimization minimises, on a batch: what ``training_step`` returns (a
    tensor, or a dict with ``loss``). It runs the whole module, so criteria that need per-sample
    gradients of a functional call of the network alone (fisher) cannot use it."""

    def loss(params, batch, _latents) -> torch.Tensor:
        with unlogged(module):
            out = module.training_step(batch, 0)
        return out["loss"] if isinstance(out, Mapping) else out

    return loss


def calibration_batches(trainer: Trainer, samples: int, batch_size: int, seed: int) -> list[Any]:
    """A seeded subset of the training set, batched as the training dataloader batches it (its
    ``collate_fn``) and moved to the device as Lightning moves batches: the same samples on every
    rank (the dataset behind a DistributedSampler is the whole training set)."""
    loader = trainer.train_dataloader
    if not isinstance(loader, DataLoader):
        raise ConfigError(
            "--prune.criterion gradient, taylor and obd score weights on training batches: they need one training DataLoader,"
            f" not a {type(loader).__name__}"
        )
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(loader.dataset), generator=gen)[:samples].tolist()
    subset = DataLoader(Subset(loader.dataset, index), batch_size=batch_size, collate_fn=loader.collate_fn)
    return [trainer.strategy.batch_to_device(batch) for batch in subset]


def importance_scores(
    module: LightningModule, network: str, importance: Importance, weights: Sequence[str], batches: Sequence[Any], seed: int
) -> dict[str, torch.Tensor]:
    """Scores of the named weights of ``module.<network>`` under the module's training loss, the
    module in eval mode (as a GAN is scored: no BatchNorm statistics move, no dropout)."""
    gen = torch.Generator().manual_seed(seed)
    with evaluating(module):
        return importance.scores(getattr(module, network), weights, training_loss(module), batches, [None] * len(batches), gen)


class LossTerms:
    """Adds named terms to the loss that ``module.training_step`` returns (a tensor, or a dict's
    ``loss``) and logs each as ``train/<name>``.

    Automatic optimization minimises what ``training_step`` returns, and no Lightning hook can
    change that loss (``on_before_backward`` sees it, read-only), so ``training_step`` is wrapped:
    an instance attribute shadows the method (Lightning, and its DDP wrapper, look the method up
    on the instance) until :meth:`remove` deletes it. The module's code is not touched, and the
    terms go through Lightning's own loss normalization, precision and backward."""

    def __init__(self, module: LightningModule, terms: Callable[[], dict[str, torch.Tensor]]) -> None:
        original = module.training_step

        @functools.wraps(original)  # keeps the signature Lightning inspects
        def training_step(*args, **kwargs):
            out = original(*args, **kwargs)
            extra = terms()
            if out is None or not extra:  # None: the module skips this batch
                return out
            for name, value in extra.items():
                module.log(f"train/{name}", value.detach())
            if isinstance(out, Mapping):
                return {**out, "loss": out["loss"] + sum(extra.values())}
            return out + sum(extra.values())

        self.module, self.wrapper = module, training_step
        module.training_step = training_step

    def remove(self) -> None:
        if vars(self.module).get("training_step") is self.wrapper:
            del self.module.training_step
