"""Sample quality of a generator, in one function used during training and by the evaluate command."""

from __future__ import annotations

from typing import Literal, Optional, get_args

import torch
from torch.utils.data import ConcatDataset, Dataset

from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.errors import ConfigError
from gan_lightning.quality.features import inception_weights_or_fail, load_domain_classifier
from gan_lightning.quality.fidelity import FIDELITY_NAMES, check_inception_input, fidelity_metrics
from gan_lightning.quality.mode_coverage import class_histogram_stats, gmm_mode_stats

Features = Literal["domain", "inception", "none"]
RealSplit = Literal["val", "train", "all"]
REAL_SPLITS: tuple[str, ...] = get_args(RealSplit)


def check_real_split(split: str) -> None:
    if split not in REAL_SPLITS:
        raise ConfigError(f"--metrics.real_split must be one of {', '.join(REAL_SPLITS)}, got {split!r}")


def real_samples(datamodule, split: RealSplit = "val") -> Dataset:
    """The real reference set of FID & co. and mode coverage: the datamodule's ``val_set``,
    ``train_set``, or ``all`` (train then val)."""
    check_real_split(split)
    if split == "val":
        return datamodule.val_set
    if split == "train":
        return datamodule.train_set
    return ConcatDataset([datamodule.train_set, datamodule.val_set])


def evaluate_generator(
    module,
    datamodule,
    features: Features = "domain",
    num_fake: int = 1000,
    num_real: int = 1000,
    seed: int = 0,
    domain_weights: Optional[str] = None,
    inception_weights: Optional[str] = None,
    real_split: RealSplit = "val",
) -> dict[str, float]:
    """FID/KID/IS/precision/recall in the named feature space, plus mode coverage where the
    data defines modes (``centers``/``std``: the Gaussian mixture) or classes (the domain classifier),
    against at most ``num_real`` samples of ``real_split`` (see :func:`real_samples`).

    Leaves the global RNG as it found it, so that measuring does not change the training run."""
    with torch.random.fork_rng():
        return _evaluate_generator(
            module, datamodule, features, num_fake, num_real, seed, domain_weights, inception_weights, real_split
        )


def _evaluate_generator(module, datamodule, features, num_fake, num_real, seed, domain_weights, inception_weights, real_split):
    fake = module.generate(num_fake, seed=seed)
    return evaluate_samples(fake, datamodule, features, num_real, domain_weights, inception_weights, real_split)


def evaluate_samples(
    fake: torch.Tensor,
    datamodule,
    features: Features = "domain",
    num_real: int = 1000,
    domain_weights: Optional[str] = None,
    inception_weights: Optional[str] = None,
    real_split: RealSplit = "val",
) -> dict[str, float]:
    """The metrics of :func:`evaluate_generator` for samples made elsewhere (an exported file,
    another runtime): ``fake`` in the data's format and [-1, 1] scale, scored against at most
    ``num_real`` samples of ``real_split`` exactly as a generator's own samples are, so a file
    that reproduces its checkpoint's outputs reproduces its checkpoint's numbers."""
    real, labels = stack_samples(real_samples(datamodule, real_split), num_real)
    on_gpu = fake.is_cuda  # torch-fidelity then extracts features on the GPU too
    fake = fake.float().cpu()
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


