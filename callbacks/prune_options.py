"""The options of ``--callbacks prune``, checked once when the callback is built.

:class:`callbacks.prune.Prune` documents each option (its docstring is the ``--help`` text);
here they are held as one frozen value and refused in one sentence each when they cannot work
whatever the model. What depends on the model and the trainer is checked in
``Prune.check_setup``, before training.

Schedules (epochs count from 0; steps are training batches, not optimizer steps):

- ``oneshot``: everything at ``start_epoch``.
- ``iterative``: ``rounds`` events ``every_n_epochs`` apart, each removing the same share of
  what is left; with ``rewind_epoch`` the surviving weights are reset to their values at the
  start of that epoch after each round (the lottery-ticket procedure of GAN-LTH).
- ``gradual``: Zhu & Gupta's polynomial ramp s_t = s_f (1 - (1 - (t - t0)/(t1 - t0))^3), an
  event every ``frequency`` batches from ``start_step`` to ``end_step``.
- ``dynamic``: ``rounds`` equal steps ``every_n_epochs`` apart while the quality metric, measured
  after each validation, stays within ``tolerance`` of its value before pruning; the first step
  that breaks it is rolled back and pruning stops. A structured step is tried with its units
  zeroed and cut out physically once accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from pytorch_lightning import Trainer

from callbacks.compression import QualityMetric
from callbacks.target import target_of
from gan_lightning.compress.importance import Criterion, Importance
from gan_lightning.compress.pruning import example_input
from gan_lightning.compress.schedules import Schedule
from gan_lightning.compress.selection import Ranking
from gan_lightning.compress.surgery import WEIGHTED, trace
from gan_lightning.core.hooks import synthetic_sources
from gan_lightning.errors import ConfigError

ScheduleName = Literal["oneshot", "iterative", "gradual", "dynamic"]
RetrainMode = Literal["connectivity", "weight", "network"]
COUNTS = ("round_to", "every_n_epochs", "rounds", "frequency", "calibration_samples", "calibration_batch_size", "latency_batch")


@dataclass(frozen=True)
class PruneOptions:
    generator_amount: float = 0.5
    discriminator_amount: float = 0.0
    latent_amount: float = 0.0
    networks: Optional[dict[str, float]] = None
    granularity: Literal["structured", "unstructured"] = "structured"
    criterion: Criterion = "auto"
    ranking: Ranking = "layerwise"
    round_to: int = 1
    skip_layers: Optional[list[str]] = None
    schedule: ScheduleName = "oneshot"
    start_epoch: Optional[int] = None
    every_n_epochs: int = 1
    rounds: int = 3
    rewind_epoch: Optional[int] = None
    start_step: int = 0
    end_step: Optional[int] = None
    frequency: int = 10
    tolerance: float = 0.1
    retrain: RetrainMode = "connectivity"
    calibration_source: Literal["real", "vae"] = "real"
    calibration_samples: int = 128
    calibration_batch_size: int = 64
    metric: QualityMetric = "auto"
    latency_batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = {"generator_amount": self.generator_amount, "discriminator_amount": self.discriminator_amount, "latent_amount": self.latent_amount}
        fractions.update({f"networks.{net}": value for net, value in (self.networks or {}).items()})
        for flag, value in fractions.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--prune.{flag} must be in [0, 1) (a fraction removed), got {value}")
        if self.networks is not None and not any(self.networks.values()):
            raise ConfigError(f"--prune.networks {self.networks} removes nothing: give each network a fraction in (0, 1)")
        if self.networks is None and self.generator_amount == self.discriminator_amount == self.latent_amount == 0.0:
            raise ConfigError("--prune.generator_amount, --prune.discriminator_amount and --prune.latent_amount are all 0: nothing to prune")
        for flag in COUNTS:
            if getattr(self, flag) < 1:
                raise ConfigError(f"--prune.{flag} must be an integer >= 1, got {getattr(self, flag)}")
        if self.tolerance < 0:
            raise ConfigError(f"--prune.tolerance must be >= 0, got {self.tolerance}")
        if self.start_epoch is not None and self.start_epoch < 0:  # a negative epoch never comes: nothing would be pruned
            raise ConfigError(f"--prune.start_epoch must be an epoch >= 0, got {self.start_epoch}")
        if self.rewind_epoch is not None and (self.schedule != "iterative" or self.granularity != "unstructured"):
            raise ConfigError("--prune.rewind_epoch needs --prune.schedule iterative and --prune.granularity unstructured (rewound weights must keep their shapes)")
        if self.schedule == "dynamic" and self.metric == "none":
            raise ConfigError("--prune.schedule dynamic is driven by the quality metric: set --prune.metric auto, fid or swd")
        if self.criterion == "group" and self.granularity != "structured":
            raise ConfigError("--prune.criterion group scores channel groups: it needs --prune.granularity structured (use l1 or l2 for single weights)")
        if self.calibration_source not in ("real", "vae"):
            raise ConfigError(f"--prune.calibration_source must be real or vae, got {self.calibration_source!r}")

    @property
    def amounts(self) -> dict[str, float]:
        """Fraction removed by the end of the schedule, per network."""
        if self.networks is not None:
            return dict(self.networks)
        return {"generator": self.generator_amount, "discriminator": self.discriminator_amount}

    @property
    def scoped(self) -> list[str]:
        """The networks this pruning changes."""
        return [n for n, amount in self.amounts.items() if amount > 0 or (n == "generator" and self.latent_amount > 0)]

    @property
    def keeps_masks(self) -> bool:
        """Whether masks, named by layer, live on after the events."""
        return self.granularity == "unstructured" and self.retrain != "weight"


def check_model(options: PruneOptions, trainer: Trainer, module, datamodule, importance: Importance) -> None:
    """Refuse, before training, options that cannot work with this model."""
    target = target_of(module)
    target.check_networks(options.networks, "--prune.networks", 'Prune(networks={"model": 0.5})')
    target.refuse_gan_only({
        "--prune.latent_amount": options.latent_amount > 0,  # a generator's latent inputs
        "--prune.schedule dynamic": options.schedule == "dynamic",  # driven by FID/SWD
        "--prune.criterion fisher": options.criterion == "fisher",  # per-sample gradients of the network alone
        "--prune.calibration_source vae": options.calibration_source == "vae",
    })
    names = {f"{net}.{n}" for net in target.reported(options.scoped) for n, m in getattr(module, net).named_modules() if isinstance(m, WEIGHTED)}
    unknown = [n for n in options.skip_layers or () if n not in names]
    if unknown:
        raise ConfigError(f"--prune.skip_layers names unknown layer(s) {', '.join(unknown)}; prunable layers: {', '.join(sorted(names))}")
    if options.granularity == "structured" or options.latent_amount > 0:
        for net in options.scoped:
            trace(getattr(module, net), example_input(module, net))  # refuses unsupported layers
    if options.calibration_source == "vae":
        if not importance.needs_data:
            raise ConfigError(
                f"--prune.calibration_source vae changes nothing for --prune.criterion {options.criterion}, which scores weights"
                " without samples: use a criterion that needs them (gradient, taylor, obd, fisher) or leave the source real"
            )
        if not synthetic_sources(trainer):
            raise ConfigError("--prune.calibration_source vae draws calibration samples from the VAE: add it with --callbacks vae")
    elif importance.needs_data and target.adversarial and not hasattr(datamodule, "train_set"):
        raise ConfigError(f"--prune.criterion {options.criterion} scores weights on real samples: it needs a gan-lightning datamodule (--data)")


def check_schedule(options: PruneOptions, plan: Schedule, trainer: Trainer, module) -> None:
    """Refuse, before training, a schedule whose epochs training does not reach."""
    if plan.unit != "epoch":
        return
    max_epochs = trainer.max_epochs
    events = plan.events(max_epochs)
    if max_epochs is not None and max_epochs >= 0 and events[-1] >= max_epochs:
        raise ConfigError(
            f"--prune schedule {options.schedule} prunes at epoch {events[-1]} but training ends after epoch {max_epochs - 1}"
            " (--trainer.max_epochs): lower --prune.start_epoch/--prune.rounds/--prune.every_n_epochs or train longer"
        )
    if options.rewind_epoch is not None and not 0 <= options.rewind_epoch < events[0]:
        raise ConfigError(f"--prune.rewind_epoch must be >= 0 and before the first round (epoch {events[0]}), got {options.rewind_epoch}")


def check_end_step(plan: Schedule, trainer: Trainer, module) -> None:
    """Refuse a gradual ramp that ends after training does, once the batches per epoch are known."""
    total = trainer.num_training_batches * trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
    if trainer.max_steps and trainer.max_steps > 0:  # a GAN steps n_critic + 1 optimizers a batch
        total = min(total, int(trainer.max_steps // target_of(module).steps_per_batch(trainer)))
    if plan.unit == "batch" and plan.events()[-1] > total:
        raise ConfigError(f"--prune.end_step {plan.end_step} is after training ends ({total} batches): lower it or train longer")
