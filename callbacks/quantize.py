"""quantize: quantization-aware fine-tuning of the generator for ``export --format onnx --quantize int8``.

From ``--quantize.start_epoch`` on, the generator computes with int8 fake quantization: weights
symmetric per output channel, activations per tensor with observed ranges, gradients straight
through the rounding (:mod:`gan_lightning.compress.fake_quant` says which tensors, and why this
is the export's grid exactly). The stored weights stay float, under their own names: the
quantized forward is installed on each layer and reads the weight at every call, so checkpoints,
pruning's in-place surgery, distillation's taps by module path and the optimizers are untouched,
and ``prune,distill,quantize`` runs in one training run. Fake quantization is the last stage:
every compression event on the generator must come before it (refused otherwise), and after an
architecture change (a resumed run's replayed edits) the forwards are installed again.

The EMA generator, when there is one, is what ``export`` writes and what samples and FID are
made from: it computes with the same fake quantization and the ranges the training generator
observes (same layout, same layer paths), so ``val/*`` during QAT measures the int8 model. The
EMA's float weights average the fake-quantized generator's; the export puts them on the same grid.

State (``--ckpt_path`` resumes mid-QAT exactly): whether fake quantization is on, the epoch it
started, and the observed activation ranges. Logged at the end of every epoch:
``compress/quantized`` (0/1) and, while on, ``compress/fake_quant_error``: mean |fake-quantized
- float| of the sampling generator's outputs on fixed latents, in eval mode.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from pytorch_lightning import Trainer
from torch import nn
from typing_extensions import override

from callbacks.registry import register
from callbacks.state import OptionalState, StateContract
from callbacks.target import target_of
from gan_lightning.compress.fake_quant import ActivationRanges, FakeQuantizer
from gan_lightning.compress.profiling import evaluating, output_layer
from gan_lightning.compress.pruning import example_input
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.lightning_private import logging_step
from gan_lightning.errors import ConfigError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

ERROR_SEED = 1234  # the fixed latents of compress/fake_quant_error (the export's agreement seed)
CALIBRATION_SEED = 0  # the latents the first activation ranges are observed on (the export's calibration seed)


def default_start(max_epochs: Optional[int], after: int) -> int:
    """The last quarter of training (at least its last epoch), and no earlier than ``after``."""
    if max_epochs is None or max_epochs < 1:
        raise ConfigError("--quantize.start_epoch has no default without --trainer.max_epochs: set it")
    return max(max_epochs - max(1, max_epochs // 4), after)


@register("quantize")
class Quantize(StateContract, GANCallback):
    """Fake-quantizes the generator (and its EMA copy) in int8 during the last epochs.

    Args:
        start_epoch: epoch (counted from 0) at whose start fake quantization begins; it stays on
            to the end of training. Default: the last quarter of ``--trainer.max_epochs`` (at least
            the last epoch), after every compression event on the generator.
        range_momentum: weight of each training batch in the moving average of an activation's
            min and max, in (0, 1].
        latents: how many fixed latents the first activation ranges are observed on (seed 0, as
            the export calibrates) and ``compress/fake_quant_error`` is measured on (seed 1234).
    """

    option_group = "quantize"
    STATE = {"active": bool, "started": lambda: None, "ranges": OptionalState(ActivationRanges)}

    def __init__(self, start_epoch: Optional[int] = None, range_momentum: float = 0.01, latents: int = 256) -> None:
        if start_epoch is not None and start_epoch < 0:
            raise ConfigError(f"--quantize.start_epoch must be an integer >= 0 (epochs count from 0), got {start_epoch}")
        if not 0.0 < range_momentum <= 1.0:
            raise ConfigError(f"--quantize.range_momentum must be in (0, 1], got {range_momentum}")
        if latents < 1:
            raise ConfigError(f"--quantize.latents must be an integer >= 1, got {latents}")
        self.start_epoch = start_epoch
        self.range_momentum = range_momentum
        self.latents = latents
        self.start: Optional[int] = None  # resolved in setup
        self.reset_state()
        self._quantizers: dict[str, FakeQuantizer] = {}  # runtime only: generator, generator_ema

    # ------------------------------------------------------------------ checks
    def check_setup(self, trainer: Trainer, module, datamodule=None) -> None:
        """Refuse, before training, settings that cannot work; resolve the start epoch."""
        if not target_of(module).gan_hooks:
            raise ConfigError(f"--callbacks quantize fake-quantizes a GANModule's generator; {type(module).__name__} is not one: leave quantize out")
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        events = {}
        for cb in trainer.callbacks:
            if cb is not self and "generator" in (getattr(cb, "scoped", None) or ()) and hasattr(cb, "last_event_epoch"):
                events[cb.option_group] = cb.last_event_epoch(max_epochs)
        unplaced = [name for name, epoch in events.items() if epoch is None]
        if unplaced:
            raise ConfigError(
                f"--callbacks {unplaced[0]},quantize needs every {unplaced[0]} event placed in an epoch before --quantize.start_epoch"
                " (fake quantization is the last stage), and this schedule counts batches: use an epoch schedule"
            )
        after = max(events.values(), default=-1) + 1
        start = self.start_epoch if self.start_epoch is not None else default_start(max_epochs, after)
        if self.start_epoch is not None and start < after:
            name = max(events, key=events.get)
            raise ConfigError(
                f"--quantize.start_epoch {start} must come after the last {name} event (epoch {events[name]}): fake quantization"
                f" is the last stage, so set --quantize.start_epoch to {after} or later"
            )
        if max_epochs is not None and start >= max_epochs and not self.active:
            raise ConfigError(
                f"--quantize.start_epoch {start} is never reached because training ends after epoch {max_epochs - 1}"
                f" (--trainer.max_epochs {max_epochs}): set it below {max_epochs} (and after any compression event) or train longer"
            )
        self.start = start

    # ------------------------------------------------------------------ fake quantization
    def _attach(self, module) -> None:
        """(Re)install the fake-quantized forwards on the generator and its EMA copy."""
        out = output_layer(module.generator, example_input(module, "generator"))
        for q in self._quantizers.values():
            q.remove()
        self._quantizers = {"generator": FakeQuantizer(self.ranges, observe=True)}
        self._quantizers["generator"].attach(module.generator, out)
        if module.generator_ema is not None:
            self._quantizers["generator_ema"] = FakeQuantizer(self.ranges, observe=False)
            self._quantizers["generator_ema"].attach(module.generator_ema, out)

    def _detach(self) -> None:
        for q in self._quantizers.values():
            q.remove()
        self._quantizers = {}

    def _activate(self, trainer: Trainer, module) -> None:
        self.ranges = ActivationRanges(self.range_momentum)
        self._attach(module)
        q = self._quantizers["generator"]
        q.calibrating = True
        try:
            with evaluating(module.generator), torch.no_grad():
                module.generator(module.sample_z(self.latents, seed=CALIBRATION_SEED))
        finally:
            q.calibrating = False
        self.active, self.started = True, trainer.current_epoch
        layers = len(q.layers)
        log.info(f"quantize: epoch {trainer.current_epoch}: int8 fake quantization on ({layers} layer(s) of the generator{' and its EMA copy' if module.generator_ema is not None else ''})")

    def fake_quant_error(self, module) -> float:
        """Mean |fake-quantized - float| of the sampling generator's outputs on fixed latents (eval mode)."""
        net = module.sampling_generator
        quantizer = self._quantizers["generator_ema" if module.generator_ema is not None else "generator"]
        z = module.sample_z(self.latents, seed=ERROR_SEED)
        with evaluating(net), torch.no_grad():
            quantized = net(z)
            quantizer.enabled = False
            try:
                reference = net(z)
            finally:
                quantizer.enabled = True
        return float((quantized - reference).abs().mean())

    # ------------------------------------------------------------------ Lightning and GAN hooks
    @override
    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.check_setup(trainer, pl_module)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        if self.active:  # resumed mid-QAT: the checkpoint's ranges, the replayed architecture
            self._attach(pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module) -> None:
        # ">=": a run resumed (or extended) past the start epoch without QAT still gets it
        if not self.active and trainer.current_epoch >= self.start:
            self._activate(trainer, pl_module)
        elif self.active and not self._quantizers:
            self._attach(pl_module)

    @override
    def on_architecture_changed(self, trainer: Trainer, module, network: str, previous: Optional[nn.Module]) -> None:
        if self.active and network == "generator":
            self._attach(module)  # new layers (a replayed edit, a replaced network) get the forwards too

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module) -> None:
        metrics = {"compress/quantized": float(self.active)}
        if self.active:
            # each rank observed its own batches: rank 0's ranges are everyone's (and the checkpoint's)
            state = trainer.strategy.broadcast(self.ranges.to_state(), src=0)
            self.ranges.ranges.update(ActivationRanges.from_state(state).ranges)
            metrics["compress/fake_quant_error"] = self.fake_quant_error(pl_module)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=logging_step(trainer))

    @override
    def teardown(self, trainer: Trainer, pl_module, stage: str) -> None:
        self._detach()  # the module leaves fit with float layers; the checkpoint keeps the ranges

    @override
    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.ranges is not None:
            for q in self._quantizers.values():
                q.ranges = self.ranges

