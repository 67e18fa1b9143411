"""A global cut keeps a floor in every layer, so a pruned generator still listens to its latent."""

from __future__ import annotations

import logging

import pytest
import torch

from gan_lightning.compress.selection import LAYER_FLOOR, units_to_keep, unstructured_masks
from gan_lightning.compress.surgery import WEIGHTED
from gan_lightning.networks import DCGANGenerator


def _generator() -> DCGANGenerator:
    torch.manual_seed(0)
    # wide enough that fan-in scaled initial weights put one layer entirely below the others
    return DCGANGenerator(z_dim=16, image_size=16, channels=1, width=16).eval()


def _weights(g) -> dict[str, torch.nn.Parameter]:
    return {f"{n}.weight": m.weight for n, m in g.named_modules() if isinstance(m, WEIGHTED)}


def test_without_the_floor_a_global_cut_would_empty_a_layer():
    # the premise of the floor: magnitudes of different layers are on different scales
    weights = _weights(_generator())
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    threshold = flat.sort().values[round(0.8 * flat.numel())]
    assert any(bool((w.detach().abs() < threshold).all()) for w in weights.values())


@pytest.mark.parametrize("amount", [0.8, 0.95])
def test_global_unstructured_cut_keeps_every_layer_and_distinct_images(amount, caplog):
    g = _generator()
    weights = _weights(g)
    with caplog.at_level(logging.WARNING, logger="gan_lightning.compress.selection"):
        masks = unstructured_masks({n: w.detach().abs() for n, w in weights.items()}, amount, "global", network="generator")
    for name, mask in masks.items():
        assert int(mask.sum()) >= max(1, LAYER_FLOOR * mask.numel()), f"{name} keeps {int(mask.sum())} of {mask.numel()}"
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == total - round(amount * total)  # the amount still holds overall
    floored = [r.getMessage() for r in caplog.records if "global unstructured pruning would leave generator." in r.getMessage()]
    assert len(floored) == 1 and "keeps its best 2%" in floored[0]
    with torch.no_grad():
        for name, w in weights.items():
            w.mul_(masks[name])
        images = g(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)))
    assert torch.cdist(images.flatten(1), images.flatten(1)).triu(1)[torch.ones(4, 4).triu(1).bool()].min() > 1e-3


def test_no_floor_message_when_no_layer_runs_low(caplog):
    scores = {"a.weight": torch.rand(10, 10), "b.weight": torch.rand(10, 10)}
    with caplog.at_level(logging.WARNING):
        masks = unstructured_masks(scores, 0.5, "global")
    assert not caplog.records
    assert sum(int(m.sum()) for m in masks.values()) == 100


def test_already_removed_weights_are_not_revived_by_the_floor():
    scores = {"a.weight": torch.full((100,), 100.0), "b.weight": torch.rand(100)}
    current = {"b.weight": torch.arange(100) < 1}  # an earlier cut left b one weight
    masks = unstructured_masks(scores, 0.5, "global", current)
    assert int(masks["b.weight"].sum()) == 1 and bool(masks["b.weight"][0])


def test_structured_global_ranking_keeps_a_unit_in_every_layer():
    scores = {"big": torch.full((8,), 100.0), "small": torch.full((8,), 1e-6)}
    keep = units_to_keep({"big": scores["big"], "small": scores["small"] * torch.arange(1, 9)}, {"big": 8, "small": 8}, 0.9, "global")
    assert all(len(idx) >= 1 for idx in keep.values())
