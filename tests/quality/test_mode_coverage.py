"""Mode-collapse measures on the geometry training uses: the ring and grid of
GaussianMixtureDataModule, and logits of a 10-class domain classifier."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.gaussian_mixture import GaussianMixtureDataModule
from gan_lightning.errors import ConfigError
from gan_lightning.quality.mode_coverage import class_histogram_stats, default_min_count, gmm_mode_stats

N = 2500  # the VEEGAN evaluation size


@pytest.fixture(scope="module")
def ring():
    return GaussianMixtureDataModule(layout="ring")


@pytest.fixture(scope="module")
def grid():
    return GaussianMixtureDataModule(layout="grid")


def draw(dm, modes, n=N, seed=0):
    """n points from the given modes of dm, in equal numbers (round robin)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(modes)[torch.arange(n) % len(modes)]
    return dm.centers[labels] + dm.std * torch.randn(n, 2, generator=g)


def stats(dm, samples, **kwargs):
    return gmm_mode_stats(samples, dm.centers, dm.std, **kwargs)


# ---------------------------------------------------------------- Gaussian mixture


def test_generator_emitting_one_ring_mode_counts_as_one_mode(ring):
    s = stats(ring, draw(ring, [2]))
    assert s["modes"] == 1 and s["num_modes"] == 8
    # within 3 std of a 2-D isotropic Gaussian: 1 - exp(-4.5) = 0.989
    assert s["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert s["kl"] == pytest.approx(math.log(8), abs=1e-3)


def test_collapse_with_a_few_stray_good_samples_still_counts_one_mode(ring):
    samples = draw(ring, [0])
    samples[:5] = ring.centers[1:6]  # five perfect points in five other modes
    assert stats(ring, samples)["modes"] == 1
    assert stats(ring, samples, min_count=1)["modes"] == 6


def test_samples_from_all_ring_modes_count_eight_with_kl_near_zero(ring):
    s = stats(ring, draw(ring, range(8)))
    assert s["modes"] == 8
    assert s["high_quality"] > 0.97
    assert s["kl"] < 0.01


def test_real_training_data_covers_every_mode(ring, grid):
    for dm, k in ((ring, 8), (grid, 25)):
        dm.setup("fit")
        points = torch.stack([dm.train_set[i][0] for i in range(N)])
        s = stats(dm, points)
        assert (s["modes"], s["num_modes"]) == (k, k)
        assert s["high_quality"] > 0.97 and s["kl"] < 0.05


def test_uniform_noise_over_the_square_is_rarely_high_quality(ring):
    noise = torch.rand(N, 2, generator=torch.Generator().manual_seed(1)) * 5 - 2.5
    s = stats(ring, noise)
    # eight discs of radius 0.06 cover 0.36% of the 5x5 square
    assert s["high_quality"] < 0.02
    assert s["modes"] == 0


def test_grid_has_25_modes_and_counts_a_half_collapsed_generator(grid):
    full = stats(grid, draw(grid, range(25)))
    assert (full["modes"], full["num_modes"]) == (25, 25)
    assert full["kl"] < 0.01
    half = stats(grid, draw(grid, range(0, 25, 2)))  # 13 of the 25 modes
    assert half["modes"] == 13
    assert half["kl"] == pytest.approx(math.log(25 / 13), abs=1e-3)


def test_points_just_beyond_threshold_std_are_not_high_quality(ring):
    radius = 3.0 * ring.std
    angle = torch.tensor(0.7)
    direction = torch.stack([angle.cos(), angle.sin()])
    inside = ring.centers + radius * (1 - 1e-3) * direction
    outside = ring.centers + radius * (1 + 1e-3) * direction
    assert stats(ring, inside, min_count=1)["high_quality"] == 1.0
    assert stats(ring, outside, min_count=1)["high_quality"] == 0.0
    # a wider threshold takes the same points in
    assert stats(ring, outside, threshold=3.1, min_count=1)["high_quality"] == 1.0


def test_min_count_default_is_veegan_20_of_2500_on_the_grid(grid):
    assert default_min_count(2500, 25) == 20
    assert default_min_count(3, 25) == 1
    samples = draw(grid, range(24), n=N - 20)
    for short, expected in ((19, 24), (20, 25)):
        extra = draw(grid, [24], n=short, seed=2)
        extra = grid.centers[24] + 0.1 * (extra - grid.centers[24])  # surely high quality
        s = stats(grid, torch.cat([samples[: N - short], extra]))
        assert s["min_count"] == 20
        assert s["modes"] == expected


def test_explicit_min_count_is_respected(ring):
    samples = torch.cat([draw(ring, [0], n=100), draw(ring, [1], n=10, seed=3)])
    samples[100:] = ring.centers[1]
    assert stats(ring, samples, min_count=10)["modes"] == 2
    assert stats(ring, samples, min_count=11)["modes"] == 1


def test_kl_is_against_the_real_proportions_when_given(ring):
    weights = torch.tensor([4.0, 1, 1, 1, 1, 1, 1, 0])  # counts, not shares
    modes = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    samples = draw(ring, modes, n=2000)
    against_real = stats(ring, samples, real_proportions=weights)
    assert against_real["kl"] < 0.01
    assert stats(ring, samples)["kl"] > 0.1  # the same samples against uniform modes
    assert against_real["modes"] == 7


def test_kl_is_nan_and_no_modes_when_nothing_is_high_quality(ring):
    s = stats(ring, torch.full((10, 2), 10.0))
    assert s["modes"] == 0 and s["high_quality"] == 0.0
    assert math.isnan(s["kl"])


def test_non_finite_samples_are_never_high_quality(ring):
    samples = draw(ring, range(8), n=80)
    samples[:40] = float("nan")
    samples[40:41] = float("inf")
    s = stats(ring, samples, min_count=1)
    finite = stats(ring, samples[41:], min_count=1)
    assert s["high_quality"] == pytest.approx(finite["high_quality"] * 39 / 80)
    assert s["modes"] == finite["modes"]


@pytest.mark.parametrize(
    "samples, centers, std, kwargs",
    [
        (torch.zeros(10, 3), torch.zeros(8, 2), 0.1, {}),
        (torch.zeros(10), torch.zeros(8, 2), 0.1, {}),
        (torch.zeros(0, 2), torch.zeros(8, 2), 0.1, {}),
        (torch.zeros(10, 2), torch.zeros(0, 2), 0.1, {}),
        (torch.zeros(10, 2), torch.zeros(8, 2), 0.0, {}),
        (torch.zeros(10, 2), torch.zeros(8, 2), -1.0, {}),
        (torch.zeros(10, 2), torch.zeros(8, 2), 0.1, {"threshold": 0.0}),
        (torch.zeros(10, 2), torch.zeros(8, 2), 0.1, {"min_count": 0}),
        (torch.zeros(10, 2), torch.zeros(8, 2), 0.1, {"real_proportions": torch.ones(7)}),
        (torch.zeros(10, 2), torch.zeros(8, 2), 0.1, {"real_proportions": -torch.ones(8)}),
    ],
)
def test_bad_mixture_inputs_raise_one_sentence(samples, centers, std, kwargs):
    with pytest.raises(ConfigError) as info:
        gmm_mode_stats(samples, centers, std, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message


# ---------------------------------------------------------------- class histogram

BALANCED = torch.arange(1000) % 10


def one_hot_logits(classes, c=10):
    return torch.nn.functional.one_hot(torch.as_tensor(classes), c).float() * 5.0


def test_all_samples_predicted_one_class_cover_one_class():
    s = class_histogram_stats(one_hot_logits([3] * 500), BALANCED, 10)
    assert (s["classes_covered"], s["num_classes"]) == (1, 10)
    assert s["class_kl"] == pytest.approx(math.log(10), abs=1e-3)
    assert s["histogram"][3] == 1.0 and sum(s["histogram"]) == pytest.approx(1.0)


def test_balanced_predictions_cover_every_class_with_kl_near_zero():
    logits = one_hot_logits(torch.arange(500) % 10) + 0.1 * torch.randn(500, 10)
    s = class_histogram_stats(logits, BALANCED, 10)
    assert s["classes_covered"] == 10
    assert s["class_kl"] < 1e-4
    assert s["histogram"] == pytest.approx([0.1] * 10)


def test_a_few_misclassified_samples_do_not_count_as_coverage():
    classes = [3] * 990 + list(range(10))  # 1% spread over all classes by classifier error
    s = class_histogram_stats(one_hot_logits(classes), BALANCED, 10)
    assert s["min_count"] == 20 and s["classes_covered"] == 1
    assert class_histogram_stats(one_hot_logits(classes), BALANCED, 10, min_count=1)["classes_covered"] == 10


def test_class_kl_is_against_the_real_distribution():
    real = torch.tensor([0] * 500 + [1] * 500)  # only classes 0 and 1 are real
    matching = class_histogram_stats(one_hot_logits([0, 1] * 100), real, 10)
    assert matching["class_kl"] < 1e-4 and matching["classes_covered"] == 2
    shares = class_histogram_stats(one_hot_logits([0, 1] * 100), None, 10, real_proportions=torch.tensor([1.0, 1] + [0] * 8))
    assert shares["class_kl"] == pytest.approx(matching["class_kl"], abs=1e-9)
    # mass on a class absent from the real data is heavily penalised yet stays finite
    off = class_histogram_stats(one_hot_logits([5] * 100), real, 10)
    assert 10 < off["class_kl"] < math.inf


@pytest.mark.parametrize(
    "logits, labels, c, kwargs",
    [
        (torch.zeros(10, 9), BALANCED, 10, {}),
        (torch.zeros(10), BALANCED, 10, {}),
        (torch.zeros(0, 10), BALANCED, 10, {}),
        (torch.zeros(10, 10), torch.tensor([], dtype=torch.long), 10, {}),
        (torch.zeros(10, 10), torch.tensor([0, 10]), 10, {}),
        (torch.zeros(10, 10), torch.tensor([0.0, 1.0]), 10, {}),
        (torch.zeros(10, 10), None, 10, {}),
        (torch.zeros(10, 10), BALANCED, 10, {"real_proportions": torch.ones(10)}),
        (torch.zeros(10, 10), None, 10, {"real_proportions": torch.ones(9)}),
        (torch.zeros(10, 10), BALANCED, 0, {}),
    ],
)
def test_bad_class_inputs_raise_one_sentence(logits, labels, c, kwargs):
    with pytest.raises(ConfigError) as info:
        class_histogram_stats(logits, labels, c, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
