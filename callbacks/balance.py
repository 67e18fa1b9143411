"""balance: keep a discriminator trained against the dense generator from collapsing a compressed one.

Always on (``--balance.*``). A discriminator trained for many epochs against the dense generator
meets, after a compression event (a structured cut, a low-rank factorization, a distillation
student taking the generator's place), a generator that is suddenly much worse. It separates
the two perfectly (LSGAN: D(real) ~ 1, D(fake) ~ 0), and its gradient drives the weakened
generator onto the few samples it still rates highly: a student from scratch ends drawing one
class and stays there (docs/balance.md has the measurements).

By default it judges every event that changes the generator: cuts, factorizations and a new
generator (``--distill.student``); ``--balance.judge replaced`` judges only the last. Through
train.py on the digits a kept discriminator collapsed 3 of 8 generators cut to 8x or 16x
(one class), and judging cuts let both collapsing runs tried recover (docs/balance-control.md). The control measures D's margin,
mean D(real) minus mean D(fake), in every discriminator step.
Before an event it keeps a running average over ``window`` steps: the balance the dense pair
found. After an event it averages the margin of the next ``probe_steps`` steps, and when that
exceeds the running average by more than ``tolerance`` of it, the discriminator starts afresh:
new weights (seeded, the same on every rank), new BatchNorm statistics, new optimizer moments.
The compressed generator and a new D then find their balance together, as a dense pair does from
scratch, while distillation (when on) keeps the generator close to its teacher; the generator's
adversarial term comes back linearly over ``ramp_epochs`` after the restart. A margin under
the threshold leaves D as it is. Measured alternatives that did not work (slowing D, lowering
the generator's adversarial weight from the margin) are in docs/balance.md.

Every rank decides on the margin averaged over all ranks, so DDP ranks stay identical. Logged
every batch: ``balance/d_margin``; at each decision: ``balance/d_reset`` (1 or 0) and
``balance/probe_margin``.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pytorch_lightning import Trainer
from typing_extensions import override

from callbacks.state import StateContract
from callbacks.target import target_of
from gan_lightning.compress.pruning import reinitialize
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.lightning_private import logging_step
from gan_lightning.errors import ConfigError
from gan_lightning.logs import get_logger

log = get_logger(__name__)

# The reference for an event that comes before any margin was measured (a checkpoint written
# before this callback existed, resumed straight into an event): half-way between "cannot tell"
# (0) and D's targets (LSGAN 1 vs 0, hinge +-1). bce's logits and wasserstein's scores have no
# natural scale: there only --balance.target_margin arms the control.
UNMEASURED_REFERENCE = {"lsgan": 0.5, "hinge": 1.0}


def mean_over_ranks(trainer: Trainer, module, value: float) -> float:
    """``value`` averaged over all ranks (the same number on every rank, so all decide alike)."""
    return float(trainer.strategy.reduce(torch.tensor(value, device=module.device), reduce_op="mean"))


class DiscriminatorBalance(StateContract, GANCallback):
    """Restarts the discriminator when, after a compression event, it overpowers the generator.

    Args:
        mode: ``reset`` (the control described above) or ``off`` (D is kept whatever its margin,
            as before this callback existed).
        judge: which generator changes are judged: ``any`` (structured cuts, low-rank
            factorizations and a new generator) or ``replaced`` (only a new generator trained
            from scratch, the distillation student). A restart after a cut was measured to cost
            FID once (Fashion-MNIST, 16x); keeping D collapsed 3 of 8 cuts on the digits
            (docs/balance-control.md).
        tolerance: how far, as a fraction of the reference's magnitude, the margin after an event
            may exceed the reference before D is restarted (>= 0).
        window: discriminator steps in the running margin before an event (an exponential
            average of about that span, >= 1).
        probe_steps: discriminator steps after an event whose mean margin is judged (>= 1).
        target_margin: the reference margin; default: the running margin just before the event.
        ramp_epochs: after a restart, the generator's adversarial term comes back linearly over
            this many epochs (from 0: the generator first learns from the teacher while the new D
            learns what real samples look like); 0 brings it back at once (>= 0).
        seed: seed of the restarted discriminator's weights.
    """

    option_group = "balance"
    STATE = {
        "margin": lambda: None,  # the running margin, this rank's (None until measured, and after a restart)
        "reference": lambda: None,  # the margin the event is judged against, averaged over ranks
        "probe": lambda: None,  # this rank's margins since the event being judged; None: no event pending
        "decisions": list,  # [epoch, batch, probe margin, threshold, restarted] per event
        "ramp": lambda: None,  # batches since D restarted, while G's adversarial term ramps back in
    }

    def __init__(
        self,
        mode: Literal["reset", "off"] = "reset",
        judge: Literal["replaced", "any"] = "any",
        tolerance: float = 0.1,
        window: int = 50,
        probe_steps: int = 5,
        target_margin: Optional[float] = None,
        ramp_epochs: float = 4.0,
        seed: int = 0,
    ) -> None:
        if mode not in ("reset", "off"):
            raise ConfigError(f"--balance.mode must be reset or off, got {mode!r}")
        if not tolerance >= 0:
            raise ConfigError(f"--balance.tolerance must be a number >= 0, got {tolerance}")
        if window < 1 or probe_steps < 1:
            raise ConfigError(f"--balance.window and --balance.probe_steps must be integers >= 1, got {window} and {probe_steps}")
        if judge not in ("replaced", "any"):
            raise ConfigError(f"--balance.judge must be replaced or any, got {judge!r}")
        if not ramp_epochs >= 0:
            raise ConfigError(f"--balance.ramp_epochs must be a number >= 0, got {ramp_epochs}")
        self.mode = mode
        self.judge = judge
        self.tolerance = tolerance
        self.window = window
        self.probe_steps = probe_steps
        self.target_margin = target_margin
        self.ramp_epochs = ramp_epochs
        self.seed = seed
        self.reset_state()
        self._generator: Optional[torch.nn.Module] = None  # the generator object of the last event (runtime only)

    # The running margin stays a tensor where D's outputs are, so a discriminator step costs no
    # host synchronisation and no collective; ranks are averaged only when an event is judged.
    @property
    def margin(self) -> Optional[float]:
        return None if self._running is None else float(self._running)

    @margin.setter
    def margin(self, value: Optional[float]) -> None:
        self._running = None if value is None else torch.tensor(float(value))

    @property
    def restarts_discriminator(self) -> bool:
        """Whether this control may restart D (the distill callback warns about students otherwise)."""
        return self.mode == "reset"

    @property
    def threshold(self) -> float:
        return self.reference + self.tolerance * abs(self.reference)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module) -> None:
        self._generator = getattr(pl_module, "generator", None)

    @override
    def on_architecture_changed(self, trainer: Trainer, module, network: str, previous) -> None:
        if self.mode == "off" or network != "generator" or not target_of(module).adversarial:
            return  # a smaller discriminator is no threat to the generator
        replaced, self._generator = module.generator is not self._generator, module.generator
        if self.judge == "replaced" and not replaced:
            return  # a cut or a factorization keeps most of what G had learnt (docs/balance.md: restarting D there cost FID)
        reference = self.target_margin
        if reference is None and self._running is not None:
            reference = mean_over_ranks(trainer, module, float(self._running))
        if reference is None:
            reference = UNMEASURED_REFERENCE.get(module.hparams.get("loss"))
        if reference is None:
            log.info(
                f"balance: the generator changed before any discriminator margin was measured, and --model.loss"
                f" {module.hparams.get('loss')} has no default one: give --balance.target_margin to judge D against it"
            )
            return
        self.reference, self.probe = float(reference), []

    @override
    def on_discriminator_outputs(self, trainer: Trainer, module, d_real: torch.Tensor, d_fake: torch.Tensor) -> None:
        if self.mode == "off":
            return
        margin = (d_real - d_fake).detach().float()
        if self.probe is not None:
            self.probe.append(margin)
        elif self._running is None:
            self._running = margin
        else:
            self._running = torch.lerp(self._running.to(margin.device), margin, 1.0 / self.window)

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Decided between batches, never inside a step: D's weights change only here."""
        if self.mode == "off":
            return
        if self.probe is not None and len(self.probe) >= self.probe_steps:
            self._decide(trainer, pl_module)
        elif self.ramp is not None:
            self.ramp += 1
        if self._running is not None:
            pl_module.log("balance/d_margin", self._running, batch_size=1)

    @override
    def adversarial_weight(self, trainer: Trainer, module) -> float:
        if self.ramp is None:
            return 1.0
        weight = self.ramp / max(self.ramp_epochs * trainer.num_training_batches, 1.0)
        if weight >= 1.0:
            self.ramp = None
        return min(weight, 1.0)

    def _decide(self, trainer: Trainer, module) -> None:
        probe = mean_over_ranks(trainer, module, float(torch.stack([m.cpu() for m in self.probe]).mean()))
        threshold = self.threshold
        restarted = probe > threshold
        self.probe = None
        self.decisions.append([trainer.current_epoch, logging_step(trainer), round(probe, 4), round(threshold, 4), restarted])
        if restarted:
            reinitialize(module.discriminator, seed=self.seed + len(self.decisions))
            owned = {id(p) for p in module.discriminator.parameters()}
            for optimizer in trainer.optimizers:  # its moments described the old weights
                if any(id(p) in owned for group in optimizer.param_groups for p in group["params"]):
                    optimizer.state.clear()
            self.margin = None  # the new pair finds a new balance
            self.ramp = 0 if self.ramp_epochs > 0 else None
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"balance/d_reset": float(restarted), "balance/probe_margin": probe}, step=logging_step(trainer))
        log.info(
            f"balance: after the generator changed, D's margin D(real) - D(fake) is {probe:.3g} against {threshold:.3g}"
            f" (before: {self.reference:.3g}): " + ("D overpowers it, so D restarts from fresh weights" if restarted else "D is kept")
        )
