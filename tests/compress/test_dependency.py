"""Channel dependency groups of non-chain networks: residual shortcuts, concatenations,
spectral norm, the bundled networks and a torchvision ResNet-18.

For each network: a cut that keeps every unit changes nothing, bit for bit; a real cut
computes what the dense network computes with those units masked to zero; and the MACs the
project reports agree with torch's own FlopCounterMode.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.flop_counter import FlopCounterMode

from gan_lightning import networks
from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.pruning import mask_units
from gan_lightning.compress.surgery import cut_groups, remove_units, trace
from gan_lightning.errors import ConfigError


class Block(nn.Module):
    """A pre-activation residual block, with a learned 1x1 shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int, sn: bool = False) -> None:
        super().__init__()
        wrap = spectral_norm if sn else (lambda m: m)
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), wrap(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), wrap(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = wrap(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.conv1(torch.relu(self.bn1(x)))
        h = self.conv2(nn.functional.relu(self.bn2(h)))
        return h + self.shortcut(x)


class ResidualNet(nn.Module):
    def __init__(self, sn: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.same = Block(6, 6, sn)  # identity shortcut: its output is one group with the stem's
        self.wider = Block(6, 8, sn)  # learned shortcut: conv2 and the 1x1 conv are one group
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.wider(self.same(self.stem(x)))
        return self.head(torch.sum(torch.relu(h), dim=(2, 3))).view(-1)


class ConcatNet(nn.Module):
    """Two branches concatenated along the channels, normalized together, read by one conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.mix = nn.Conv2d(10, 5, 3, padding=1)
        self.head = nn.Linear(5 * 8 * 8, 2)

    def forward(self, x):
        h = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)
        return self.head(torch.flatten(self.mix(torch.relu(self.bn(h))), 1))


class GatedNet(nn.Module):
    """A one-channel spatial gate broadcast over every channel, and an instance norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(1, 6, 3, padding=1), nn.InstanceNorm2d(6, affine=True)
        self.gate = nn.Conv2d(6, 1, 1)
        self.out = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        h = torch.relu(self.norm(self.conv(x)))
        return self.out(h * torch.sigmoid(self.gate(h)))


def _randomize_norms(net: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so masking is really tested."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _converge_spectral_norms(net: nn.Module) -> None:
    """Power iteration run to convergence, so sigma is the true largest singular value on both
    sides of a comparison (zero rows and removed rows leave it unchanged)."""
    for m in net.modules():
        if parametrize.is_parametrized(m, "weight"):
            for norm in m.parametrizations.weight:
                if hasattr(norm, "_u"):
                    norm._power_method(norm._reshape_weight_to_matrix(m.parametrizations.weight.original), 500)


def _cases():
    g = dict(z_dim=8, image_size=16, width=4)
    yield "dcgan_g", networks.DCGANGenerator(**g), torch.randn(4, 8)
    for norm in ("batch", "none", "layer"):
        yield f"dcgan_d_{norm}", networks.DCGANDiscriminator(image_size=16, width=4, norm=norm), torch.randn(4, 1, 16, 16)
    yield "mlp_g", networks.MLPGenerator(8, (12, 10), (1, 8, 8)), torch.randn(4, 8)
    yield "residual", ResidualNet(), torch.randn(4, 1, 8, 8)
    yield "residual_sn", ResidualNet(sn=True), torch.randn(4, 1, 8, 8)
    yield "concat", ConcatNet(), torch.randn(4, 1, 8, 8)
    yield "gated", GatedNet(), torch.randn(4, 1, 8, 8)
    yield "resnet18", torchvision.models.resnet18(num_classes=3), torch.randn(2, 3, 32, 32)
    yield "sngan_g", networks.ResNetGenerator(z_dim=8, image_size=16, width=8), torch.randn(4, 8)
    yield "sngan_d", networks.ResNetDiscriminator(image_size=16, width=8), torch.randn(4, 1, 16, 16)
    yield "dcgan_d_sn", networks.DCGANDiscriminator(image_size=16, width=4, norm="none", spectral_norm=True), torch.randn(4, 1, 16, 16)


def _seeded_cases() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    # Built at collection, after whatever other test modules drew from the global generator:
    # a fixed seed of their own keeps their weights (and what the tests below assert of them)
    # independent of which tests are collected, without moving anyone else's random state.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return {name: (net, x) for name, net, x in _cases()}


CASES = _seeded_cases()


def _network(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net, x = copy.deepcopy(CASES[name])
    _randomize_norms(net)
    return net.eval(), x


@pytest.mark.parametrize("name", list(CASES))
def test_a_cut_that_keeps_every_unit_is_bit_identical(name):
    net, x = _network(name)
    before = net(x)
    for group in trace(net, x).groups:
        remove_units(net, group, torch.arange(group.units))  # slices every tensor, keeping all of it
    assert torch.equal(net(x), before)


# GroupNorm(1, C) normalizes over all channels, so zeros left in place change the statistics
# of the others: there a cut is what a masked network would be only after re-normalizing.
MASKABLE = [n for n in CASES if n != "dcgan_d_layer"]


@pytest.mark.parametrize("name", MASKABLE)
def test_a_real_cut_computes_what_the_masked_dense_network_does(name):
    net, x = _network(name)
    groups = trace(net, x).groups
    assert groups, "every network here has something to cut"
    keep = {g.producer: torch.arange(0, g.units, 2) for g in groups}
    masked, cut = copy.deepcopy(net), copy.deepcopy(net)
    mask_units(masked, x, keep)
    cut_groups(cut, x, keep)
    _converge_spectral_norms(masked)
    _converge_spectral_norms(cut)
    expected = masked(x)
    assert torch.allclose(cut(x), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(net(x), expected, atol=1e-4)  # the cut changed the function
    after = {g.producer: g.units for g in trace(cut, x).groups}
    assert after == {p: len(k) for p, k in keep.items()}  # every group shrank, none was skipped
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in net.parameters())


def _flop_counter_macs(net: nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    counts = counter.get_flop_counts()["Global"]
    # the layers' own products; a spectral norm's sigma (one matrix-vector product per call) is not per sample
    layers = sum(n for op, n in counts.items() if "mv" not in str(op) and "dot" not in str(op))
    return layers / 2 / x.shape[0]


@pytest.mark.parametrize("name", list(CASES))
def test_macs_agree_with_torch_flop_counter_before_and_after_a_cut(name):
    net, x = _network(name)
    assert network_cost(net, x).macs == pytest.approx(_flop_counter_macs(net, x))
    cut_groups(net, x, {g.producer: torch.arange(0, g.units, 2) for g in trace(net, x).groups})
    assert network_cost(net, x).macs == pytest.approx(_flop_counter_macs(net, x))


def test_residual_and_concatenated_channels_form_the_groups_their_data_flow_implies():
    net, x = _network("residual")
    groups = {g.producer: g for g in trace(net, x).groups}
    stream = groups["stem"]  # the identity shortcut joins the stem's channels to the first block's output
    assert [m.layer for m in stream.producers] == ["stem", "same.conv2"]
    assert sorted(m.layer for m in stream.consumers) == ["same.conv1", "wider.conv1", "wider.shortcut"]
    assert sorted(stream.norms) == ["same.bn1", "wider.bn1"]  # each block normalizes its input
    assert stream.scale_norm is None  # the shortcut reads the stream without a norm: rank by weights
    wide = groups["wider.conv2"]  # a learned shortcut is cut with the main path it is added to
    assert [m.layer for m in wide.producers] == ["wider.conv2", "wider.shortcut"] and [m.layer for m in wide.consumers] == ["head"]
    assert groups["same.conv1"].scale_norm == "same.bn2"  # a block's inner channels: their own group
    cat, x = _network("concat")
    by_layer = {g.producer: g for g in trace(cat, x).groups}
    mix_in = sorted((m.offset, m.size) for g in (by_layer["a"], by_layer["b"]) for m in g.consumers if m.layer == "mix")
    assert mix_in == [(0, 1), (4, 1)]  # the second branch's columns start after the first's 4
    assert by_layer["mix"].consumers[0].size == 64  # a flattened 8x8 map per unit


def test_a_spectral_norm_layer_is_cut_in_its_original_weight_and_power_iteration_vectors():
    net, x = _network("residual_sn")
    conv = net.wider.conv2
    cut_groups(net, x, {"wider.conv2": torch.tensor([0, 3, 5])})
    original = conv.parametrizations.weight.original
    norm = conv.parametrizations.weight[0]
    assert original.shape[0] == 3 and norm._u.shape == (3,) and norm._v.shape == (8 * 9,)
    sigma = torch.linalg.matrix_norm(original.detach().flatten(1), ord=2)
    estimate = torch.dot(norm._u, original.detach().flatten(1) @ norm._v)
    assert estimate == pytest.approx(sigma.item(), rel=1e-2)  # the vectors describe the cut weight


class Slicing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.b(self.a(x)[:, :2])


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)

    def forward(self, x):
        return self.a(x) if x.sum() > 0 else x


class TokenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 1)

    def forward(self, x):  # (batch, tokens, features): the features are not dim 1
        return self.b(self.a(x))


def test_a_cut_down_to_one_unit_per_group_still_traces_and_cuts():
    net, x = _network("dcgan_g")  # the stem's single 4x4 map is a (N, 1, 4, 4) view of 16 features
    cut_groups(net, x, {g.producer: torch.tensor([0]) for g in trace(net, x).groups})
    assert all(g.units == 1 for g in trace(net, x).groups) and net(x).shape == (4, 1, 16, 16)


def test_a_spatial_gate_leaves_the_channels_it_scales_prunable():
    net, x = _network("gated")
    groups = {g.producer: g for g in trace(net, x).groups}
    assert set(groups) == {"conv"}  # the gate's single map is broadcast, not cut
    assert sorted(m.layer for m in groups["conv"].consumers) == ["gate", "out"] and groups["conv"].norms == ["norm"]


def test_what_the_walk_cannot_follow_is_refused_in_one_sentence_naming_it():
    with pytest.raises(ConfigError, match="cannot follow Linear 'a' over more than one dimension"):
        trace(TokenLinear(), torch.zeros(2, 3, 4))
    with pytest.raises(ConfigError, match="cannot follow this operation at 'getitem'.*--prune.granularity unstructured"):
        trace(Slicing(), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ConfigError, match="traces Branching with torch.fx, which cannot follow its forward.*unstructured"):
        trace(Branching(), torch.zeros(2, 3))


def test_the_group_criterion_scores_every_slice_a_unit_owns():
    from gan_lightning.compress.importance import make_importance

    net, x = _network("residual")
    group = {g.producer: g for g in trace(net, x).groups}["wider.conv2"]  # conv2 + the 1x1 shortcut, read by the head
    l1_before, group_before = make_importance("l1").unit_scores(net, group), make_importance("group").unit_scores(net, group)
    with torch.no_grad():
        net.head.weight[:, 3] *= 100  # unit 3 now matters most to its consumer
    change = make_importance("group").unit_scores(net, group) - group_before  # consumers' columns count:
    others = torch.arange(group.units) != 3
    assert change[3] > 1 and (change[others] <= 0).all()  # unit 3 gains (each slice is scaled by its tensor's mean), the rest lose
    assert torch.equal(make_importance("l1").unit_scores(net, group), l1_before)  # producers' weights only: unchanged
