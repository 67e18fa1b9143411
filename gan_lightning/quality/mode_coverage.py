"""Mode-collapse measures, as pure torch functions (no Lightning, no logging).

* :func:`gmm_mode_stats` — modes covered, share of high-quality samples and the KL of the
  mode distribution, for the 2-D Gaussian-mixture toy (8-mode ring of Unrolled GAN, 25-mode
  grid of VEEGAN).
* :func:`class_histogram_stats` — classes covered and class KL for labelled image data,
  from the logits a domain classifier gives the generated samples.

Conventions shared by both, so that a ring, a grid and a digit set read the same way:

* **Covered.** A mode (class) is covered when it receives at least ``min_count`` samples.
  The default is ``max(1, ceil(0.2 * n / k))``: a fifth of what a perfectly uniform
  generator would put there. With the VEEGAN protocol (2500 samples, 25 grid modes) that
  is exactly the 20 samples used in the literature, and it scales with ``n`` so that
  evaluating on more samples does not inflate coverage with stray points.
* **KL.** ``KL(generated || real)`` over modes (classes), the direction of the mode-KL
  numbers reported by Unrolled GAN / VEEGAN / PacGAN: a generator that emits a single one
  of ``k`` equally likely modes scores ``log k``, and a perfect one scores 0. Both
  distributions are smoothed by ``EPS`` so that a real distribution with empty modes
  still gives a finite number.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from gan_lightning.errors import ConfigError

# Share of the uniform per-mode count that a mode needs to count as covered (see module doc).
COVERED_FRACTION_OF_UNIFORM = 0.2
# Smoothing of both distributions in the KL; small enough to move log(k) by < 1e-5.
EPS = 1e-6


def default_min_count(num_samples: int, num_modes: int) -> int:
    """Samples a mode needs to count as covered: ``max(1, ceil(0.2 * n / k))``."""
    # round() first so that 0.2 * 2500 / 25 == 20.000000000000004 does not become 21.
    return max(1, math.ceil(round(COVERED_FRACTION_OF_UNIFORM * num_samples / num_modes, 9)))


def _smoothed_kl(generated: Tensor, real: Tensor) -> float:
    """KL(generated || real) of two probability vectors, each smoothed by EPS and renormalised."""
    p = (generated.double() + EPS) / (1.0 + EPS * generated.numel())
    q = (real.double() + EPS) / (1.0 + EPS * real.numel())
    return float((p * (p / q).log()).sum().clamp_min(0.0))


def _proportions(values: Tensor, k: int, name: str) -> Tensor:
    """Validate non-negative weights (counts or shares) of length k and normalise them."""
    values = torch.as_tensor(values).detach().double().cpu()
    if values.shape != (k,):
        raise ConfigError(f"{name} must have shape ({k},), one entry per mode, got {tuple(values.shape)}")
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ConfigError(f"{name} must be finite, non-negative and not all zero")
    return values / values.sum()


def _check_min_count(min_count: Optional[int], n: int, k: int) -> int:
    if min_count is None:
        return default_min_count(n, k)
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"min_count must be an integer >= 1, got {min_count!r}")
    return min_count


def gmm_mode_stats(
    samples: Tensor,
    centers: Tensor,
    std: float,
    threshold: float = 3.0,
    min_count: Optional[int] = None,
    real_proportions: Optional[Tensor] = None,
) -> dict:
    """Mode coverage of generated 2-D points, following the Unrolled-GAN / VEEGAN protocol.

    Each sample is assigned to its nearest center; it is *high quality* when its Euclidean
    distance to that center is at most ``threshold * std`` (VEEGAN: three standard
    deviations). Samples that are not finite are never high quality.

    Args:
        samples: generated points ``(n, d)``, usually ``d == 2``.
        centers: mode centers ``(k, d)``, e.g. ``GaussianMixtureDataModule.centers``.
        std: standard deviation of every mode (``GaussianMixtureDataModule.std``).
        threshold: high-quality radius in standard deviations.
        min_count: high-quality samples a mode needs to count as covered; default
            ``max(1, ceil(0.2 * n / k))`` (20 for 2500 samples on the 25-mode grid).
        real_proportions: weights of the modes in the real data (counts or shares, length
            k); default uniform, as the bundled mixture has equal weights.

    Returns:
        ``modes``: number of covered modes (int, 0..k). ``num_modes``: k.
        ``high_quality``: share of all n samples that are high quality, in [0, 1].
        ``kl``: KL(high-quality samples over modes || real mode distribution), smoothed;
        ``log k`` for a one-mode generator against uniform modes, ~0 for a perfect one, and
        NaN when no sample is high quality (there is no distribution to compare).
        ``min_count``: the coverage threshold that was applied.
    """
    samples = torch.as_tensor(samples).detach()
    centers = torch.as_tensor(centers).detach()
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ConfigError(
            f"samples (n, d) and centers (k, d) must be 2-D with the same d, got "
            f"{tuple(samples.shape)} and {tuple(centers.shape)}"
        )
    n, k = samples.shape[0], centers.shape[0]
    if n == 0 or k == 0:
        raise ConfigError(f"mode statistics need at least one sample and one center, got n={n}, k={k}")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ConfigError(f"std must be a finite number > 0, got {std!r}")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ConfigError(f"threshold must be a finite number > 0, got {threshold!r}")
    min_count = _check_min_count(min_count, n, k)
    real = torch.full((k,), 1.0 / k, dtype=torch.float64)
    if real_proportions is not None:
        real = _proportions(real_proportions, k, "real_proportions")

    # float64 and no matrix-multiply shortcut: |x|^2 - 2xc + |c|^2 cancels badly when a
    # point 0.06 from a center lies at radius 2, which would blur the 3-std boundary.
    x = samples.double()
    distances = torch.cdist(x, centers.to(x), compute_mode="donot_use_mm_for_euclid_dist")
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = torch.isfinite(x).all(dim=1) & (nearest_distance <= threshold * std)

    counts = torch.bincount(nearest[high_quality].cpu(), minlength=k).double()
    num_high_quality = int(counts.sum())
    kl = _smoothed_kl(counts / num_high_quality, real) if num_high_quality else float("nan")
    return {
        "modes": int((counts >= min_count).sum()),
        "num_modes": k,
        "high_quality": num_high_quality / n,
        "kl": kl,
        "min_count": min_count,
    }


def class_histogram_stats(
    fake_logits: Tensor,
    real_labels: Optional[Tensor],
    num_classes: int,
    *,
    real_proportions: Optional[Tensor] = None,
    min_count: Optional[int] = None,
) -> dict:
    """Class histogram of generated images under a domain classifier.

    The predicted class of each generated sample is the argmax of its logits, as in the
    stacked-MNIST mode counting of Unrolled GAN / VEEGAN / PacGAN (there with one digit
    classifier per channel; here one classifier over ``num_classes``).

    Args:
        fake_logits: classifier logits of the generated samples, ``(n, num_classes)``.
        real_labels: labels ``(m,)`` of the real split, in ``[0, num_classes)``; pass None
            and give ``real_proportions`` instead when only the class shares are known.
        num_classes: number of classes c.
        real_proportions: class weights of the real data (counts or shares, length c).
        min_count: generated samples a class needs to count as covered; default
            ``max(1, ceil(0.2 * n / c))``, i.e. 2% of the samples for 10 classes, so that a
            few misclassified samples of a collapsed generator do not count as coverage.

    Returns:
        ``classes_covered``: classes with at least ``min_count`` samples. ``num_classes``: c.
        ``class_kl``: KL(generated histogram || real class distribution), smoothed; about
        ``log c`` when every sample falls in one class of a balanced set, ~0 when the
        histogram matches the real one. ``histogram``: per-class shares of the n samples
        (a list of c floats summing to 1). ``min_count``: the threshold that was applied.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    fake_logits = torch.as_tensor(fake_logits).detach()
    if fake_logits.dim() != 2 or fake_logits.shape[1] != num_classes:
        raise ConfigError(
            f"fake_logits must have shape (n, {num_classes}), got {tuple(fake_logits.shape)}"
        )
    n = fake_logits.shape[0]
    if n == 0:
        raise ConfigError("fake_logits holds no samples; class statistics need at least one")
    if (real_labels is None) == (real_proportions is None):
        raise ConfigError("give exactly one of real_labels and real_proportions")
    if real_labels is not None:
        real_labels = torch.as_tensor(real_labels).detach().cpu()
        if real_labels.dim() != 1 or real_labels.numel() == 0:
            raise ConfigError(f"real_labels must be a non-empty 1-D tensor, got shape {tuple(real_labels.shape)}")
        if real_labels.is_floating_point() or real_labels.is_complex():
            raise ConfigError(f"real_labels must hold integer class indices, got dtype {real_labels.dtype}")
        if real_labels.min() < 0 or real_labels.max() >= num_classes:
            raise ConfigError(f"real_labels must lie in [0, {num_classes}), got values in "
                              f"[{int(real_labels.min())}, {int(real_labels.max())}]")
        real = _proportions(torch.bincount(real_labels.long(), minlength=num_classes), num_classes, "real_labels")
    else:
        real = _proportions(real_proportions, num_classes, "real_proportions")
    min_count = _check_min_count(min_count, n, num_classes)

    counts = torch.bincount(fake_logits.argmax(dim=1).cpu(), minlength=num_classes).double()
    histogram = counts / n
    return {
        "classes_covered": int((counts >= min_count).sum()),
        "num_classes": num_classes,
        "class_kl": _smoothed_kl(histogram, real),
        "histogram": histogram.tolist(),
        "min_count": min_count,
    }
