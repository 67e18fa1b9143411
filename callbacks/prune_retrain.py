"""What trains after each pruning event (``--prune.retrain``), beyond the masks the event left.

One small function per mode, chosen by name: ``connectivity`` (only kept weights train; masks
re-applied after every optimizer step), ``weight`` (all weights train again; masks dropped) or
``network`` (the pruned structure restarts from fresh initial weights).
"""

from __future__ import annotations

from pytorch_lightning import Trainer

from gan_lightning.compress.masks import Masks
from gan_lightning.compress.pruning import load_matching, reinitialize
from gan_lightning.core.lightning_private import refresh_training_state

# ``prune`` below is the Prune callback, untyped: a plug-in's own modules do not import it back.


def _retrain_connectivity(prune, trainer: Trainer, module) -> None:
    """Only the kept weights train: the masks stay and return after every optimizer step."""


def _retrain_weight(prune, trainer: Trainer, module) -> None:
    prune.masks = Masks()  # pruned weights start at zero but may grow back


def _retrain_network(prune, trainer: Trainer, module) -> None:
    """The pruned structure restarts from fresh initial weights (and fresh optimizer moments)."""
    reinitialize(*(getattr(module, net) for net in prune.scoped), seed=prune.options.seed + prune.next_event)
    if getattr(module, "generator_ema", None) is not None:
        module.generator_ema.load_state_dict(module.generator.state_dict())
    prune.reapply_masks(module)
    refresh_training_state(trainer, keep_unchanged=False)


RETRAIN = {"connectivity": _retrain_connectivity, "weight": _retrain_weight, "network": _retrain_network}


def retrain_after_event(prune, trainer: Trainer, module) -> None:
    """Rewind the surviving weights when asked (``--prune.rewind_epoch``), then prepare the
    retrain mode's training."""
    if prune.rewind_state:
        load_matching(module, prune.rewind_state, prune.scoped)
        prune.reapply_masks(module)
        refresh_training_state(trainer, keep_unchanged=False)  # fresh moments for the rewound weights
    RETRAIN[prune.options.retrain](prune, trainer, module)
