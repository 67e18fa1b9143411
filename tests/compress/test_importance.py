from __future__ import annotations

import pytest
import torch

from gan_lightning.compress.importance import CRITERIA, Importance, make_importance, weight_importance
from gan_lightning.core.module import GANModule
from gan_lightning.compress.surgery import trace
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, ResNetDiscriminator, ResNetGenerator


def test_every_criterion_is_a_class_named_in_the_registry():
    assert list(CRITERIA) == ["auto", "l1", "l2", "group", "gradient", "taylor", "fisher", "obd"]
    for name in CRITERIA:
        importance = make_importance(name, hutchinson_probes=5)
        assert isinstance(importance, Importance) and importance.name == name
        assert importance.needs_data == (name not in ("auto", "l1", "l2", "group"))
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


@pytest.mark.parametrize(("network", "example", "expected"), [
    (lambda: ResNetGenerator(z_dim=8, image_size=16, channels=1, width=8), torch.zeros(2, 8), "group"),
    (lambda: ResNetDiscriminator(image_size=16, channels=1, width=8), torch.zeros(2, 1, 16, 16), "group"),
    (lambda: DCGANGenerator(z_dim=8, image_size=16, channels=1, width=8), torch.zeros(2, 8), "l1"),
    (lambda: DCGANDiscriminator(image_size=16, channels=1, width=8), torch.zeros(2, 1, 16, 16), "l1"),
])
def test_auto_scores_a_residual_network_by_group_magnitude_and_a_chain_by_l1(network, example, expected):
    torch.manual_seed(0)
    net = network()
    groups = trace(net, example).groups
    auto = make_importance("auto").for_network(groups)
    assert auto.name == expected and make_importance(expected).for_network(groups).name == expected
    reference = make_importance(expected)
    for group in groups:  # the chosen criterion's scores, unit for unit
        torch.testing.assert_close(auto.unit_scores(net, group), reference.unit_scores(net, group))
    assert (make_importance("group").unit_scores(net, groups[0]) != make_importance("l1").unit_scores(net, groups[0])).any()
    element = make_importance("auto").scores(net, [n for n, _ in net.named_parameters()][:1], None, [], [], torch.Generator())
    name, score = next(iter(element.items()))
    torch.testing.assert_close(score, dict(net.named_parameters())[name].detach().abs())  # single weights: l1
