from __future__ import annotations

import pytest
import torch

from gan_lightning.compress.importance import CRITERIA, Importance, make_importance, weight_importance
from gan_lightning.core.module import GANModule
from gan_lightning.networks import MLPDiscriminator, MLPGenerator


def test_every_criterion_is_a_class_named_in_the_registry():
    assert list(CRITERIA) == ["l1", "l2", "group", "gradient", "taylor", "fisher", "obd"]
    for name in CRITERIA:
        importance = make_importance(name, hutchinson_probes=5)
        assert isinstance(importance, Importance) and importance.name == name
        assert importance.needs_data == (name not in ("l1", "l2", "group"))
    assert make_importance("obd", hutchinson_probes=5).probes == 5


@pytest.mark.parametrize("criterion", ["gradient", "taylor"])
def test_the_loss_is_the_callers(criterion):
    """A loss passed by the caller replaces the GAN's own: scores follow its gradient."""
    torch.manual_seed(0)
    module = GANModule(MLPGenerator(3, (4,), (2,), "none"), MLPDiscriminator((2,), (4,)), loss="lsgan")
    batches = [torch.randn(5, 2)]

    def output_energy(params, real, z):  # has nothing to do with the discriminator
        return module.generator(z).pow(2).sum()

    name = "net.0.weight"
    scores = weight_importance(module, "generator", criterion, [name], batches, seed=3, loss=output_energy)[name]
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    w = module.generator.net[0].weight
    (grad,) = torch.autograd.grad(module.generator(z).pow(2).sum(), [w])
    expected = grad.abs() if criterion == "gradient" else (w * grad).abs()
    torch.testing.assert_close(scores, expected.detach())
    adversarial = weight_importance(module, "generator", criterion, [name], batches, seed=3)[name]
    assert not torch.allclose(adversarial, scores)
