"""Say so when a compression event costs the generator classes (modes) and they do not come back.

Always on. It reads the mode coverage the run measures anyway (``val/modes``, from
:class:`~callbacks.fidelity.FidelityEvaluation`): the last value before a network's architecture
first changes is the reference; when, after the change, ``patience`` measurements in a row cover
fewer modes than that, or training ends below it, one warning line gives the numbers and what to
try. A dip that recovers within ``patience`` measurements is the normal cost of a cut and stays
silent. Logged at every measurement after an event: ``compress/modes_lost`` (reference minus
``val/modes``, 0 when none are lost).
"""

from __future__ import annotations

from pytorch_lightning import Trainer
from typing_extensions import override

from callbacks.fidelity import measured_modes
from callbacks.state import StateContract
from callbacks.target import target_of
from gan_lightning.core.hooks import GANCallback
from gan_lightning.logs import get_logger

log = get_logger(__name__)

ADVICE = [
    "restart the discriminator after cuts too (--balance.judge any)",  # first: left out when it already does
    "prune the discriminator as well (--prune.discriminator_amount)",
    "compress less at once (--prune.schedule iterative or dynamic)",
]


class ModeCollapseWatch(StateContract, GANCallback):
    """Warns once when mode coverage falls after a compression event and does not recover."""

    option_group = "mode_watch"
    STATE = {
        "reference": lambda: None,  # val/modes just before the first event
        "event_epoch": lambda: None,  # the epoch of the first event; None: no event yet
        "after": list,  # val/modes measured since the event
        "warned": bool,
    }

    def __init__(self, patience: int = 2) -> None:
        self.patience = patience
        self.reset_state()

    @override
    def on_architecture_changed(self, trainer: Trainer, module, network: str, previous) -> None:
        if self.event_epoch is None and target_of(module).adversarial:
            self.event_epoch = trainer.current_epoch
            # the fidelity callback's last measurement (restored on resume) predates the event
            self.reference = measured_modes(trainer)[1]

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module) -> None:
        epoch, modes = measured_modes(trainer)
        if epoch != trainer.current_epoch or self.event_epoch is None or self.reference is None:
            return  # nothing measured this epoch, or nothing to compare with
        self.after.append(modes)
        pl_module.log("compress/modes_lost", max(self.reference - modes, 0.0))
        recent = self.after[-self.patience:]
        if len(recent) == self.patience and all(m < self.reference for m in recent):
            self._warn(trainer, f"in the last {self.patience} measurements")

    @override
    def on_fit_end(self, trainer: Trainer, pl_module) -> None:
        if self.event_epoch is not None and self.reference is not None and self.after and self.after[-1] < self.reference:
            self._warn(trainer, "when training ended")

    def _warn(self, trainer: Trainer, when: str) -> None:
        if self.warned:
            return
        self.warned = True
        history = ", ".join(f"{m:g}" for m in self.after)
        distilling = any(getattr(cb, "option_group", None) == "distill" for cb in trainer.callbacks)
        judging_cuts = any(getattr(cb, "judge", None) == "any" and getattr(cb, "mode", None) != "off" for cb in trainer.callbacks)
        advice = ADVICE[judging_cuts:] + ([] if distilling else ["add --callbacks distill"])
        log.warning(
            f"mode collapse: the generator covered {self.reference:g} modes (val/modes) before the compression event at epoch"
            f" {self.event_epoch}, and {history} since, still fewer {when}: {', '.join(advice[:-1])}, or {advice[-1]}"
        )
