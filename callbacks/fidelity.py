"""Sample quality measured during training (FID & co., mode coverage), after validation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pytorch_lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from gan_lightning.errors import ConfigError, GANLightningError
from gan_lightning.quality.evaluation import Features, RealSplit, check_metrics_setup, check_real_split, evaluate_generator, real_samples
from gan_lightning.quality.features import domain_classifier


class EvaluationError(GANLightningError, RuntimeError):
    """Computing the metrics failed on rank 0; raised on every rank."""


class FidelityEvaluation(Callback):
    """Every ``every_n_epochs`` epochs, after validation, logs ``val/fid``, ``val/kid``, ``val/is``,
    ``val/precision``, ``val/recall`` and ``val/modes`` (+ ``val/mode_kl``, ``val/high_quality``) of
    ``num_fake`` samples from fixed latents against ``num_real`` samples of the ``real_split`` split.

    Rank 0 computes and broadcasts, so every rank logs the same numbers and ModelCheckpoint can
    monitor them. The feature space, sample counts, split and the domain classifier's held-out
    accuracy go to the loggers' config under ``metrics``.

    Args:
        every_n_epochs: interval in epochs; 0 turns the evaluation off.
        features: ``domain`` (a classifier trained on the labelled training data, cached; offline),
            ``inception`` (standard InceptionV3 FID; needs the weights file or a network) or ``none``
            (mode coverage only).
        num_fake: generated samples per evaluation.
        num_real: at most this many real samples, the first ones of ``real_split``.
        real_split: the real reference set: ``val`` (the validation split; comparable with runs made
            before this option), ``train`` (the training split) or ``all`` (train then val); a larger
            set makes FID differences between runs measurable on small data.
        seed: seed of the fixed latents.
        inception_weights: path of the InceptionV3 FID weights file (pt_inception-2015-12-05).
        domain_cache_dir: where domain classifiers are cached (default ~/.cache/gan-lightning/domain).
        domain_epochs: training epochs of the domain classifier.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        features: Features = "domain",
        num_fake: int = 1000,
        num_real: int = 1000,
        real_split: RealSplit = "val",
        seed: int = 0,
        inception_weights: Optional[str] = None,
        domain_cache_dir: Optional[str] = None,
        domain_epochs: int = 5,
    ) -> None:
        if every_n_epochs < 0 or num_fake < 2 or num_real < 2:
            raise ConfigError("--metrics.every_n_epochs must be >= 0 and --metrics.num_fake/--metrics.num_real >= 2")
        if domain_epochs < 1:  # an untrained classifier's features would make FID/KID meaningless, silently
            raise ConfigError(f"--metrics.domain_epochs must be an integer >= 1, got {domain_epochs}")
        check_real_split(real_split)  # jsonargparse checks the Literal, Python callers do not
        self.every_n_epochs = every_n_epochs
        self.features = features
        self.num_fake = num_fake
        self.num_real = num_real
        self.real_split = real_split
        self.seed = seed
        self.inception_weights = inception_weights
        self.domain_cache_dir = Path(domain_cache_dir) if domain_cache_dir else None  # None: $GAN_LIGHTNING_CACHE/domain when used
        self.domain_epochs = domain_epochs
        self.domain_weights: Optional[str] = None
        self.last: Optional[dict] = None  # the last measurement and how it was made (exports' model cards read it)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if self.every_n_epochs == 0 or data is None:
            return
        if check_metrics_setup(data, self.features, self.inception_weights):
            if trainer.is_global_zero:  # rank 0 trains it (or finds it cached); the others then read the cache
                domain_classifier(data, self.domain_cache_dir, epochs=self.domain_epochs)
            trainer.strategy.barrier()
            path, self._record = domain_classifier(data, self.domain_cache_dir, epochs=self.domain_epochs)
            self.domain_weights = str(path)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs == 0:
            return
        described = {
            "features": self.features,
            "num_fake": self.num_fake,
            "num_real": min(self.num_real, len(real_samples(trainer.datamodule, self.real_split))),
            "split": self.real_split,
            "seed": self.seed,
        }
        if self.domain_weights is not None:
            described["domain_accuracy"] = self._record["accuracy"]
        for logger in trainer.loggers:
            logger.log_hyperparams({"metrics": described})

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs == 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        values: dict = {}
        if trainer.is_global_zero:
            try:
                values = evaluate_generator(
                    pl_module, trainer.datamodule, self.features, self.num_fake, self.num_real, self.seed,
                    self.domain_weights, self.inception_weights, self.real_split,
                )
            except Exception as exc:  # passed to every rank, which would otherwise wait here forever
                values = {"error": f"evaluating the generator failed ({type(exc).__name__}: {exc})"}
        values = trainer.strategy.broadcast(values, src=0)
        if "error" in values:
            raise EvaluationError(values["error"])
        logged = {f"val/{k}": v for k, v in values.items() if not k.startswith("num_")}
        self.last = {
            "epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": dict(logged), "features": self.features,
            "num_fake": int(values["num_fake"]), "num_real": int(values["num_real"]), "real_split": self.real_split, "seed": self.seed,
        }
        if "val/fid" in logged:
            pl_module.log("val/fid", logged.pop("val/fid"), prog_bar=True)
        pl_module.log_dict(logged)

    @override
    def state_dict(self) -> dict:
        return {"last": self.last}

    @override
    def load_state_dict(self, state_dict: dict) -> None:
        self.last = state_dict.get("last")


def measured_modes(trainer: Trainer) -> tuple[Optional[int], Optional[float]]:
    """The epoch and value of the run's latest ``val/modes``; (None, None) when none was measured."""
    fidelity = next((cb for cb in trainer.callbacks if isinstance(cb, FidelityEvaluation)), None)
    last = fidelity.last if fidelity is not None else None
    if not last or "val/modes" not in last["metrics"]:
        return None, None
    return last["epoch"], float(last["metrics"]["val/modes"])
