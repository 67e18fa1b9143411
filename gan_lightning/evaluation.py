"""Sample quality of a generator, in one function used during training and by the evaluate command."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from datamodules.base import stack_samples
from gan_lightning.errors import ConfigError, GANLightningError
from gan_lightning.features import DEFAULT_CACHE_DIR, domain_classifier, inception_weights_or_fail, load_domain_classifier
from gan_lightning.fidelity import FIDELITY_NAMES, check_inception_input, fidelity_metrics
from gan_lightning.mode_coverage import class_histogram_stats, gmm_mode_stats

Features = Literal["domain", "inception", "none"]


class EvaluationError(GANLightningError, RuntimeError):
    """Computing the metrics failed on rank 0; raised on every rank."""


def evaluate_generator(
    module,
    datamodule,
    features: Features = "domain",
    num_fake: int = 1000,
    num_real: int = 1000,
    seed: int = 0,
    domain_weights: Optional[str] = None,
    inception_weights: Optional[str] = None,
) -> dict[str, float]:
    """FID/KID/IS/precision/recall in the named feature space, plus mode coverage where the
    data defines modes (``centers``/``std``: the Gaussian mixture) or classes (the domain classifier).

    Leaves the global RNG as it found it, so that measuring does not change the training run."""
    with torch.random.fork_rng():
        return _evaluate_generator(module, datamodule, features, num_fake, num_real, seed, domain_weights, inception_weights)


def _evaluate_generator(module, datamodule, features, num_fake, num_real, seed, domain_weights, inception_weights):
    real, labels = stack_samples(datamodule.val_set, num_real)  # the fixed validation split
    fake = module.generate(num_fake, seed=seed)
    on_gpu = fake.is_cuda  # torch-fidelity then extracts features on the GPU too
    fake = fake.cpu()
    out: dict[str, float] = {"num_real": float(len(real)), "num_fake": float(len(fake))}
    if features != "none" and not torch.isfinite(fake).all():
        # A diverged generator is measured as the worst possible, not as a crash mid-training.
        out.update({name: float("nan") for name in FIDELITY_NAMES})
    elif features != "none":
        out.update(fidelity_metrics(fake, real, features, domain_weights, inception_weights, cuda=on_gpu))
    centers = getattr(datamodule, "centers", None)
    if centers is not None:
        stats = gmm_mode_stats(fake.view(len(fake), -1), centers, float(datamodule.std))
        out.update(modes=float(stats["modes"]), high_quality=stats["high_quality"], mode_kl=stats["kl"])
    elif domain_weights is not None:
        with torch.no_grad():
            logits = load_domain_classifier(domain_weights)(fake)[1]
        stats = class_histogram_stats(logits, labels, datamodule.num_classes)
        out.update(modes=float(stats["classes_covered"]), mode_kl=stats["class_kl"])
    return out


def check_metrics_setup(datamodule, features: Features, inception_weights: Optional[str] = None) -> bool:
    """Refuse, before any training, settings that cannot be measured; return whether the domain
    classifier is needed (for the domain features, and to count generated classes when the data
    has labels but no mode geometry)."""
    labelled = (getattr(datamodule, "num_classes", None) or 0) > 1
    if features == "domain" and not labelled:
        raise ConfigError(
            f"{type(datamodule).__name__} has no class labels to train the domain features on: use"
            " --metrics.features inception, or --metrics.features none with --checkpoint.monitor val/swd"
        )
    if features == "inception":
        check_inception_input(tuple(datamodule.sample_shape))
        inception_weights_or_fail(inception_weights)
    return labelled and (features == "domain" or getattr(datamodule, "centers", None) is None)


class FidelityEvaluation(Callback):
    """Every ``every_n_epochs`` epochs, after validation, logs ``val/fid``, ``val/kid``, ``val/is``,
    ``val/precision``, ``val/recall`` and ``val/modes`` (+ ``val/mode_kl``, ``val/high_quality``) of
    ``num_fake`` samples from fixed latents against ``num_real`` samples of the validation split.

    Rank 0 computes and broadcasts, so every rank logs the same numbers and ModelCheckpoint can
    monitor them. The feature space, sample counts, split and the domain classifier's held-out
    accuracy go to the loggers' config under ``metrics``.

    Args:
        every_n_epochs: interval in epochs; 0 turns the evaluation off.
        features: ``domain`` (a classifier trained on the labelled training data, cached; offline),
            ``inception`` (standard InceptionV3 FID; needs the weights file or a network) or ``none``
            (mode coverage only).
        num_fake: generated samples per evaluation.
        num_real: at most this many validation samples.
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
        seed: int = 0,
        inception_weights: Optional[str] = None,
        domain_cache_dir: Optional[str] = None,
        domain_epochs: int = 5,
    ) -> None:
        if every_n_epochs < 0 or num_fake < 2 or num_real < 2:
            raise ConfigError("--metrics.every_n_epochs must be >= 0 and --metrics.num_fake/--metrics.num_real >= 2")
        self.every_n_epochs = every_n_epochs
        self.features = features
        self.num_fake = num_fake
        self.num_real = num_real
        self.seed = seed
        self.inception_weights = inception_weights
        self.domain_cache_dir = Path(domain_cache_dir) if domain_cache_dir else DEFAULT_CACHE_DIR
        self.domain_epochs = domain_epochs
        self.domain_weights: Optional[str] = None

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

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs == 0:
            return
        described = {
            "features": self.features,
            "num_fake": self.num_fake,
            "num_real": min(self.num_real, len(trainer.datamodule.val_set)),
            "split": "val",
            "seed": self.seed,
        }
        if self.domain_weights is not None:
            described["domain_accuracy"] = self._record["accuracy"]
        for logger in trainer.loggers:
            logger.log_hyperparams({"metrics": described})

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs == 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        values: dict = {}
        if trainer.is_global_zero:
            try:
                values = evaluate_generator(
                    pl_module, trainer.datamodule, self.features, self.num_fake, self.num_real, self.seed,
                    self.domain_weights, self.inception_weights,
                )
            except Exception as exc:  # passed to every rank, which would otherwise wait here forever
                values = {"error": f"evaluating the generator failed ({type(exc).__name__}: {exc})"}
        values = trainer.strategy.broadcast(values, src=0)
        if "error" in values:
            raise EvaluationError(values["error"])
        logged = {f"val/{k}": v for k, v in values.items() if not k.startswith("num_")}
        if "val/fid" in logged:
            pl_module.log("val/fid", logged.pop("val/fid"), prog_bar=True)
        pl_module.log_dict(logged)
