"""FID, KID, Inception Score and precision/recall of generated samples against real ones,
computed by torch-fidelity in a named feature space (see ``gan_lightning.quality.features``)."""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch_fidelity
from torch.utils.data import Dataset

from gan_lightning.errors import ConfigError
from gan_lightning.quality.features import DOMAIN_EXTRACTOR, inception_weights_or_fail

FeatureSpace = Literal["domain", "inception"]

# torch-fidelity's result keys, under the stable names logged as val/<name>.
_RESULT_NAMES = {
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid",
    "kernel_inception_distance_std": "kid_std",
    "inception_score_mean": "is",
    "inception_score_std": "is_std",
    "precision": "precision",
    "recall": "recall",
}

FIDELITY_NAMES = tuple(_RESULT_NAMES.values())


class SampleSet(Dataset):
    """A tensor of samples as the Dataset torch-fidelity reads (one sample per item, no label)."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return self.samples.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.samples[i]


def check_inception_input(sample_shape: tuple[int, ...]) -> None:
    if len(sample_shape) != 3 or sample_shape[0] not in (1, 3):
        raise ConfigError(f"--metrics.features inception needs 1- or 3-channel images, got samples of shape {tuple(sample_shape)}")


def to_inception_input(samples: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to the uint8 RGB that the Inception extractor requires (grey is repeated)."""
    check_inception_input(tuple(samples.shape[1:]))
    images = ((samples.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images


def fidelity_metrics(
    fake: torch.Tensor,
    real: torch.Tensor,
    features: FeatureSpace = "domain",
    domain_weights: Optional[str] = None,
    inception_weights: Optional[str] = None,
    kid_subset_size: int = 1000,
    cuda: bool = False,
) -> dict[str, float]:
    """``fid``, ``kid`` (+``kid_std``), ``is`` (+``is_std``, of the fakes), ``precision``, ``recall``.

    ``fake`` and ``real`` are samples in the data's format and [-1, 1] scale; the feature
    space decides what "similar" means, so every number must be reported with it.
    """
    if min(len(fake), len(real)) < 2:
        raise ConfigError(f"FID needs at least 2 real and 2 generated samples, got {len(real)} and {len(fake)}")
    if features == "domain":
        if domain_weights is None:
            raise ConfigError("the domain feature space needs its classifier file (see gan_lightning.quality.features.domain_classifier)")
        extractor = {"feature_extractor": DOMAIN_EXTRACTOR, "feature_extractor_weights_path": domain_weights}
    elif features == "inception":
        fake, real = to_inception_input(fake), to_inception_input(real)
        extractor = {"feature_extractor": "inception-v3-compat", "feature_extractor_weights_path": inception_weights_or_fail(inception_weights)}
    else:
        raise ConfigError(f"--metrics.features must be domain or inception, got {features!r}")
    result = torch_fidelity.calculate_metrics(
        input1=SampleSet(fake.cpu()),
        input2=SampleSet(real.cpu()),
        fid=True,
        kid=True,
        isc=True,
        prc=True,
        # Subsets smaller than the sets, or all of KID's subsets would be the same and kid_std 0.
        kid_subset_size=max(2, min(kid_subset_size, len(fake) // 2, len(real) // 2)),
        cuda=cuda,
        # no worker processes and no feature cache on disk: the inputs change every evaluation
        save_cpu_ram=True,
        cache=False,
        verbose=False,
        **extractor,
    )
    return {name: float(result[key]) for key, name in _RESULT_NAMES.items()}
