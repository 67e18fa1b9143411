import pytest
import torch
from torch import nn

from gan_lightning.core.losses import LOSSES, get_loss, gradient_penalty, r1_penalty
from gan_lightning.errors import ConfigError


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_discriminator_loss_rewards_separating_real_from_fake(name):
    loss = get_loss(name)
    good = loss.discriminator(torch.full((8,), 3.0), torch.full((8,), -3.0))
    bad = loss.discriminator(torch.full((8,), -3.0), torch.full((8,), 3.0))
    assert good < bad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_generator_loss_falls_as_fakes_look_real(name):
    loss = get_loss(name)
    assert loss.generator(torch.full((8,), 2.0)) < loss.generator(torch.full((8,), -2.0))


def test_non_saturating_generator_keeps_gradient_when_discriminator_wins():
    fake = torch.full((8,), -10.0, requires_grad=True)
    get_loss("bce").generator(fake).backward()
    assert fake.grad.abs().mean() > 0.1  # the saturating log(1 - D) would give ~4.5e-5


def test_unknown_loss_names_the_flag():
    with pytest.raises(ConfigError, match="--model.loss"):
        get_loss("nope")


def _linear_critic(weight: torch.Tensor) -> nn.Module:
    d = nn.Sequential(nn.Flatten(), nn.Linear(weight.numel(), 1, bias=False))
    with torch.no_grad():
        d[1].weight.copy_(weight.view(1, -1))
    return d


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic_and_positive_otherwise():
    real, fake = torch.randn(16, 4), torch.randn(16, 4)
    unit = torch.tensor([0.6, 0.8, 0.0, 0.0])
    assert gradient_penalty(_linear_critic(unit), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(_linear_critic(3 * unit), real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_r1_is_the_squared_weight_norm_for_a_linear_critic():
    w = torch.tensor([1.0, 2.0, 2.0])
    assert r1_penalty(_linear_critic(w), torch.randn(5, 3)).item() == pytest.approx(9.0, rel=1e-6)


def test_penalties_backpropagate_to_the_critic():
    d = _linear_critic(torch.tensor([3.0, 0.0]))
    gradient_penalty(d, torch.randn(4, 2), torch.randn(4, 2)).backward()
    assert d[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_survives_pickling_as_ddp_spawn_requires(name):
    import pickle

    loss = pickle.loads(pickle.dumps(get_loss(name)))
    assert loss.generator(torch.ones(3)) == get_loss(name).generator(torch.ones(3))
