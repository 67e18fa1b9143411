"""What is being compressed: a GANModule, or any other LightningModule.

The compression callbacks decide *when* and *how much*; what differs between the two kinds of
module lives here, behind one small interface, :class:`Target`, with two implementations
(:func:`target_of` is the one place that tells them apart):

- the networks an event reports and the options that only a GAN has;
- an example input of a network (for tracing and counting);
- the loss that importance criteria score weights with, and the calibration batches;
- when masks are re-applied, how many optimizer steps a batch makes, what a compressed
  network's BatchNorm statistics are re-estimated on;
- what the network was before a change (a distillation teacher) and how it can be rebuilt.

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
  loss (:func:`training_loss`);
- distillation adds its term to the loss ``training_step`` returns (:class:`LossTerms`).

What only a GAN has is simply not engaged: latent cuts, the EMA, FID/SWD, the discriminator,
the adversarial weight. Such a module keeps no record of its edits, so resuming it
mid-compression is not supported.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from pytorch_lightning import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Subset
from typing_extensions import override

from gan_lightning.compress.importance import Importance, NetworkLoss, weight_importance
from gan_lightning.compress.profiling import evaluating
from gan_lightning.compress.pruning import GAN_NETWORKS, example_input, networks_of, recalibrate_batchnorm
from gan_lightning.specs import spec_from_hparams
from gan_lightning.core.hooks import synthetic_samples
from gan_lightning.core.module import GANModule
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.errors import ConfigError


class Target:
    """What a compression callback acts on (see the module docs); build one with :func:`target_of`."""

    #: whether a discriminator trains against the module's generator: only then can the
    #: adversarial balance, mode coverage and sample quality (FID/SWD) be watched
    adversarial: bool = False
    #: whether the module calls the GAN hooks after each of its optimizer steps and for its loss
    #: terms; otherwise callbacks act through Lightning's own hooks (masks come back in
    #: ``on_train_batch_end``, after automatic optimization's step; loss terms join the loss
    #: ``training_step`` returns, see :class:`LossTerms`)
    gan_hooks: bool = False

    def __init__(self, module: LightningModule) -> None:
        self.module = module

    def reported(self, scoped: list[str]) -> list[str]:
        """The networks every event report covers, the first one's latency measured."""
        raise NotImplementedError

    def check_networks(self, names: Optional[Iterable[str]], flag: str, example: str) -> None:
        """``flag`` (``names``, None when unset) names the networks (nn.Module attributes) of a
        module that is not a GANModule, and is set there and only there; refused in one sentence otherwise."""
        raise NotImplementedError

    def refuse_gan_only(self, settings: dict[str, bool], meaning: str = "") -> None:
        """Refuse the settings in use (``settings``: flag -> in use) that only a GAN has, in one sentence."""

    def example_input(self, network: str) -> torch.Tensor:
        return example_input(self.module, network)

    def previous(self, network: str) -> Optional[nn.Module]:
        """What ``on_architecture_changed`` hands over as ``previous`` (a distillation teacher)."""
        raise NotImplementedError

    def scores(self, network: str, importance: Importance, weights: Sequence[str], batches: Sequence[Any], seed: int) -> dict[str, torch.Tensor]:
        """Scores of the named weights of ``module.<network>`` under the module's training loss."""
        raise NotImplementedError

    def calibration_batches(self, trainer: Trainer, samples: int, batch_size: int, seed: int, source: str = "real") -> list[Any]:
        """The batches importance criteria score weights on: the same samples on every rank."""
        raise NotImplementedError

    def steps_per_batch(self, trainer: Trainer) -> float:
        """Optimizer steps a training batch adds to ``global_step``."""
        raise NotImplementedError

    def recalibrate(self, seed: int) -> None:
        """Re-estimate BatchNorm statistics after a cut, where the module can make inputs for it."""

    def student(self, network: Optional[str]) -> str:
        """The network distillation trains (``network``: ``--distill.network``, unset on a GAN)."""
        raise NotImplementedError

    def teacher_spec(self, previous: nn.Module) -> Optional[dict[str, Any]]:
        """The class path and init args a teacher ``previous`` can be rebuilt from, or None."""
        return None  # a network this project did not build has no class path to rebuild it from


class GANTarget(Target):
    adversarial = True
    gan_hooks = True

    @override
    def reported(self, scoped: list[str]) -> list[str]:
        return list(GAN_NETWORKS)  # G and D whatever was compressed: the table's g_*/d_* columns

    @override
    def check_networks(self, names: Optional[Iterable[str]], flag: str, example: str) -> None:
        if names is not None:
            raise ConfigError(f"{flag} names the networks of a LightningModule that is not a GANModule; leave it unset on a GAN")

    @override
    def previous(self, network: str) -> Optional[nn.Module]:
        # the sampling generator (the EMA copy when there is one); nothing for the discriminator
        return copy.deepcopy(self.module.sampling_generator) if network == "generator" else None

    @override
    def scores(self, network: str, importance: Importance, weights: Sequence[str], batches: Sequence[Any], seed: int) -> dict[str, torch.Tensor]:
        return weight_importance(self.module, network, importance, weights, batches, seed=seed)

    @override
    def calibration_batches(self, trainer: Trainer, samples: int, batch_size: int, seed: int, source: str = "real") -> list[Any]:
        if source == "vae":
            return list(synthetic_samples(trainer, self.module, samples, seed=seed).split(batch_size))
        data = trainer.datamodule
        index = torch.randperm(len(data.train_set), generator=torch.Generator().manual_seed(seed))[:samples].tolist()
        real, _ = stack_samples(Subset(data.train_set, index))
        return [b.to(self.module.device) for b in real.split(batch_size)]

    @override
    def steps_per_batch(self, trainer: Trainer) -> float:
        return self.module.hparams.n_critic + 1

    @override
    def recalibrate(self, seed: int) -> None:
        # only a generator has latents to re-estimate its statistics on
        for net in networks_of(self.module, "generator"):
            recalibrate_batchnorm(net, self.module.z_dim, self.module.device, seed=seed)

    @override
    def student(self, network: Optional[str]) -> str:
        return "generator"

    @override
    def teacher_spec(self, previous: nn.Module) -> Optional[dict[str, Any]]:
        if not isinstance(getattr(previous, "z_dim", None), int):  # a generator sized by --model.z_dim
            previous.z_dim = self.module.hparams.get("z_dim")
        return spec_from_hparams(self.module.hparams)


class ModuleTarget(Target):
    @override
    def reported(self, scoped: list[str]) -> list[str]:
        return scoped

    @override
    def check_networks(self, names: Optional[Iterable[str]], flag: str, example: str) -> None:
        module = self.module
        if names is None:
            raise ConfigError(f"{type(module).__name__} is not a GANModule: name its network(s) with {flag}, e.g. {example}")
        for name in names:
            value = getattr(module, name, None)
            if not isinstance(value, nn.Module):
                what = "which it does not have" if value is None else f"which is a {type(value).__name__}, not a torch.nn.Module"
                owned = ", ".join(n for n, _ in module.named_children()) or "none"
                raise ConfigError(f"{flag} names {name!r}, {what}; the networks of {type(module).__name__}: {owned}")

    @override
    def refuse_gan_only(self, settings: dict[str, bool], meaning: str = "") -> None:
        used = [flag for flag, on in settings.items() if on]
        if used:
            raise ConfigError(f"{' and '.join(used)} work(s) on a GANModule only{meaning}: on {type(self.module).__name__} leave it out")

    @override
    def previous(self, network: str) -> Optional[nn.Module]:
        return copy.deepcopy(getattr(self.module, network))

    @override
    def scores(self, network: str, importance: Importance, weights: Sequence[str], batches: Sequence[Any], seed: int) -> dict[str, torch.Tensor]:
        # in eval mode, as a GAN is scored: no BatchNorm statistics move, no dropout
        gen = torch.Generator().manual_seed(seed)
        with evaluating(self.module):
            return importance.scores(getattr(self.module, network), weights, training_loss(self.module), batches, [None] * len(batches), gen)

    @override
    def calibration_batches(self, trainer: Trainer, samples: int, batch_size: int, seed: int, source: str = "real") -> list[Any]:
        """A seeded subset of the training set, batched as the training dataloader batches it (its
        ``collate_fn``) and moved to the device as Lightning moves batches (the dataset behind a
        DistributedSampler is the whole training set)."""
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader):
            raise ConfigError(
                "--prune.criterion gradient, taylor and obd score weights on training batches: they need one training DataLoader,"
                f" not a {type(loader).__name__}"
            )
        index = torch.randperm(len(loader.dataset), generator=torch.Generator().manual_seed(seed))[:samples].tolist()
        subset = DataLoader(Subset(loader.dataset, index), batch_size=batch_size, collate_fn=loader.collate_fn)
        return [trainer.strategy.batch_to_device(batch) for batch in subset]

    @override
    def steps_per_batch(self, trainer: Trainer) -> float:
        return 1 / trainer.accumulate_grad_batches

    @override
    def student(self, network: Optional[str]) -> str:
        return network


def target_of(module: LightningModule) -> Target:
    """The one place that tells a GANModule from any other LightningModule."""
    return GANTarget(module) if isinstance(module, GANModule) else ModuleTarget(module)


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
