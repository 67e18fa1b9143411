"""prune: make the generator (and, if asked, the discriminator) smaller and faster; on any other
LightningModule, the networks named by ``networks`` (see ``callbacks/target.py``).

This callback decides *when* to prune and *how much*: its schedule and criterion are values
chosen once (``gan_lightning.compress.schedules``, ``gan_lightning.compress.importance``);
selection, surgery and the masks' math live in ``gan_lightning.compress``, the report in
``callbacks/compression.py``.

The schedules are described in ``callbacks/prune_options.py``, the retrain modes in
``callbacks/prune_retrain.py``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Literal, Optional

import torch
from pytorch_lightning import Trainer
from typing_extensions import override

from callbacks.compression import (
    CompressionCallback,
    QualityMetric,
    forget_best_checkpoints,
    measure_quality,
    quality_change,
    report_event,
    summary_key,
)
from callbacks.fidelity import measured_modes
from callbacks.prune_decision import decide
from callbacks.prune_options import PruneOptions, RetrainMode, ScheduleName, check_end_step, check_model, check_schedule
from callbacks.prune_retrain import retrain_after_event
from callbacks.prune_trial import Trial, accept_step, roll_back, try_step
from callbacks.registry import register
from callbacks.state import OptionalState
from callbacks.target import target_of
from gan_lightning.compress.importance import Criterion, make_importance
from gan_lightning.compress.masks import Masks
from gan_lightning.compress.profiling import output_layer
from gan_lightning.compress.pruning import PruneDecision, cut_units, example_input, networks_of, prunable_groups, zero_units
from gan_lightning.compress.schedules import make_schedule
from gan_lightning.compress.selection import Ranking
from gan_lightning.compress.surgery import trace
from gan_lightning.core.hooks import architecture_changed
from gan_lightning.logs import get_logger

log = get_logger(__name__)


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
        criterion: ``auto`` (default: ``group`` for a network with residual additions, ``l1``
            otherwise and for single weights), ``l1``, ``l2`` (magnitude), ``group`` (structured: every slice of a channel
            group, consumers and norms included, as Torch-Pruning), ``gradient`` (|dL/dw|), ``taylor`` (|w dL/dw|),
            ``fisher`` (diagonal empirical Fisher) or ``obd`` (diagonal Hessian, Optimal Brain
            Damage); L is the network's adversarial loss, or the ``training_step`` loss of a
            module that is not a GANModule (where fisher is not available).
        ranking: ``layerwise`` (each layer loses the same fraction) or ``global`` (one ranking
            across layers; structured scores are divided by their layer's mean first).
        round_to: structured: each pruned layer keeps a multiple of this many units (the nearest
            one, never more than it has): CPU kernels work in blocks of 8/16 channels, so 14
            channels run about as slowly as 16 (see benchmarks/README.md, deployment latency). 1: no rounding.
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
        "masks": Masks,  # "<network>.<weight>" -> keep mask
        "dense": dict,
        "original_units": dict,
        "original_z": lambda: None,
        "history": list,  # rows of compress/events
        "rewind_state": dict,
        "baseline": lambda: None,  # dynamic: the metric before any pruning
        "trial": OptionalState(Trial),  # dynamic: the step waiting for its verdict
        "stopped": bool,
    }

    def __init__(
        self,
        generator_amount: float = 0.5,
        discriminator_amount: float = 0.0,
        latent_amount: float = 0.0,
        networks: Optional[dict[str, float]] = None,
        granularity: Literal["structured", "unstructured"] = "structured",
        criterion: Criterion = "auto",
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
        retrain: RetrainMode = "connectivity",
        calibration_source: Literal["real", "vae"] = "real",
        calibration_samples: int = 128,
        calibration_batch_size: int = 64,
        metric: QualityMetric = "auto",
        latency_batch: int = 64,
        seed: int = 0,
    ) -> None:
        given = dict(locals())  # the arguments: nothing else is defined here yet
        self.options = PruneOptions(**{f.name: given[f.name] for f in fields(PruneOptions)})
        self.metric = metric  # the base class resolves it
        # chosen once: from here on the schedule is only asked when its events fall and how much they remove
        self.plan = make_schedule(
            schedule, start_epoch=start_epoch, every_n_epochs=every_n_epochs, rounds=rounds,
            start_step=start_step, end_step=end_step, frequency=frequency,
        )
        self.importance = make_importance(criterion)
        self.reset_state()

    # ------------------------------------------------------------------ checks
    @override
    @property
    def scoped(self) -> list[str]:
        return self.options.scoped

    @override
    def check_setup(self, trainer: Trainer, module, datamodule) -> None:
        """Refuse, before training, settings that cannot work with this model and trainer."""
        check_model(self.options, trainer, module, datamodule, self.importance)
        super().check_setup(trainer, module, datamodule)
        check_schedule(self.options, self.plan, trainer, module)

    @override
    def last_event_epoch(self, max_epochs: Optional[int]) -> Optional[int]:
        return self.plan.events(max_epochs)[-1] if self.plan.unit == "epoch" else None

    @override
    def keeps_layer_state(self) -> bool:
        return self.options.keeps_masks

    event_noun = "pruning event"
    conflict_hint = "(not --prune.schedule gradual) and no masks left after them (--prune.granularity structured or --prune.retrain weight)"

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def on_dense_reference(self, module) -> None:
        self.original_z = getattr(module, "z_dim", None)
        if self.options.granularity != "structured":  # only cuts count units, and only they need a network that traces as a chain
            return
        for net in self.scoped:
            for group in prunable_groups(module, net, set()):
                self.original_units[f"{net}.{group.producer}"] = group.units

    @override
    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        # asked once, not after every batch: a GAN's masks return after each of its steps (below)
        self._masks_after_batch = not target_of(pl_module).gan_hooks
        if self.options.skip_layers is not None:
            self._skip = set(self.options.skip_layers)
        else:
            self._skip = {f"{net}.{output_layer(getattr(pl_module, net), example_input(pl_module, net))}" for net in self.reported(pl_module)}

    @override
    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        check_end_step(self.plan, trainer, pl_module)  # the number of batches per epoch is only known now

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if self.options.rewind_epoch is not None and epoch == self.options.rewind_epoch and not self.rewind_state:
            self.rewind_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if self.plan.unit != "epoch" or self.stopped or self.trial is not None:
            return
        epochs = self.plan.events(trainer.max_epochs)
        if self.next_event < len(epochs) and epoch == epochs[self.next_event]:
            if self.plan.verified:
                try_step(self, trainer, pl_module)
            else:
                self._prune(trainer, pl_module)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self.plan.unit != "batch":
            return
        steps = self.plan.events(trainer.max_epochs)
        due = [i for i in range(self.next_event, len(steps)) if steps[i] <= self.batches_seen]
        if due:  # after a skipped range (e.g. resumed later), only the newest target matters
            self.next_event = due[-1]
            self._prune(trainer, pl_module)

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches_seen += 1
        if self._masks_after_batch:
            self.reapply_masks(pl_module)

    @override
    def on_discriminator_step_end(self, trainer: Trainer, module) -> None:
        self.reapply_masks(module, ["discriminator"])

    @override
    def on_generator_step_end(self, trainer: Trainer, module) -> None:
        self.reapply_masks(module, ["generator"])

    @override
    def on_validation_end(self, trainer: Trainer, pl_module) -> None:
        if self.trial is None or trainer.sanity_checking:
            return
        value = measure_quality(trainer, pl_module, self.metric_name, self.fidelity)
        epoch, modes = measured_modes(trainer)
        reason = self.trial.verdict(self.metric_name, value, self.baseline * (1.0 + self.options.tolerance), modes if epoch == trainer.current_epoch else None)
        if reason is None:
            accept_step(self, trainer, pl_module, value)
        else:
            roll_back(self, trainer, pl_module, value, reason)

    # ------------------------------------------------------------------ events
    def _prune(self, trainer: Trainer, module) -> None:
        before = self.before_event(trainer, module)
        decision = self.decision(trainer, module, self.next_event)
        for net, chosen in decision.criteria.items():
            why = "its channels are joined by residual additions" if chosen == "group" else "a network without residual additions"
            log.info(f"prune: --prune.criterion {self.importance.name} scores {net} by {chosen} ({why})")
        self.execute(trainer, module, decision)
        retrain_after_event(self, trainer, module)
        target_of(module).recalibrate(self.options.seed)
        self.report(trainer, module, before)
        self.next_event += 1
        if self.next_event == len(self.plan.events(trainer.max_epochs)):
            self.forget_dense_best(trainer)

    @staticmethod
    def forget_dense_best(trainer: Trainer) -> None:
        """From the final event on, "best" means the best *compressed* model: the denser
        networks before it would otherwise keep the title. Their files stay on disk."""
        for path in forget_best_checkpoints(trainer):
            log.info(f"prune: the best checkpoint so far ({path}) predates the final pruning event; it is kept, and best-* now tracks the pruned model")

    def report(self, trainer: Trainer, module, before, after_metric: Optional[float] = None) -> dict[str, float]:
        summary = report_event(
            trainer, module, f"{self.plan.name}-{self.next_event + 1}", before, self.dense, self.metric_name,
            self.fidelity, self.options.latency_batch, self.history, after_metric=after_metric,
        )
        first = self.reported(module)[0]
        log.info(
            f"prune: event {self.next_event + 1} at epoch {trainer.current_epoch}: {first} sparsity"
            f" {summary['compress/sparsity']:.1%}, {summary[summary_key(first, 'macs')]:,.0f} MACs/sample,"
            f" latency x{summary['compress/speedup']:.2f}{quality_change(summary, self.metric_name)}"
        )
        return summary

    def decision(self, trainer: Trainer, module, event: int) -> PruneDecision:
        return decide(
            self.options, self.plan, self.importance, trainer, module, event,
            skip=self._skip, masks=self.masks, original_units=self.original_units, original_z=self.original_z,
        )

    def execute(
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
        masked = Masks(decision.masks).networks()
        changed = sorted({*cuts, *masked}, reverse=True)  # a GAN's generator first
        if physical and previous is None:
            previous = {net: target_of(module).previous(net) for net in changed}
        if decision.masks:
            self.masks.update(decision.masks)
            self.reapply_masks(module)
        for net in sorted(cuts, reverse=True):  # a GAN's generator first
            inputs = decision.inputs if net == "generator" else None
            if not physical:
                zero_units(module, net, cuts[net], inputs)
                continue
            # recorded and announced at once: the latent size, and so the discriminator's example input, follow the record
            architecture_changed(trainer, module, net, previous.get(net), edit=cut_units(module, net, cuts[net], inputs))
        if not physical:
            return
        if decision.inputs is not None:
            self._drop_input_columns_of_masks(module, decision.inputs)
        for net in changed:
            if net not in cuts:  # masked only: shapes unchanged, the optimizers keep their moments
                architecture_changed(trainer, module, net, previous.get(net), rebuild_optimizers=False)

    def _drop_input_columns_of_masks(self, module, inputs: torch.Tensor) -> None:
        self.masks.keep_inputs(f"generator.{trace(module.generator, example_input(module, 'generator')).input_layer}.weight", inputs)

    def reapply_masks(self, module, networks: Optional[list[str]] = None) -> None:
        for net in networks or self.masks.networks():
            self.masks.apply(net, networks_of(module, net))
