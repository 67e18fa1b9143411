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
from torch import nn

from gan_lightning.compress.masks import Masks
from gan_lightning.compress.pruning import PruneDecision


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
