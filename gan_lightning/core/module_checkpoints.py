"""How a GANModule reads and writes checkpoints: its record of structural edits, replayed on a
freshly built model before the weights load, and the checks that refuse a checkpoint that
cannot load. A mixin of :class:`~gan_lightning.core.module.GANModule`, kept apart so that the
module file holds the training step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


from gan_lightning.class_paths import check_class_path, class_paths_in
from gan_lightning.compress.edits import EditRecord, install_network
from gan_lightning.compress.pruning import example_input
from gan_lightning.core.checkpoint import read_checkpoint, state_dict_mismatches
from gan_lightning.core.hooks import callbacks_with_hook
from gan_lightning.errors import CheckpointError
from gan_lightning.logs import get_logger

log = get_logger(__name__)


class CheckpointedModule:
    """Checkpoint reading and writing of a GANModule (``edits``, ``generator_ema``, ``auxiliary``)."""

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args: Any, **kwargs: Any) -> Any:
        """Lightning's loader, after checking every class path in the checkpoint's
        hyper-parameters against the allow-list: Lightning would import and build them."""
        if isinstance(checkpoint_path, (str, Path)):
            checkpoint = read_checkpoint(checkpoint_path, flag="checkpoint")
            for class_path in class_paths_in(checkpoint.get("hyper_parameters") or {}):
                check_class_path(class_path, f"the checkpoint {checkpoint_path}")
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def checkpoint_mismatch(self, checkpoint: dict[str, Any]) -> Optional[str]:
        """Why ``checkpoint`` cannot be loaded into this model, or None when it can.

        A checkpoint without EMA weights is adapted in place when this model keeps an EMA: the
        average starts from the checkpoint's generator.
        """
        self.adopt_edits(checkpoint)
        state = checkpoint.get("state_dict", {})
        saved_ema = any(k.startswith("generator_ema.") for k in state)
        if self.generator_ema is not None and not saved_ema:
            state.update({"generator_ema." + k[len("generator.") :]: v.clone() for k, v in list(state.items()) if k.startswith("generator.")})
            log.info("The checkpoint has no EMA generator: the EMA starts from its generator.")
        elif self.generator_ema is None and saved_ema:
            decay = checkpoint.get("hyper_parameters", {}).get("ema_decay")
            return f"the checkpoint holds an EMA generator but --model.ema_decay is null: resume with --model.ema_decay {decay}"
        # auxiliary modules belong to the callbacks that attach them (and check them)
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("auxiliary.")}
        problems = state_dict_mismatches({k: v for k, v in state.items() if not k.startswith("auxiliary.")}, own)
        if problems:
            return (
                "the checkpoint was saved from a different architecture than the configured model ("
                + "; ".join(problems)
                + "): resume with the generator/discriminator settings it was trained with"
            )
        return None

    def adopt_edits(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild this model in the shapes the checkpoint's recorded edits gave its networks
        (shapes only: the state_dict fills the weights), replaying those this model lacks: all of
        them on a freshly built model, none on one already in those shapes."""
        saved = EditRecord.from_checkpoint(checkpoint)
        for network, edits in saved.networks.items():
            own = self.edits.edits(network)
            if edits[: len(own)] != own:
                raise CheckpointError(f"the checkpoint's edits of the {network} do not continue this model's: load it into a freshly built model")
            if len(edits) == len(own):
                continue
            current = getattr(self, network)
            rebuilt = saved.replay(network, current, example_input(self, network), start=len(own))
            if rebuilt is not current:  # a replacement among them, in the EMA's place too
                install_network(self, network, rebuilt)
            elif network == "generator" and self.generator_ema is not None:
                saved.replay(network, self.generator_ema, example_input(self, network), start=len(own))
            self.edits.networks[network] = list(edits)
        if self.generator_ema is not None:
            self.generator_ema.requires_grad_(False)  # factors built by the replay start trainable

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["edits"] = self.edits.to_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        problem = self.checkpoint_mismatch(checkpoint)
        if problem:
            raise CheckpointError(problem)
        if self._trainer is not None:  # resuming: callbacks rebuild their auxiliary modules first
            for cb in callbacks_with_hook(self.trainer, "restore_auxiliary"):
                cb.restore_auxiliary(self.trainer, self, checkpoint)
        # Auxiliary modules no callback attached (e.g. loading for evaluation or export) are
        # training state only: dropped rather than refused.
        own = self.state_dict()
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("auxiliary.") and k not in own]:
            del state[key]
        # Modules a callback of this run attached that the checkpoint never had (distillation's
        # adapters, added when resuming a compressed run): they start as the callback built them,
        # and join the end of the generator optimizer's group (configure_optimizers puts them
        # there) with fresh moments.
        new = [k for k in own if k.startswith("auxiliary.") and k not in state]
        for key in new:
            state[key] = own[key]
        params = {f"auxiliary.{name}" for name, _ in self.auxiliary.named_parameters()}
        _extend_generator_group(checkpoint, sum(1 for k in new if k in params))
        # load_from_checkpoint builds the networks outside LightningCLI, so this model's hparams
        # lack their class paths; without them a checkpoint saved from it could not be loaded.
        saved = checkpoint.get("hyper_parameters", {})
        for key in ("generator", "discriminator", "_instantiator"):
            if key in saved and key not in self.hparams:
                self.hparams[key] = saved[key]


def _extend_generator_group(checkpoint: dict[str, Any], count: int) -> None:
    """Add ``count`` parameters without state to the end of the saved generator optimizer's
    group, so it loads into an optimizer that holds that many more."""
    states = checkpoint.get("optimizer_states") or []
    if not count or not states:
        return
    groups = states[0]["param_groups"]
    start = max((i for g in groups for i in g["params"]), default=-1) + 1
    groups[-1]["params"] = [*groups[-1]["params"], *range(start, start + count)]
