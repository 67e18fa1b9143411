from __future__ import annotations

import torch

from gan_lightning.compress.lowrank import LowRank, factorize_module
from gan_lightning.compress.pruning import cut_units
from gan_lightning.compress.replay import replay_edits
from gan_lightning.compress.surgery import INPUT_KEY
from gan_lightning.networks import DCGANGenerator
from tests.helpers import tiny_module


def test_cuts_factorization_and_cuts_of_the_factors_replay_on_a_fresh_network():
    torch.manual_seed(0)
    module = tiny_module()
    cut_units(module, "generator", {"stem.0": torch.tensor([0, 1, 3])}, keep_inputs=torch.tensor([0, 2, 3, 4, 5, 6, 7]))
    factorize_module(module, {"generator.stem.0": 3})
    # a cut made after the factorization names a factor: the 3 rank units of stem.0.0
    cut_units(module, "generator", {"stem.0.0": torch.tensor([0, 2])})
    structure, ranks = module.structure["generator"], {"stem.0": 3}
    assert {"stem.0", "stem.0.0", INPUT_KEY} <= set(structure)

    fresh = DCGANGenerator(z_dim=8, image_size=8, channels=1, width=4)
    replay_edits(fresh, torch.zeros(2, 8), structure, ranks)
    assert isinstance(fresh.stem[0], LowRank) and fresh.stem[0][0].weight.shape == (2, 7)
    fresh.load_state_dict(module.generator.state_dict())  # every shape matches
    z = torch.randn(4, 7)
    module.generator.eval(), fresh.eval()
    assert torch.equal(fresh(z), module.generator(z))


def test_replaying_an_already_rebuilt_network_changes_nothing():
    torch.manual_seed(0)
    module = tiny_module()
    cut_units(module, "generator", {"stem.0": torch.tensor([1, 2])}, keep_inputs=torch.tensor([0, 1, 2, 3, 4, 5]))
    factorize_module(module, {"generator.stem.0": 2})
    before = {k: v.clone() for k, v in module.generator.state_dict().items()}
    replay_edits(module.generator, torch.zeros(2, module.z_dim), module.structure["generator"], {"stem.0": 2})
    after = module.generator.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
