"""Catching divergence where it happens, and keeping the last finite state to rescue."""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_warn

from gan_lightning.core.module import DIVERGENCE_ADVICE
from gan_lightning.errors import NonFiniteLossError


def state_tensors(module, optimizers) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the training state: parameters, buffers (BatchNorm running
    statistics) and optimizer state (Adam's moments), by name."""
    tensors = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
    names = {id(p): n for n, p in module.named_parameters()}
    for optimizer in optimizers:
        for param, state in optimizer.state.items():
            owner = names.get(id(param), "a parameter")
            tensors.update({f"the optimizer's {k} of {owner}": v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel() > 1})
    return tensors


class DivergenceGuard(Callback):
    """After every batch, checks that the whole training state is finite; keeps a copy of the
    last state that was, which the rescue checkpoint holds when training stops on a
    divergence; warns once when a weight or statistic explodes past ``explode_at``.

    The loss check in GANModule only sees losses: a huge learning rate can send BatchNorm's
    running variance or Adam's moments to infinity while the losses stay finite for a while.
    The check is one max-abs reduction per tensor; the copy is one tensor copy of the state,
    cheaper than a checkpoint and never written unless training diverges.
    """

    def __init__(self, explode_at: float = 1e6) -> None:
        self.explode_at = explode_at
        self._last_finite: Optional[dict[str, Any]] = None
        self._warned = False

    def on_train_start(self, trainer, pl_module) -> None:
        self._warned = False
        self._check_and_keep(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check_and_keep(trainer, pl_module)

    def _check_and_keep(self, trainer, pl_module) -> None:
        tensors = state_tensors(pl_module, trainer.optimizers)
        if not tensors:
            return
        names = list(tensors)
        largest = torch.stack([t.float() for t in torch._foreach_norm(list(tensors.values()), float("inf"))])
        bad = not bool(torch.isfinite(largest).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            culprit = names[int((~torch.isfinite(largest)).nonzero()[0])] if bad else "another rank's state"
            raise NonFiniteLossError(
                f"{culprit} became non-finite at epoch {trainer.current_epoch}, batch {trainer.fit_loop.batch_idx} (step {trainer.global_step})",
                DIVERGENCE_ADVICE,
            )
        peak = float(largest.max())
        if peak > self.explode_at and not self._warned:
            self._warned = True
            rank_zero_warn(
                f"training is exploding: {names[int(largest.argmax())]} reached {peak:.3g} at epoch {trainer.current_epoch}, step"
                f" {trainer.global_step}; it will stop when a value becomes non-finite: {DIVERGENCE_ADVICE}"
            )
        self._last_finite = {
            "step": trainer.global_step,
            "module": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "optimizers": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
        }

    def restore_last_finite(self, trainer, pl_module, exception: BaseException) -> Optional[str]:
        """Put the last finite state back before the rescue checkpoint is written (called by
        callbacks.interrupt); returns what it restored, or None."""
        if not isinstance(exception, NonFiniteLossError) or self._last_finite is None:
            return None
        state = self._last_finite
        current = pl_module.state_dict()
        same_shapes = state["module"].keys() == current.keys() and all(v.shape == current[k].shape for k, v in state["module"].items())
        if not same_shapes or len(state["optimizers"]) != len(trainer.optimizers):
            return None  # the architecture changed since (a prune event in this batch): nothing consistent to restore
        pl_module.load_state_dict(state["module"])
        for optimizer, saved in zip(trainer.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        return f"the last finite state (parameters, buffers and optimizer state of step {state['step']})"
