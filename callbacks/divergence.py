"""Catching divergence where it happens, and keeping the last finite state to rescue."""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from pytorch_lightning import Callback
from torch.utils._pytree import tree_flatten, tree_unflatten
from typing_extensions import override

from gan_lightning.core.module import DIVERGENCE_ADVICE
from gan_lightning.errors import NonFiniteLossError
from gan_lightning.logs import get_logger

log = get_logger(__name__)


def state_tensors(module, optimizers) -> dict[str, torch.Tensor]:
    """Every floating-point tensor of the training state: parameters, buffers (BatchNorm running
    statistics) and optimizer state (Adam's moments), by name."""
    tensors = {k: v for k, v in module.state_dict().items() if v.is_floating_point() and v.numel() > 0}
    names = {id(p): n for n, p in module.named_parameters()}
    for optimizer in optimizers:
        for param, state in optimizer.state.items():
            owner = names.get(id(param), "a parameter")
            tensors.update({f"the optimizer's {k} of {owner}": v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel() > 1})
    return tensors


class StateCopy:
    """A copy of a nested training state (state dicts of the module and its optimizers) in CPU
    memory, allocated once and copied into afterwards.

    Cloning the state every batch allocated a whole new copy while the previous one was still
    held (two copies at the peak, on the accelerator) and paid the allocator and page faults for
    it each time; here the buffers are reused while the layout (names, shapes, dtypes) stays the
    same, and a pruning or factorization that changes it simply allocates new ones. From CUDA the
    copy goes asynchronously into pinned memory: stream order keeps it ahead of the next batch's
    in-place updates, and ``state()`` waits for it.
    """

    def __init__(self) -> None:
        self._spec = None
        self._leaves: list[Any] = []
        self._copied: Optional[torch.cuda.Event] = None

    def keep(self, state: Any) -> None:
        leaves, spec = tree_flatten(state)
        if spec != self._spec or not all(_fits(kept, new) for kept, new in zip(self._leaves, leaves)):
            self._spec, self._leaves = spec, []  # the old buffers go before the new ones come
            self._leaves = [torch.empty_like(x, device="cpu", pin_memory=x.is_cuda) if torch.is_tensor(x) else None for x in leaves]
        on_cuda = False
        for i, x in enumerate(leaves):
            if torch.is_tensor(x):
                self._leaves[i].copy_(x.detach(), non_blocking=x.is_cuda)
                on_cuda |= x.is_cuda
            else:  # learning rates, betas, step counts kept as numbers: small, and mutable containers must not be shared
                self._leaves[i] = copy.deepcopy(x)
        self._copied = torch.cuda.Event() if on_cuda else None
        if self._copied is not None:
            self._copied.record()

    @property
    def nbytes(self) -> int:
        """The memory the copy holds."""
        return sum(x.nbytes for x in self._leaves if torch.is_tensor(x))

    def state(self) -> Any:
        """The kept state, made of the kept buffers themselves (no second copy of a large model)."""
        if self._copied is not None:
            self._copied.synchronize()
        return tree_unflatten(list(self._leaves), self._spec)


def _fits(kept: Any, new: Any) -> bool:
    if not torch.is_tensor(new):
        return not torch.is_tensor(kept)
    return torch.is_tensor(kept) and kept.shape == new.shape and kept.dtype == new.dtype


class DivergenceGuard(Callback):
    """After every batch, checks that the whole training state is finite; keeps a copy of the
    last state that was, which the rescue checkpoint holds when training stops on a
    divergence; warns once when a weight or statistic explodes past ``explode_at``.

    The loss check in GANModule only sees losses: a huge learning rate can send BatchNorm's
    running variance or Adam's moments to infinity while the losses stay finite for a while.
    The check is one max-abs reduction per tensor; the copy goes into buffers in CPU memory that
    are allocated once (``StateCopy``), so a large model neither holds a second copy of its state
    on the accelerator nor allocates one every batch; it is never written unless training diverges.
    """

    def __init__(self, explode_at: float = 1e6) -> None:
        self.explode_at = explode_at
        self._kept = StateCopy()
        self._kept_step: Optional[int] = None
        self._warned = False

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        self._warned = False
        self._check_and_keep(trainer, pl_module)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check_and_keep(trainer, pl_module)

    def _check_and_keep(self, trainer, pl_module) -> None:
        if self._check(trainer, pl_module):
            self._keep(trainer, pl_module)

    def _check(self, trainer, pl_module) -> bool:
        """Raises when a tensor of the state is not finite; False when there is no state to keep."""
        tensors = state_tensors(pl_module, trainer.optimizers)
        if not tensors:
            return False
        names = list(tensors)
        largest = self._largest(list(tensors.values()))
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
            log.warning(
                f"training is exploding: {names[int(largest.argmax())]} reached {peak:.3g} at epoch {trainer.current_epoch}, step"
                f" {trainer.global_step}; it will stop when a value becomes non-finite: {DIVERGENCE_ADVICE}"
            )
        return True

    @staticmethod
    def _largest(tensors: list[torch.Tensor]) -> torch.Tensor:
        """The largest magnitude in each tensor, NaN where it holds one."""
        if tensors[0].device.type != "cpu":  # one fused kernel for all the tensors
            return torch.stack([t.float() for t in torch._foreach_norm(tensors, float("inf"))])
        # On the CPU the foreach infinity norm is a slow generic reduction: 57 ms against 4 ms for
        # min and max on a 79 MiB state (benchmarks/divergence_guard.py's model), most of the guard.
        return torch.stack([torch.maximum(-low, high).float() for low, high in map(torch.aminmax, tensors)])

    def _keep(self, trainer, pl_module) -> None:
        self._kept.keep({"module": pl_module.state_dict(), "optimizers": [o.state_dict() for o in trainer.optimizers]})
        self._kept_step = trainer.global_step

    def restore_last_finite(self, trainer, pl_module, exception: BaseException) -> Optional[str]:
        """Put the last finite state back before the rescue checkpoint is written (called by
        callbacks.interrupt); returns what it restored, or None."""
        if not isinstance(exception, NonFiniteLossError) or self._kept_step is None:
            return None
        state, step = self._kept.state(), self._kept_step
        current = pl_module.state_dict()
        same_shapes = state["module"].keys() == current.keys() and all(v.shape == current[k].shape for k, v in state["module"].items())
        if not same_shapes or len(state["optimizers"]) != len(trainer.optimizers):
            return None  # the architecture changed since (a prune event in this batch): nothing consistent to restore
        state["module"]._metadata = getattr(current, "_metadata", None)  # module versions, which flattening dropped
        pl_module.load_state_dict(state["module"])
        for optimizer, saved in zip(trainer.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        # On the CPU the optimizer now holds the kept buffers themselves: the next keep must not write into them.
        self._kept, self._kept_step = StateCopy(), None
        return f"the last finite state (parameters, buffers and optimizer state of step {step})"
