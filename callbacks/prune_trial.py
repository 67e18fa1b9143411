"""One step of the dynamic prune schedule, waiting for its verdict.

A dynamic step is tried with its units zeroed (the shapes stay), measured at the next
validation, then either cut out physically or rolled back to the state it was tried on. The
trial is saved in the callback's state, so a run resumed between the try and the verdict
still judges it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch
from pytorch_lightning import Trainer
from torch import nn

from callbacks.compression import Before, EventRow, measure_quality
from callbacks.fidelity import measured_modes
from callbacks.target import target_of
from gan_lightning.compress.masks import Masks
from gan_lightning.compress.pruning import PruneDecision
from gan_lightning.core.lightning_private import logging_step
from gan_lightning.logs import get_logger

log = get_logger(__name__)


@dataclass
class Trial:
    state: dict[str, torch.Tensor]  # the module's state_dict before the step
    masks: Masks  # the masks before the step
    decision: PruneDecision
    before_metric: float
    before_modes: Optional[float]  # val/modes before the step; None when the run measures no mode coverage

    @classmethod
    def start(cls, module: nn.Module, masks: Masks, decision: PruneDecision, metric: float, modes: Optional[float]) -> "Trial":
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return cls(state, masks.clone(), decision, metric, modes)

    def to_state(self) -> dict[str, Any]:
        """Plain containers of tensors, which ``torch.load(weights_only=True)`` reads back."""
        return {
            "state": self.state, "masks": self.masks.to_state(), "decision": self.decision.to_state(),
            "before_metric": self.before_metric, "before_modes": self.before_modes,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Trial":
        return cls(
            state["state"], Masks.from_state(state["masks"]), PruneDecision.from_state(state["decision"]),
            state["before_metric"], state.get("before_modes"),  # checkpoints older than the mode check lack it
        )

    def verdict(self, metric: str, value: float, limit: float, modes: Optional[float]) -> Optional[str]:
        """Why the step is rolled back, or None when it is accepted. ``modes``: val/modes
        measured at this validation (None when not measured now). A step that costs classes is
        rolled back even when the metric tolerates it: FID can stay near its limit while the
        generator drops a class or two."""
        if value > limit:
            return f"{metric} {value:.4g} > limit {limit:.4g}"
        if self.before_modes is not None and modes is not None and modes < self.before_modes:
            return f"val/modes fell from {self.before_modes:g} to {modes:g}"
        return None

    def previous_sampling_generator(self, module) -> nn.Module:
        """The sampling generator as it was before the trial zeroed units (same shapes as now):
        the distillation teacher of the accepted step."""
        prefix = "generator_ema." if module.generator_ema is not None else "generator."
        previous = copy.deepcopy(module.sampling_generator)
        previous.load_state_dict({k[len(prefix) :]: v for k, v in self.state.items() if k.startswith(prefix)})
        return previous


# The steps of the dynamic schedule; ``prune`` is the Prune callback (not imported: its own module).
def try_step(prune, trainer: Trainer, module) -> None:
    """Try the next step with its units zeroed, remembering the state it is tried on."""
    metric = measure_quality(trainer, module, prune.metric_name, prune.fidelity)
    if prune.baseline is None:
        prune.baseline = metric
    decision = prune.decision(trainer, module, prune.next_event)
    prune.trial = Trial.start(module, prune.masks, decision, metric, measured_modes(trainer)[1])
    prune.execute(trainer, module, decision, physical=False)

def accept_step(prune, trainer: Trainer, module, value: float) -> None:
    """Cut out the tried step for good (``value``: the metric measured with it)."""
    # the trial network has the pre-step shapes (its removed units are only zeroed), so it
    # stands in for "before" in the latency comparison
    before = Before(copy.deepcopy(module.generator), module.z_dim, prune.trial.before_metric)
    # the trial applied the masks already; applying them again changes nothing but says so
    prune.execute(trainer, module, prune.trial.decision, previous={"generator": prune.trial.previous_sampling_generator(module)})
    target_of(module).recalibrate(prune.options.seed)
    prune.trial = None
    prune.report(trainer, module, before, after_metric=value)
    prune.next_event += 1
    prune.stopped = prune.next_event >= prune.plan.rounds
    if prune.stopped:
        prune.forget_dense_best(trainer)

def roll_back(prune, trainer: Trainer, module, value: float, reason: str) -> None:
    """Restore the state the step was tried on; pruning stops."""
    module.load_state_dict(prune.trial.state)
    prune.masks = prune.trial.masks
    prune.trial = None
    prune.stopped = True
    prune.forget_dense_best(trainer)
    rolled_back = EventRow(f"dynamic-{prune.next_event + 1}-rolled-back", trainer.current_epoch, logging_step(trainer), metric=prune.metric_name, metric_after=round(value, 4))
    prune.history.append(rolled_back.as_row())
    log.info(f"prune: dynamic step {prune.next_event + 1} rolled back ({reason}); pruning stops")
