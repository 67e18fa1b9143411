"""What the train command checks when a run writes into a folder or resumes one.

A resume means the same run: its plug-ins and their options stay, it writes on into the
checkpoint's folder (and W&B run), and no run silently replaces another's checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace
from pytorch_lightning import Callback
from typing_extensions import override

from callbacks.registry import CALLBACKS
from gan_lightning.core.checkpoint import read_checkpoint
from gan_lightning.errors import ConfigError


class PlugInRecord(Callback):
    """Writes the switched-on plug-ins and their options into every checkpoint, so that a
    resume can refuse to silently change them (see :func:`check_resumed_plug_ins`)."""

    KEY = "gan_lightning_plug_ins"

    def __init__(self, options: dict[str, dict[str, Any]]) -> None:
        self.options = options

    @override
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = self.options


def continue_run_folder(cfg: Namespace, ckpt_path: Path) -> None:
    """A resumed run writes on into the checkpoint's run folder (and W&B run), so that
    ModelCheckpoint keeps its best score and the dashboard shows one continuous run."""
    if ckpt_path.parent.name != "checkpoints" or cfg.checkpoint.get("dirpath"):
        return
    cfg.checkpoint.dirpath = str(ckpt_path.parent)
    logger_cfg = cfg.trainer.get("logger")
    if isinstance(logger_cfg, Namespace) and str(logger_cfg.get("class_path", "")).endswith("WandbLogger"):
        if logger_cfg.init_args.get("id") is None:
            logger_cfg.init_args["id"] = ckpt_path.parent.parent.name
            logger_cfg["dict_kwargs"] = {**(logger_cfg.get("dict_kwargs") or {}), "resume": "allow"}


def check_resumed_plug_ins(cfg: Namespace, checkpoint: dict[str, Any], callback_names: list[str], plug_in_options: dict[str, dict[str, Any]]) -> None:
    """Resuming means the same run: a plug-in whose state the checkpoint holds must stay on
    (without prune, its masks would be gone after one epoch), with the same options.
    Plug-ins may be added. Checkpoints written before options were recorded are checked
    for the plug-ins only."""
    saved_state = checkpoint.get("callbacks", {})
    recorded = checkpoint.get(PlugInRecord.KEY)
    had = set(recorded) if recorded is not None else set()
    stateful = {n for n, c in CALLBACKS.items() if c.__qualname__ in saved_state}  # a monitor like grad_norm may go
    had |= stateful
    dropped = sorted(stateful - set(callback_names))
    if dropped:
        raise ConfigError(
            f"--ckpt_path {cfg.ckpt_path} was trained with --callbacks {','.join(sorted(had))}, and resuming without"
            f" {', '.join(dropped)} would lose {'its' if len(dropped) == 1 else 'their'} state (e.g. pruning masks):"
            f" resume with --callbacks {','.join(sorted(had | set(callback_names)))}"
        )
    changed = [
        f"--{name}.{key} {plug_in_options[name].get(key)!r} (the checkpoint's run used {value!r})"
        for name, options in (recorded or {}).items()
        for key, value in options.items()
        if plug_in_options[name].get(key) != value
    ]
    if changed:
        raise ConfigError(
            f"--ckpt_path {cfg.ckpt_path} continues a run whose plug-in options differ: {'; '.join(changed[:4])}; resume with the"
            " run's own options (its config.yaml has them), or start a new run to change them"
        )


def refuse_replacing_checkpoints(cfg: Namespace, resume_checkpoint: Optional[dict[str, Any]]) -> None:
    """ModelCheckpoint writes last.ckpt and prunes best-*.ckpt in its folder without asking:
    another run's folder, or a newer checkpoint of the run being resumed, would be lost.
    ``resume_checkpoint``: the checkpoint being resumed, if any."""
    if not cfg.checkpoint.get("dirpath"):
        return  # Lightning's default is a new version folder per run
    folder = Path(cfg.checkpoint.dirpath)
    existing = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if not existing:
        return
    resume = Path(cfg.ckpt_path).resolve() if resume_checkpoint is not None else None
    if resume is None or resume.parent != folder.resolve():
        raise ConfigError(
            f"--checkpoint.dirpath {folder} already holds checkpoints of another run ({', '.join(existing[:3])}), which this run"
            f" would replace: choose a new folder, or continue that run with --ckpt_path {folder / existing[-1]}"
        )
    last = folder / "last.ckpt"
    if last.is_file() and last.resolve() != resume:
        newer = read_checkpoint(last, flag="the run's").get("global_step", 0)
        step = resume_checkpoint.get("global_step", 0)
        if newer > step:
            raise ConfigError(
                f"--ckpt_path {cfg.ckpt_path} (step {step}) is older than {last} (step {newer}), which the resumed run would"
                f" overwrite: resume from {last}, or branch off into a new folder with --checkpoint.dirpath NEW_FOLDER"
            )
