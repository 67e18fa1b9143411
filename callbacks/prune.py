"""prune: make the generator (and, if asked, the discriminator) smaller and faster; on any other
LightningModule, the networks named by ``networks`` (see ``callbacks/target.py``).

This callback decides *when* to prune and *how much*: its schedule and criterion are values
chosen once (``gan_lightning.compress.schedules``, ``gan_lightning.compress.importance``);
selection, surgery and the masks' math live in ``gan_lightning.compress``, the report in
``callbacks/compression.py``.

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

Retraining after each event: ``connectivity`` (only kept weights train; masks re-applied after
every optimizer step), ``weight`` (all weights train again; masks dropped) or ``network`` (the
pruned structure restarts from fresh initial weights).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal, Optional

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.utilities import rank_zero_info

from callbacks.target import target_of
from callbacks.compression import (
    Before,
    CompressionCallback,
    EventRow,
    QualityMetric,
    forget_best_checkpoints,
    measure_quality,
    quality_change,
    report_event,
    summary_key,
)
from callbacks.fidelity import measured_modes
from callbacks.registry import register
from gan_lightning.compress.importance import Criterion, make_importance
from gan_lightning.compress.profiling import output_layer
from gan_lightning.compress.pruning import (
    PruneDecision,
    cut_units,
    example_input,
    load_matching,
    networks_of,
    prunable_groups,
    reinitialize,
    zero_units,
)
from gan_lightning.compress.schedules import make_schedule
from gan_lightning.compress.selection import Ranking, units_to_keep, unstructured_masks
from gan_lightning.compress.surgery import WEIGHTED, out_dim, trace
from gan_lightning.core.hooks import architecture_changed, synthetic_sources
from gan_lightning.core.lightning_private import logging_step, refresh_training_state
from gan_lightning.errors import ConfigError

ScheduleName = Literal["oneshot", "iterative", "gradual", "dynamic"]


@register("prune")
class Prune(CompressionCallback):
    """Prunes the GAN (or the named networks of any LightningModule) on a schedule and logs what
    each event did (``compress/*``).

    Args:
        generator_amount: fraction of the generator removed by the end of the schedule, in
            [0, 1): of its weights (unstructured) or of each layer's channels/neurons (structured).
        discriminator_amount: the same for the discriminator; 0 leaves it dense.
        latent_amount: fraction of latent dimensions removed from z (the generator's first
            layer loses their columns; z is sampled smaller from then on), in [0, 1).
        networks: on a LightningModule that is not a GANModule (and only there), the networks to
            prune, as ``{attribute: fraction removed}``, e.g. ``{"model": 0.5}``; it replaces
            the three amounts above.
        granularity: ``structured`` (units physically removed: a faster network) or
            ``unstructured`` (single weights zeroed under a mask: smaller when stored sparse).
        criterion: ``l1``, ``l2`` (magnitude), ``gradient`` (|dL/dw|), ``taylor`` (|w dL/dw|),
            ``fisher`` (diagonal empirical Fisher) or ``obd`` (diagonal Hessian, Optimal Brain
            Damage); L is the network's adversarial loss, or the ``training_step`` loss of a
            module that is not a GANModule (where fisher is not available).
        ranking: ``layerwise`` (each layer loses the same fraction) or ``global`` (one ranking
            across layers; structured scores are divided by their layer's mean first).
        round_to: structured: each pruned layer keeps a multiple of this many units (the nearest
            one, never more than it has): CPU kernels work in blocks of 8/16 channels, so 14
            channels run about as slowly as 16 (see README, deployment latency). 1: no rounding.
        skip_layers: layers never pruned, as ``generator.<name>``/``discriminator.<name>``
            (``<attribute>.<name>`` with ``networks``); default: each network's output layer.
        schedule: ``oneshot``, ``iterative``, ``gradual`` or ``dynamic`` (see the module docs).
        start_epoch: epoch of the first event (oneshot/iterative/dynamic); default: half of
            ``--trainer.max_epochs``, so the second half fine-tunes.
        every_n_epochs: epochs between iterative/dynamic events.
        rounds: number of iterative rounds / dynamic steps.
        rewind_epoch: iterative only: rewind surviving weights to the start of this epoch
            (before ``start_epoch``) after every round; null disables rewinding.
        start_step: gradual: first batch of the ramp.
        end_step: gradual: last batch of the ramp (must be reached by training).
        frequency: gradual: batches between events.
        tolerance: dynamic: allowed relative worsening of the metric (0.1 = 10%).
        retrain: ``connectivity``, ``weight`` or ``network`` (see the module docs).
        calibration_source: where importance criteria that need data get their samples:
            ``real`` (a seeded subset of the training split) or ``vae`` (samples of the ``vae``
            callback's VAE, for when the real data cannot be used; needs ``--callbacks vae``).
        calibration_samples: samples used to score weights (gradient/taylor/fisher/obd).
        calibration_batch_size: samples per scoring batch.
        metric: quality measured before and after every event: ``auto`` (FID when the run
            measures FID, else SWD), ``fid``, ``swd`` or ``none``.
        latency_batch: batch size of the generator latency measurement.
        seed: seed of the calibration subset and latents.
    """

    option_group = "prune"
    # everything a resumed run needs to continue exactly
    STATE = {
        "next_event": int,
        "batches_seen": int,
        "masks": dict,  # "<network>.<weight>" -> keep mask
        "dense": dict,
        "original_units": dict,
        "original_z": lambda: None,
        "history": list,  # rows of compress/events
        "rewind_state": dict,
        "baseline": lambda: None,  # dynamic: the metric before any pruning
        "trial": lambda: None,  # dynamic: the step waiting for its verdict
        "stopped": bool,
    }

    def __init__(
        self,
        generator_amount: float = 0.5,
        discriminator_amount: float = 0.0,
        latent_amount: float = 0.0,
        networks: Optional[dict[str, float]] = None,
        granularity: Literal["structured", "unstructured"] = "structured",
        criterion: Criterion = "l1",
        ranking: Ranking = "layerwise",
        round_to: int = 1,
        skip_layers: Optional[list[str]] = None,
        schedule: ScheduleName = "oneshot",
        start_epoch: Optional[int] = None,
        every_n_epochs: int = 1,
        rounds: int = 3,
        rewind_epoch: Optional[int] = None,
        start_step: int = 0,
        end_step: Optional[int] = None,
        frequency: int = 10,
        tolerance: float = 0.1,
        retrain: Literal["connectivity", "weight", "network"] = "connectivity",
        calibration_source: Literal["real", "vae"] = "real",
        calibration_samples: int = 128,
        calibration_batch_size: int = 64,
        metric: QualityMetric = "auto",
        latency_batch: int = 64,
        seed: int = 0,
    ) -> None:
        fractions = {"generator_amount": generator_amount, "discriminator_amount": discriminator_amount, "latent_amount": latent_amount}
        fractions.update({f"networks.{net}": value for net, value in (networks or {}).items()})
        for flag, value in fractions.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--prune.{flag} must be in [0, 1) (a fraction removed), got {value}")
        if networks is not None and not any(networks.values()):
            raise ConfigError(f"--prune.networks {networks} removes nothing: give each network a fraction in (0, 1)")
        if networks is None and generator_amount == discriminator_amount == latent_amount == 0.0:
            raise ConfigError("--prune.generator_amount, --prune.discriminator_amount and --prune.latent_amount are all 0: nothing to prune")
        for flag, value in (("round_to", round_to), ("every_n_epochs", every_n_epochs), ("rounds", rounds), ("frequency", frequency), ("calibration_samples", calibration_samples), ("calibration_batch_size", calibration_batch_size), ("latency_batch", latency_batch)):
            if value < 1:
                raise ConfigError(f"--prune.{flag} must be an integer >= 1, got {value}")
        if tolerance < 0:
            raise ConfigError(f"--prune.tolerance must be >= 0, got {tolerance}")
        if rewind_epoch is not None and (schedule != "iterative" or granularity != "unstructured"):
            raise ConfigError("--prune.rewind_epoch needs --prune.schedule iterative and --prune.granularity unstructured (rewound weights must keep their shapes)")
        if schedule == "dynamic" and metric == "none":
            raise ConfigError("--prune.schedule dynamic is driven by the quality metric: set --prune.metric auto, fid or swd")
        self.networks = networks
        self.amounts = dict(networks) if networks is not None else {"generator": generator_amount, "discriminator": discriminator_amount}
        self.latent_amount = latent_amount
        self.granularity = granularity
        self.criterion = criterion
        self.ranking = ranking
        self.round_to = round_to
        self.skip_layers = skip_layers
        self.schedule = schedule
        # chosen once: from here on the schedule is only asked when its events fall and how much they remove
        self.plan = make_schedule(
            schedule, start_epoch=start_epoch, every_n_epochs=every_n_epochs, rounds=rounds,
            start_step=start_step, end_step=end_step, frequency=frequency,
        )
        self.importance = make_importance(criterion)
        self.rewind_epoch = rewind_epoch
        self.tolerance = tolerance
        self.retrain = retrain
        if calibration_source not in ("real", "vae"):
            raise ConfigError(f"--prune.calibration_source must be real or vae, got {calibration_source!r}")
        self.calibration_source = calibration_source
        self.calibration_samples = calibration_samples
        self.calibration_batch_size = calibration_batch_size
        self.metric = metric
        self.latency_batch = latency_batch
        self.seed = seed
        self.reset_state()

    # ------------------------------------------------------------------ checks
    @property
    def scoped(self) -> list[str]:
        return [n for n, amount in self.amounts.items() if amount > 0 or (n == "generator" and self.latent_amount > 0)]

    def check_setup(self, trainer: Trainer, module, datamodule) -> None:
        """Refuse, before training, settings that cannot work with this model and trainer."""
        target = target_of(module)
        target.check_networks(self.networks, "--prune.networks", 'Prune(networks={"model": 0.5})')
        target.refuse_gan_only({
            "--prune.latent_amount": self.latent_amount > 0,  # a generator's latent inputs
            "--prune.schedule dynamic": self.schedule == "dynamic",  # driven by FID/SWD
            "--prune.criterion fisher": self.criterion == "fisher",  # per-sample gradients of the network alone
            "--prune.calibration_source vae": self.calibration_source == "vae",
        })
        super().check_setup(trainer, module, datamodule)
        names = {f"{net}.{n}" for net in self.reported(module) for n, m in getattr(module, net).named_modules() if isinstance(m, WEIGHTED)}
        if self.skip_layers is not None:
            unknown = [n for n in self.skip_layers if n not in names]
            if unknown:
                raise ConfigError(f"--prune.skip_layers names unknown layer(s) {', '.join(unknown)}; prunable layers: {', '.join(sorted(names))}")
        if self.granularity == "structured" or self.latent_amount > 0:
            for net in self.scoped:
                trace(getattr(module, net), example_input(module, net))  # refuses unsupported layers
        if self.plan.unit == "epoch":
            max_epochs = trainer.max_epochs
            last = self.plan.events(max_epochs)[-1]
            if max_epochs is not None and max_epochs >= 0 and last >= max_epochs:
                raise ConfigError(
                    f"--prune schedule {self.schedule} prunes at epoch {last} but training ends after epoch {max_epochs - 1}"
                    " (--trainer.max_epochs): lower --prune.start_epoch/--prune.rounds/--prune.every_n_epochs or train longer"
                )
            if self.rewind_epoch is not None and not 0 <= self.rewind_epoch < self.plan.events(max_epochs)[0]:
                raise ConfigError(f"--prune.rewind_epoch must be >= 0 and before the first round (epoch {self.plan.events(max_epochs)[0]}), got {self.rewind_epoch}")
        if self.calibration_source == "vae":
            if not self.importance.needs_data:
                raise ConfigError(
                    f"--prune.calibration_source vae changes nothing for --prune.criterion {self.criterion}, which scores weights"
                    " without samples: use a criterion that needs them (gradient, taylor, obd, fisher) or leave the source real"
                )
            if not synthetic_sources(trainer):
                raise ConfigError("--prune.calibration_source vae draws calibration samples from the VAE: add it with --callbacks vae")
        elif self.importance.needs_data and target.adversarial and not hasattr(datamodule, "train_set"):
            raise ConfigError(f"--prune.criterion {self.criterion} scores weights on real samples: it needs a gan-lightning datamodule (--data)")

    def last_event_epoch(self, max_epochs: Optional[int]) -> Optional[int]:
        return self.plan.events(max_epochs)[-1] if self.plan.unit == "epoch" else None

    def keeps_layer_state(self) -> bool:
        return self.granularity == "unstructured" and self.retrain != "weight"  # masks, named by layer

    event_noun = "pruning event"
    conflict_hint = "(not --prune.schedule gradual) and no masks left after them (--prune.granularity structured or --prune.retrain weight)"

    # ------------------------------------------------------------------ Lightning hooks
    def on_dense_reference(self, module) -> None:
        self.original_z = getattr(module, "z_dim", None)
        if self.granularity != "structured":  # only cuts count units, and only they need a network that traces as a chain
            return
        for net in self.scoped:
            for group in prunable_groups(module, net, set()):
                self.original_units[f"{net}.{group.producer}"] = group.units

    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        if self.skip_layers is not None:
            self._skip = set(self.skip_layers)
        else:
            self._skip = {f"{net}.{output_layer(getattr(pl_module, net), example_input(pl_module, net))}" for net in self.reported(pl_module)}

    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        # the number of batches per epoch is only known once the training data is loaded
        total = trainer.num_training_batches * trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else math.inf
        if trainer.max_steps and trainer.max_steps > 0:  # a GAN steps n_critic + 1 optimizers a batch
            total = min(total, int(trainer.max_steps // target_of(pl_module).steps_per_batch(trainer)))
        if self.plan.unit == "batch" and self.plan.events()[-1] > total:
            raise ConfigError(f"--prune.end_step {self.plan.end_step} is after training ends ({total} batches): lower it or train longer")

    def on_train_epoch_start(self, trainer: Trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if self.rewind_epoch is not None and epoch == self.rewind_epoch and not self.rewind_state:
            self.rewind_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if self.plan.unit != "epoch" or self.stopped or self.trial is not None:
            return
        epochs = self.plan.events(trainer.max_epochs)
        if self.next_event < len(epochs) and epoch == epochs[self.next_event]:
            if self.plan.verified:
                self._try_step(trainer, pl_module)
            else:
                self._prune(trainer, pl_module)

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self.plan.unit != "batch":
            return
        steps = self.plan.events(trainer.max_epochs)
        due = [i for i in range(self.next_event, len(steps)) if steps[i] <= self.batches_seen]
        if due:  # after a skipped range (e.g. resumed later), only the newest target matters
            self.next_event = due[-1]
            self._prune(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches_seen += 1
        if not target_of(pl_module).gan_hooks:  # a GAN's masks return after each of its steps (below)
            self._reapply_all(pl_module)

    def on_discriminator_step_end(self, trainer: Trainer, module) -> None:
        self._apply_masks(module, "discriminator")

    def on_generator_step_end(self, trainer: Trainer, module) -> None:
        self._apply_masks(module, "generator")

    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        if self.trial is None or trainer.sanity_checking:
            return
        value = measure_quality(trainer, pl_module, self.metric_name, self.fidelity)
        limit = self.baseline * (1.0 + self.tolerance)
        # a step that costs classes is rolled back even when the metric tolerates it: FID can
        # stay near its limit while the generator drops a class or two
        epoch, modes = measured_modes(trainer)
        before = self.trial.get("before_modes")
        if value > limit:
            self._roll_back(trainer, pl_module, value, f"{self.metric_name} {value:.4g} > limit {limit:.4g}")
        elif before is not None and epoch == trainer.current_epoch and modes < before:
            self._roll_back(trainer, pl_module, value, f"val/modes fell from {before:g} to {modes:g}")
        else:
            self._accept_step(trainer, pl_module, value)

    # ------------------------------------------------------------------ events
    def _prune(self, trainer: Trainer, module) -> None:
        before = self.before_event(trainer, module)
        decision = self._decide(trainer, module, self.next_event)
        self._execute(trainer, module, decision)
        self._after_retrain_mode(trainer, module)
        self._recalibrate(module)
        self._report(trainer, module, before)
        self.next_event += 1
        if self.next_event == self._event_count(trainer):
            self._forget_dense_best(trainer)

    def _event_count(self, trainer: Trainer) -> int:
        return len(self.plan.events(trainer.max_epochs))

    def _recalibrate(self, module) -> None:
        target_of(module).recalibrate(self.seed)

    @staticmethod
    def _forget_dense_best(trainer: Trainer) -> None:
        """From the final event on, "best" means the best *compressed* model: the denser
        networks before it would otherwise keep the title. Their files stay on disk."""
        for path in forget_best_checkpoints(trainer):
            rank_zero_info(f"prune: the best checkpoint so far ({path}) predates the final pruning event; it is kept, and best-* now tracks the pruned model")

    def _report(self, trainer: Trainer, module, before, after_metric: Optional[float] = None) -> dict[str, float]:
        summary = report_event(
            trainer, module, f"{self.plan.name}-{self.next_event + 1}", before, self.dense, self.metric_name,
            self.fidelity, self.latency_batch, self.history, after_metric=after_metric,
        )
        first = self.reported(module)[0]
        rank_zero_info(
            f"prune: event {self.next_event + 1} at epoch {trainer.current_epoch}: {first} sparsity"
            f" {summary['compress/sparsity']:.1%}, {summary[summary_key(first, 'macs')]:,.0f} MACs/sample,"
            f" latency x{summary['compress/speedup']:.2f}{quality_change(summary, self.metric_name)}"
        )
        return summary

    def _decide(self, trainer: Trainer, module, event: int) -> PruneDecision:
        """Scores -> what to remove, identical on every rank (scores averaged, then rank 0's
        decision broadcast, so even ties cannot split the ranks)."""
        batches = self._calibration_batches(trainer, module, event) if self.importance.needs_data else []
        decision = PruneDecision()
        for net in self.scoped:
            target = self.plan.target(event, self.amounts[net])
            if self.granularity == "unstructured" and target > 0:
                layers = [n for n, m in getattr(module, net).named_modules() if isinstance(m, WEIGHTED) and f"{net}.{n}" not in self._skip]
                scores = self._scores(trainer, module, net, [f"{n}.weight" for n in layers], batches, event)
                current = {k[len(net) + 1 :]: v for k, v in self.masks.items() if k.startswith(net + ".")}
                masks = unstructured_masks(scores, target, self.ranking, current)
                decision.masks.update({f"{net}.{k}": v.cpu() for k, v in masks.items()})
            elif target > 0:
                groups = prunable_groups(module, net, self._skip)
                network = getattr(module, net)
                modules = dict(network.named_modules())
                # magnitude needs no data: the same on every rank, whose weights DDP keeps equal
                scores = self._scores(trainer, module, net, [f"{g.producer}.weight" for g in groups], batches, event) if self.importance.needs_data else {}
                units = {g.producer: self.importance.unit_scores(network, g, scores.get(f"{g.producer}.weight"), out_dim(modules[g.producer])) for g in groups}
                original = {g.producer: self.original_units[f"{net}.{g.producer}"] for g in groups}
                decision.keep[net] = units_to_keep(units, original, target, self.ranking, self.round_to)
            if net == "generator" and self.latent_amount > 0:
                graph = trace(module.generator, example_input(module, "generator"))
                first = f"{graph.input_layer}.weight"
                score = self._scores(trainer, module, net, [first], batches, event)[first]
                per_input = score.float().sum(0)  # a Linear's weight is (out, in): one column per latent
                keep = max(1, round((1 - self.plan.target(event, self.latent_amount)) * self.original_z))
                decision.inputs = torch.argsort(per_input, descending=True, stable=True)[:keep].sort().values.cpu()
        return trainer.strategy.broadcast(decision, src=0)

    def _scores(self, trainer, module, net, weights, batches, event) -> dict[str, torch.Tensor]:
        scores = target_of(module).scores(net, self.importance, weights, batches, seed=self.seed + event)
        return {k: trainer.strategy.reduce(v, reduce_op="mean") for k, v in scores.items()}

    def _calibration_batches(self, trainer: Trainer, module, event: int) -> list[Any]:
        return target_of(module).calibration_batches(trainer, self.calibration_samples, self.calibration_batch_size, self.seed + event, self.calibration_source)

    def _execute(
        self, trainer: Trainer, module, decision: PruneDecision, physical: bool = True, previous: Optional[dict[str, torch.nn.Module]] = None
    ) -> None:
        """Apply a decision: masks, and cuts (``physical``) or zeroed units (a dynamic trial).
        Other callbacks hear of a real event through ``architecture_changed``; a masked
        network keeps its shapes, so its optimizers keep their moments. ``previous``: per
        network, what it was before this event (distillation's teacher, see
        ``Target.previous``); by default copies taken here, before anything changes."""
        cuts = dict(decision.keep)
        if decision.inputs is not None:  # latent dimensions are cut from the generator
            cuts.setdefault("generator", {})
        masked = {key.split(".", 1)[0] for key in decision.masks}
        changed = sorted({*cuts, *masked}, reverse=True)  # a GAN's generator first
        if physical and previous is None:
            previous = {net: target_of(module).previous(net) for net in changed}
        if decision.masks:
            self.masks.update(decision.masks)
            self._reapply_all(module)
        for net, keep in cuts.items():
            inputs = decision.inputs if net == "generator" else None
            (cut_units if physical else zero_units)(module, net, keep, inputs)
        if not physical:
            return
        if decision.inputs is not None:
            self._drop_input_columns_of_masks(module, decision.inputs)
        for net in changed:
            architecture_changed(trainer, module, net, previous.get(net), rebuild_optimizers=net in cuts)

    def _drop_input_columns_of_masks(self, module, inputs: torch.Tensor) -> None:
        first = f"generator.{trace(module.generator, example_input(module, 'generator')).input_layer}.weight"
        mask = self.masks.get(first)
        if mask is not None and mask.shape[1] != len(inputs):  # the mask still has the removed latents' columns
            self.masks[first] = mask[:, inputs.sort().values]

    def _after_retrain_mode(self, trainer: Trainer, module) -> None:
        if self.rewind_state:
            load_matching(module, self.rewind_state, self.scoped)
            self._reapply_all(module)
            refresh_training_state(trainer, keep_unchanged=False)  # fresh moments for the rewound weights
        if self.retrain == "network":
            reinitialize(*(getattr(module, net) for net in self.scoped), seed=self.seed + self.next_event)
            if getattr(module, "generator_ema", None) is not None:
                module.generator_ema.load_state_dict(module.generator.state_dict())
            self._reapply_all(module)
            refresh_training_state(trainer, keep_unchanged=False)  # fresh moments for fresh weights
        elif self.retrain == "weight":
            self.masks = {}  # pruned weights start at zero but may grow back

    def _reapply_all(self, module) -> None:
        for net in {key.split(".", 1)[0] for key in self.masks}:
            self._apply_masks(module, net)

    @torch.no_grad()
    def _apply_masks(self, module, network: str) -> None:
        if not self.masks:
            return
        for net in networks_of(module, network):
            params = dict(net.named_parameters())
            for key, mask in list(self.masks.items()):
                if key.startswith(network + "."):
                    p = params[key[len(network) + 1 :]]
                    if mask.device != p.device:  # moved once (decided and restored on CPU), not every step
                        mask = self.masks[key] = mask.to(p.device)
                    p.mul_(mask)

    # ------------------------------------------------------------------ dynamic schedule
    def _try_step(self, trainer: Trainer, module) -> None:
        metric = measure_quality(trainer, module, self.metric_name, self.fidelity)
        if self.baseline is None:
            self.baseline = metric
        decision = self._decide(trainer, module, self.next_event)
        self.trial = {
            "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "masks": {k: v.clone() for k, v in self.masks.items()},
            "decision": decision.to_state(),
            "before_metric": metric,
            "before_modes": measured_modes(trainer)[1],  # None when the run measures no mode coverage
        }
        self._execute(trainer, module, decision, physical=False)

    def _accept_step(self, trainer: Trainer, module, value: float) -> None:
        decision = PruneDecision.from_state(self.trial["decision"])
        # the trial network has the pre-step shapes (its removed units are only zeroed), so it
        # stands in for "before" in the latency comparison
        before = Before(copy.deepcopy(module.generator), module.z_dim, self.trial["before_metric"])
        # the sampling generator as it was before the trial zeroed units (same shapes as now)
        prefix = "generator_ema." if module.generator_ema is not None else "generator."
        previous = copy.deepcopy(module.sampling_generator)
        previous.load_state_dict({k[len(prefix) :]: v for k, v in self.trial["state"].items() if k.startswith(prefix)})
        # the trial applied the masks already; applying them again changes nothing but says so
        self._execute(trainer, module, decision, previous={"generator": previous})
        self._recalibrate(module)
        self.trial = None
        self._report(trainer, module, before, after_metric=value)
        self.next_event += 1
        self.stopped = self.next_event >= self.plan.rounds
        if self.stopped:
            self._forget_dense_best(trainer)

    def _roll_back(self, trainer: Trainer, module, value: float, reason: str) -> None:
        module.load_state_dict(self.trial["state"])
        self.masks = self.trial["masks"]
        self.trial = None
        self.stopped = True
        self._forget_dense_best(trainer)
        rolled_back = EventRow(f"dynamic-{self.next_event + 1}-rolled-back", trainer.current_epoch, logging_step(trainer), metric=self.metric_name, metric_after=round(value, 4))
        self.history.append(rolled_back.as_row())
        rank_zero_info(f"prune: dynamic step {self.next_event + 1} rolled back ({reason}); pruning stops")
