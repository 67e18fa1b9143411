"""DiffAugment: differentiable, random per sample, and applied to everything D sees in both steps."""

from __future__ import annotations

import pytest
import torch

from callbacks.diffaug import DiffAugment
from gan_lightning.core.hooks import GANCallback
from gan_lightning.errors import ConfigError
from gan_lightning.synth.diffaugment import cutout, diff_augment, translation
from tests.helpers import make_trainer, tiny_digits, tiny_module


@pytest.mark.parametrize("policy", ["color", "translation", "cutout"])
def test_each_policy_keeps_the_shape_and_passes_gradients_to_its_input(policy):
    x = torch.randn(6, 3, 12, 12, requires_grad=True)
    out = diff_augment(x, [policy], generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    again = diff_augment(x.detach(), [policy], generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, out.detach())  # the same generator, the same transforms


def test_translation_by_zero_is_the_identity_and_shifts_move_pixels_without_resampling():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float).view(2, 1, 8, 8) + 1
    assert torch.equal(translation(x, 0.0), x)
    shifted = translation(x, 0.25, torch.Generator().manual_seed(3))
    kept = shifted[shifted != 0]
    assert set(kept.tolist()) <= set(x.flatten().tolist())  # integer shifts: every value is an original pixel
    assert (shifted == 0).sum() <= 2 * (8 * 8 - 6 * 6)  # at most 2 rows and columns per side uncovered


def test_cutout_zeroes_at_most_one_square_per_sample():
    x = torch.ones(50, 1, 8, 8)
    out = cutout(x, 0.5, torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros <= 16).all() and (zeros > 0).all() and (zeros == 16).any()


class SeenByD(GANCallback):
    """After DiffAugment in the chain: records, per call, whether the batch carries a graph."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def augment_discriminator_input(self, trainer, module, samples):
        self.calls.append(samples.requires_grad)
        return samples


def test_the_generator_learns_through_augmented_discriminator_inputs(tmp_path, seeded):
    module = tiny_module()
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    probe = SeenByD()
    make_trainer(tmp_path, callbacks=[DiffAugment(), probe], limit_train_batches=2, limit_val_batches=0).fit(module, datamodule=tiny_digits())
    # per batch: the real and the fake batch of the D step (no graph to G), then the G step's fake (a graph to G)
    assert probe.calls == [False, False, True] * 2
    assert any(not torch.equal(v, module.generator.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("kwargs, flag", [({"policy": "color,blur"}, "--diffaug.policy"), ({"translation_ratio": 0.7}, "--diffaug.translation_ratio"), ({"cutout_ratio": 1.0}, "--diffaug.cutout_ratio")])
def test_bad_options_are_one_sentence_naming_the_flag(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        DiffAugment(**kwargs)
