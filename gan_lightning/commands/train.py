"""The train command: LightningCLI plus ``--callbacks a,b`` and run naming for W&B.

    python train.py [fit|validate] [flags]        (or: gan-lightning-train, python -m gan_lightning.commands.train)
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import Namespace
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import CheckpointIO
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException
from typing_extensions import override

import callbacks  # noqa: F401  (importing the package registers every plug-in callback)
from callbacks.balance import DiscriminatorBalance
from callbacks.divergence import DivergenceGuard
from callbacks.folder_lock import CheckpointFolderLock
from callbacks.fidelity import FidelityEvaluation
from callbacks.interrupt import InterruptCheckpoint
from callbacks.layer_table import LayerTable
from callbacks.mode_watch import ModeCollapseWatch
from callbacks.registry import CALLBACKS, parse_names
from callbacks.samples import SampleGrid
from datamodules.base import GANDataModule
from gan_lightning.class_paths import allow_classes
from gan_lightning.commands.config_files import check_config_args
from gan_lightning.commands.console import run
from gan_lightning.commands.parser import GANArgumentParser
from gan_lightning.commands.presets import preset_path
from gan_lightning.commands.resume_checks import PlugInRecord, check_resumed_plug_ins, continue_run_folder, refuse_replacing_checkpoints
from gan_lightning.core.checkpoint import AtomicCheckpointIO, read_checkpoint
from gan_lightning.commands.wandb_mode import configure_wandb, start_wandb_or_go_offline
from gan_lightning.core.loggers import describe_run, run_dir
from gan_lightning.core.module import GANModule
from gan_lightning.errors import CheckpointError, ConfigError
from gan_lightning.quality.evaluation import check_metrics_setup
from gan_lightning.quality.fidelity import FIDELITY_NAMES

DEFAULT_CONFIG = preset_path("default")
SUBCOMMANDS = ("fit", "validate")
FIDELITY_KEYS = tuple(f"val/{name}" for name in FIDELITY_NAMES)


class SaveRunConfig(SaveConfigCallback):
    """Saves the full resolved config as ``<run>/config.yaml`` and as every logger's
    hyper-parameters (the W&B run config), so a run can be reproduced from its dashboard."""

    @override
    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        path = run_dir(trainer) / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": yaml.safe_load(text)})


def _plain(value: Any) -> Any:
    """Options as the plain values torch.load(weights_only=True) reads back, tuples as lists."""
    return json.loads(json.dumps(value, default=lambda v: vars(v) if isinstance(v, Namespace) else str(v)))


def _short_name(class_path: str, suffix: str) -> str:
    name = class_path.rsplit(".", 1)[-1]
    return (name[: -len(suffix)] if name.endswith(suffix) and name != suffix else name).lower()


class GANLightningCLI(LightningCLI):
    def __init__(self, args: Optional[list[str]] = None, default_config: Path = DEFAULT_CONFIG, **kwargs: Any) -> None:
        defaults = {"default_config_files": [str(default_config)]}
        self.argv = list(args) if args is not None else sys.argv[1:]  # for the resume command of an interrupted run
        super().__init__(
            model_class=GANModule,
            datamodule_class=GANDataModule,
            subclass_mode_data=True,
            save_config_callback=SaveRunConfig,
            parser_class=GANArgumentParser,
            save_config_kwargs={"save_to_log_dir": False},
            trainer_defaults={"callbacks": [InterruptCheckpoint(), DivergenceGuard(), LayerTable(), ModeCollapseWatch()]},
            parser_kwargs={sub: dict(defaults) for sub in SUBCOMMANDS},
            auto_configure_optimizers=False,
            args=args,
            **kwargs,
        )

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/fid",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(SampleGrid, "samples")
        parser.add_lightning_class_args(FidelityEvaluation, "metrics")
        parser.add_lightning_class_args(DiscriminatorBalance, "balance")
        parser.add_argument(
            "--callbacks",
            type=str,
            default="",
            help="Comma-separated plug-in callbacks to switch on, each configured by its own --NAME.* options."
            f" Available: {', '.join(sorted(CALLBACKS)) or 'none'}.",
        )
        for name, cls in sorted(CALLBACKS.items()):
            parser.add_class_arguments(cls, name, instantiate=False, fail_untyped=False)

    @override
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # GANModule has no test or predict step, so only these two are offered.
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    # ------------------------------------------------------------------ config checks
    @override
    def _parse_ckpt_path(self) -> None:
        # LightningCLI would silently replace the configured model by the checkpoint's; a
        # mismatch must be refused instead, and an unreadable file before anything is built.
        self.resume_checkpoint: Optional[dict] = None
        ckpt_path = self.config.get(self.config.get("subcommand") or "", Namespace()).get("ckpt_path")
        if ckpt_path in ("last", "best"):
            # Lightning looks for these in the new run's own, empty folder and quietly starts afresh.
            raise ConfigError(f"--ckpt_path {ckpt_path} is not supported by train.py: pass the .ckpt file, e.g. runs/<project>/<run>/checkpoints/last.ckpt")
        if ckpt_path and ckpt_path not in ("hpc", "registry"):
            self.resume_checkpoint = read_checkpoint(ckpt_path)

    @property
    def _run_config(self) -> Namespace:
        """The parsed config of the subcommand being run."""
        return self.config[self.subcommand] if self.subcommand else self.config

    @override
    def before_instantiate_classes(self) -> None:
        cfg = self._run_config
        self.callback_names = parse_names(cfg.callbacks or "")
        defaults = self._parser(self.subcommand).get_defaults()
        for name in CALLBACKS:
            if name not in self.callback_names and cfg.get(name) != defaults.get(name):
                changed = [k for k, v in vars(cfg[name]).items() if v != defaults[name].get(k)]
                raise ConfigError(
                    f"--{name}.{changed[0] if changed else '*'} was set but the {name!r} callback is not switched on;"
                    f" add it with --callbacks {','.join([*self.callback_names, name])}"
                )
        for flag, neutral in (("gradient_clip_val", None), ("accumulate_grad_batches", 1)):
            if cfg.trainer.get(flag) not in (neutral, 0):
                raise ConfigError(f"--trainer.{flag} does not apply to the GAN's manual optimization; leave it unset")
        self._align_checkpoint_with_metrics(cfg)
        # The networks this config names are the user's choice, so checkpoints of this run (a
        # distill teacher's record, a resume) may name them too.
        allow_classes(str(cfg.model[net].class_path) for net in ("generator", "discriminator") if cfg.model.get(net))
        student = cfg.get("distill", Namespace()).get("student") if "distill" in self.callback_names else None
        if isinstance(student, dict) and isinstance(student.get("class_path"), str):
            allow_classes([student["class_path"]])
        self.plug_in_options = {name: _plain(cfg[name].as_dict()) for name in self.callback_names}
        if self.resume_checkpoint is not None and self.subcommand == "fit":
            check_resumed_plug_ins(cfg, self.resume_checkpoint, self.callback_names, self.plug_in_options)
            continue_run_folder(cfg, Path(cfg.ckpt_path))
        if self.subcommand == "fit":  # only fit writes checkpoints
            refuse_replacing_checkpoints(cfg, self.resume_checkpoint)
        self._configure_wandb(cfg)

    def _align_checkpoint_with_metrics(self, cfg: Namespace) -> None:
        """The best checkpoint can only be chosen on epochs where the monitored metric exists,
        and last.ckpt must be written every epoch however the metric moves."""
        monitor = cfg.checkpoint.monitor or ""
        # ModelCheckpoint(save_last=True) only writes last.ckpt in steps where it also saved a
        # best checkpoint (Lightning 2.6), so with a monitor, last.ckpt would stop at the best
        # epoch; a second callback (see instantiate_trainer) writes it every epoch instead.
        self.last_every_epoch = bool(monitor and cfg.checkpoint.save_last)
        if self.last_every_epoch:
            cfg.checkpoint.save_last = False
        if not monitor.startswith("val/") or monitor == "val/swd":  # val/swd comes from every validation
            return
        if cfg.metrics.every_n_epochs == 0 or (cfg.metrics.features == "none" and monitor in FIDELITY_KEYS):
            raise ConfigError(
                f"--checkpoint.monitor {monitor} needs --metrics.every_n_epochs >= 1"
                + (" and --metrics.features domain or inception" if monitor in FIDELITY_KEYS else "")
                + "; otherwise monitor val/swd"
            )
        every = cfg.metrics.every_n_epochs
        if every > 1 and (cfg.checkpoint.get("every_n_epochs") or 1) % every:
            # ModelCheckpoint refuses an epoch whose metrics lack its monitor
            cfg.checkpoint.every_n_epochs = every

    @override
    def after_instantiate_classes(self) -> None:
        # Checked here, before the Trainer starts its logger, so that a refused run leaves no run folder.
        shape = getattr(self.datamodule, "sample_shape", None)
        if shape is not None:
            self.model.check_sample_shape(tuple(shape))
        metrics = self._run_config.metrics
        if metrics.every_n_epochs > 0:
            check_metrics_setup(self.datamodule, metrics.features, metrics.inception_weights)
        for cb in self.trainer.callbacks:  # e.g. prune: layer names, schedule against max_epochs
            if callable(getattr(cb, "check_setup", None)):
                cb.check_setup(self.trainer, self.model, self.datamodule)
        if self.resume_checkpoint is not None:
            problem = self.model.checkpoint_mismatch(self.resume_checkpoint)
            if problem:
                raise CheckpointError(problem)

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand == "fit":  # before W&B resumes the run and the config is saved: a refused run touches neither
            self.folder_lock.lock_configured(self.trainer)
        try:
            # here, not in after_instantiate_classes: only a CLI that runs may start a W&B run
            start_wandb_or_go_offline(self.trainer, self._run_config)
            super()._run_subcommand(subcommand)
        finally:
            self.folder_lock.release()  # also when the run failed before Lightning's hooks ran

    def _configure_wandb(self, cfg: Namespace) -> None:
        run = describe_run(
            _short_name(cfg.model.generator.class_path, "Generator"), _short_name(cfg.data.class_path, "DataModule"), cfg.model.loss, self.callback_names
        )
        configure_wandb(cfg, run)

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        plug_ins = [CALLBACKS[name](**vars(self._run_config[name]).copy()) for name in self.callback_names]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        plugins = trainer_config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            trainer_config["plugins"] = [*plugins, AtomicCheckpointIO()]
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        if self.last_every_epoch:
            best = next(cb for cb in extra if isinstance(cb, ModelCheckpoint))
            # monitor=None keeps the newest checkpoint, under one fixed name, every epoch
            extra.append(ModelCheckpoint(dirpath=best.dirpath, filename="last", save_top_k=1, enable_version_counter=False))
        if trainer_config.get("enable_checkpointing") is False:
            # Lightning refuses a ModelCheckpoint when checkpointing is off; ours is a default, not the user's.
            extra = [cb for cb in extra if not isinstance(cb, ModelCheckpoint)]
        self.folder_lock = CheckpointFolderLock()  # one writer per checkpoint folder
        trainer = self._instantiate_trainer(trainer_config, [self.folder_lock, *extra, *plug_ins, PlugInRecord(self.plug_in_options)])
        for cb in trainer.callbacks:
            if isinstance(cb, InterruptCheckpoint):
                cb.argv = self.argv
        return trainer


def peer_stopped(exc: BaseException) -> bool:
    """True when ``exc`` is a collective operation failing because another rank exited."""
    import torch.distributed as dist

    text = str(exc)
    return (dist.is_available() and isinstance(exc, getattr(dist, "DistError", ()))) or "Connection closed by peer" in text or "remote worker" in text


def with_default_subcommand(argv: list[str]) -> list[str]:
    """``train.py [flags]`` means ``train.py fit [flags]``; ``--help`` shows fit's options."""
    if argv and argv[0] in SUBCOMMANDS:
        return argv
    return ["fit", *argv]


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None:
        # Rewritten in place rather than passed as args: DDP re-launches this script with sys.argv.
        sys.argv[1:] = with_default_subcommand(sys.argv[1:])

    def fit() -> None:
        args = check_config_args(sys.argv[1:] if argv is None else argv)  # before jsonargparse's usage page
        if argv is None:
            sys.argv[1:] = args  # DDP re-launches with sys.argv: its ranks must find the same preset files
        GANLightningCLI(args=None if argv is None else with_default_subcommand(args))

    # MisconfigurationException: Lightning's own one-line refusals of a Trainer setting
    try:
        return run(fit, also=(MisconfigurationException,))
    except SIGTERMException:  # outside a training batch (e.g. in validation): Lightning would exit 0
        print("error: training stopped by SIGTERM (see above for the checkpoint)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except RuntimeError as exc:
        if not peer_stopped(exc):
            raise
        # The process that failed has printed its own sentence; a page of collective-library
        # traceback from every other rank would bury it.
        print("error: another process of this distributed run stopped (its error is printed above), so this one stopped too", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
