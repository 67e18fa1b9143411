"""The compression math: MAC counting, channel surgery, importance scores and mask selection."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gan_lightning.compress.importance import magnitude_unit_scores, unit_scores, weight_importance
from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.pruning import cut_units, example_input, prunable_groups, recalibrate_batchnorm, zero_units
from gan_lightning.compress.schedules import iterative_fraction, polynomial_sparsity
from gan_lightning.compress.selection import units_to_keep, unstructured_masks
from gan_lightning.compress.surgery import INPUT_KEY, trace
from gan_lightning.core.module import GANModule
from gan_lightning.errors import ConfigError
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from tests.helpers import tiny_module


def test_macs_are_counted_per_sample_from_real_shapes():
    net = nn.Sequential(nn.Linear(5, 6), nn.Unflatten(1, (6, 1, 1)), nn.ConvTranspose2d(6, 3, 4, 2, 1), nn.Conv2d(3, 2, 3, padding=1))
    cost = network_cost(net, torch.zeros(7, 5))
    # Linear 5*6; ConvTranspose: each of 6 input pixels scatters a 4x4 kernel into 3 maps; Conv: 2x2 outputs x 2 maps x 3*3*3
    assert cost.layers["0"].macs == 30
    assert cost.layers["2"].macs == 6 * 1 * 3 * 16
    assert cost.layers["3"].macs == 2 * 2 * 2 * 3 * 9
    assert cost.params == sum(p.numel() for p in net.parameters())


def _drop_every_other(module: GANModule, network: str) -> dict[str, torch.Tensor]:
    return {g.producer: torch.arange(0, g.units, 2) for g in prunable_groups(module, network, set())}


@pytest.mark.parametrize("network", ["generator", "discriminator"])
@pytest.mark.parametrize("mlp", [False, True])
def test_cut_network_computes_what_the_zeroed_one_does_and_every_layer_shrank(network, mlp):
    torch.manual_seed(0)
    if mlp:
        module = GANModule(MLPGenerator(8, (12, 10), (1, 8, 8)), MLPDiscriminator((1, 8, 8), (12, 6)))
    else:
        module = tiny_module()
    module.eval()
    keep = _drop_every_other(module, network)
    inputs = torch.arange(8, dtype=torch.long)[::3] if network == "generator" else None
    zeroed, cut = copy.deepcopy(module), copy.deepcopy(module)
    zero_units(zeroed, network, keep, inputs)
    cut.edits.append(network, cut_units(cut, network, keep, inputs))
    x = torch.randn(5, 8) if network == "generator" else torch.randn(5, 1, 8, 8)
    x_cut = x[:, inputs] if inputs is not None else x
    expected = getattr(zeroed, network)(x)
    assert torch.allclose(getattr(cut, network)(x_cut), expected, atol=1e-5)
    assert not torch.allclose(getattr(module, network)(x), expected)  # the cut did change the function
    graph = trace(getattr(cut, network), example_input(cut, network))
    for group in graph.groups:  # each group, including the Linear->reshape->conv stem, shrank
        assert group.units == len(keep[group.producer]) < dict(zip((g.producer for g in prunable_groups(module, network, set())), (g.units for g in prunable_groups(module, network, set()))))[group.producer]
    if network == "generator":
        assert cut.z_dim == cut.generator.z_dim == len(inputs) and cut.edits.kept("generator")[INPUT_KEY] == inputs.tolist()
    before = network_cost(getattr(module, network), example_input(module, network))
    after = network_cost(getattr(cut, network), example_input(cut, network))
    assert after.macs < before.macs and after.params < before.params


def test_dcgan_stem_units_are_whole_feature_maps_with_their_batchnorm_features():
    g = DCGANGenerator(z_dim=4, image_size=16, width=4)
    graph = trace(g, torch.zeros(2, 4))
    stem = graph.groups[0]
    assert (stem.producer, stem.units, stem.unit_size, stem.consumer, stem.norms) == ("stem.0", 8, 16, "blocks.0", ["stem.1"])
    d = DCGANDiscriminator(image_size=16, width=4)
    head = trace(d, torch.zeros(2, 1, 16, 16)).groups[-1]
    assert (head.consumer, head.consumer_unit_size) == ("net.6", 16)  # Flatten of a 4x4 map into the Linear


def test_the_record_rebuilds_a_fresh_network_and_is_idempotent():
    torch.manual_seed(0)
    module = tiny_module(ema_decay=0.9)
    module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([1, 3])}, torch.tensor([0, 2, 5])))
    fresh = tiny_module(ema_decay=0.9)
    fresh.adopt_edits({"edits": module.edits.to_state()})
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    assert {k: v.shape for k, v in fresh.state_dict().items()} == shapes  # the EMA copy too
    fresh.load_state_dict(module.state_dict())
    fresh.adopt_edits({"edits": module.edits.to_state()})  # again: nothing changes
    assert {k: v.shape for k, v in fresh.state_dict().items()} == shapes
    assert fresh.z_dim == 3


def test_unsupported_layers_are_refused_with_the_flag_to_change():
    with pytest.raises(ConfigError, match="cannot handle layer '1' of type LayerNorm.*--prune.granularity unstructured"):
        trace(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="grouped convolution"):
        trace(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 1, 1)), torch.zeros(2, 4, 5, 5))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(self.a(x))

    with pytest.raises(ConfigError, match="each layer .* to run once"):
        trace(Twice(), torch.zeros(2, 3))


def test_unstructured_masks_layerwise_global_and_already_pruned_weights():
    scores = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "b": torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0])}
    layerwise = unstructured_masks(scores, 0.5, "layerwise")
    assert layerwise["a"].tolist() == [True, True, False, False]
    assert layerwise["b"].tolist() == [False] * 4 + [True] * 4
    global_ = unstructured_masks(scores, 0.5, "global")
    # a's scores are all lower: it keeps only its floor (its best weight), b gives up one more
    assert global_["a"].tolist() == [True, False, False, False] and global_["b"].sum() == 5
    current = {"a": torch.tensor([False, True, True, True])}  # the highest score was removed before
    again = unstructured_masks(scores, 0.5, "layerwise", current)
    assert again["a"].tolist() == [False, True, True, False]  # it counts towards the 50%


def test_units_to_keep_layerwise_counts_and_global_budget():
    scores = {"x": torch.tensor([1.0, 5.0, 3.0, 2.0]), "y": torch.tensor([1.0, 1.0, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0])}
    original = {"x": 4, "y": 8}
    keep = units_to_keep(scores, original, 0.5, "layerwise")
    assert keep["x"].tolist() == [1, 2] and len(keep["y"]) == 4
    glob = units_to_keep(scores, original, 0.75, "global")
    assert sum(len(v) for v in glob.values()) == 3 and len(glob["x"]) >= 1 and 2 in glob["y"].tolist()


@pytest.mark.parametrize("ranking", ["layerwise", "global"])
def test_rounded_unit_counts_are_multiples_and_keep_the_best_units(ranking):
    torch.manual_seed(0)
    scores = {"a": torch.rand(58), "b": torch.rand(29), "c": torch.rand(6)}
    original = {"a": 58, "b": 29, "c": 6}
    keep = units_to_keep(scores, original, 0.55, ranking, round_to=8)
    counts = {name: len(idx) for name, idx in keep.items()}
    assert all(n % 8 == 0 or n == original[name] for name, n in counts.items()) and counts["c"] == 6  # never more than a layer has
    if ranking == "layerwise":  # 26, 13, 3 without rounding
        assert counts == {"a": 24, "b": 16, "c": 6}
        assert {n: len(i) for n, i in units_to_keep(scores, original, 0.55, ranking).items()} == {"a": 26, "b": 13, "c": 3}
    for name, idx in keep.items():  # the kept units are the best-scored ones of their layer
        assert set(idx.tolist()) == set(torch.argsort(scores[name], descending=True)[: len(idx)].tolist())


def test_unit_scores_sum_element_scores_over_each_unit():
    score = torch.arange(2 * 3 * 2 * 2, dtype=torch.float).view(2, 3, 2, 2)  # a ConvTranspose weight: dim 1 is out
    per_unit = unit_scores(score, 1, 1)
    assert per_unit.tolist() == [score[:, i].sum().item() for i in range(3)]
    stem = unit_scores(torch.ones(8, 5), 0, 4, root=True)  # 8 Linear outputs = 2 feature maps of 4
    assert torch.allclose(stem, torch.full((2,), 20.0).sqrt())


def _mlp_gan() -> GANModule:
    torch.manual_seed(0)
    return GANModule(MLPGenerator(3, (4,), (2,), "none"), MLPDiscriminator((2,), (4,)), loss="lsgan")


def _batches():
    torch.manual_seed(1)
    return [torch.randn(6, 2), torch.randn(6, 2)]


def _first_linear(net: nn.Module) -> nn.Parameter:
    return next(m for m in net.net if isinstance(m, nn.Linear)).weight


def _manual_grads(module, network, batches, seed):
    """The loss gradient of ``network`` computed the plain way, per batch, with the same latents."""
    gen = torch.Generator().manual_seed(seed)
    latents = [torch.randn(len(b), module.z_dim, generator=gen) for b in batches]
    net = getattr(module, network)
    out = []
    for real, z in zip(batches, latents):
        module.eval()
        if network == "generator":
            loss = module.adversarial.generator(module.discriminator(module.generator(z)))
        else:
            loss = module.adversarial.discriminator(module.discriminator(real), module.discriminator(module.generator(z).detach()))
        out.append(torch.autograd.grad(loss, [_first_linear(net)])[0])
    return out


@pytest.mark.parametrize("network", ["generator", "discriminator"])
def test_gradient_and_taylor_scores_match_hand_computed_gradients(network):
    module, batches = _mlp_gan(), _batches()
    weight = _first_linear(getattr(module, network))
    name = "net.0.weight" if network == "generator" else "net.1.weight"
    grads = _manual_grads(module, network, batches, seed=3)
    scores = {c: weight_importance(module, network, c, [name], batches, seed=3)[name] for c in ("gradient", "taylor", "l1", "l2")}
    assert torch.allclose(scores["gradient"], sum(g.abs() for g in grads) / 2, atol=1e-6)
    assert torch.allclose(scores["taylor"], sum((weight * g).abs() for g in grads).detach() / 2, atol=1e-6)
    assert torch.equal(scores["l1"], weight.detach().abs()) and torch.equal(scores["l2"], weight.detach() ** 2)


def test_fisher_is_the_sum_of_per_sample_squared_gradients():
    module, batches = _mlp_gan(), _batches()
    fisher = weight_importance(module, "generator", "fisher", ["net.0.weight"], batches, seed=3)["net.0.weight"]
    gen = torch.Generator().manual_seed(3)
    expected = torch.zeros_like(fisher)
    module.eval()
    for real in batches:
        z = torch.randn(len(real), module.z_dim, generator=gen)
        for i in range(len(real)):
            loss = module.adversarial.generator(module.discriminator(module.generator(z[i : i + 1])))
            expected += torch.autograd.grad(loss, [module.generator.net[0].weight])[0] ** 2
    assert torch.allclose(fisher, expected, rtol=1e-4, atol=1e-7)


def test_obd_estimates_the_hessian_diagonal():
    module, batches = _mlp_gan(), _batches()[:1]
    weight = module.generator.net[0].weight
    obd = weight_importance(module, "generator", "obd", ["net.0.weight"], batches, seed=3, hutchinson_probes=3000)["net.0.weight"]
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(len(batches[0]), module.z_dim, generator=gen)
    module.eval()
    loss = module.adversarial.generator(module.discriminator(module.generator(z)))
    (g,) = torch.autograd.grad(loss, [weight], create_graph=True)
    exact = torch.stack([torch.autograd.grad(g.reshape(-1)[i], [weight], retain_graph=True)[0].reshape(-1)[i] for i in range(weight.numel())])
    expected = 0.5 * exact.abs().view_as(weight) * weight.detach() ** 2
    assert torch.allclose(obd, expected, rtol=0.25, atol=1e-3 * float(expected.max()))


def test_schedules():
    assert polynomial_sparsity(0, 0, 100, 0.8) == 0.0 and polynomial_sparsity(100, 0, 100, 0.8) == 0.8
    assert polynomial_sparsity(50, 0, 100, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    fractions = [iterative_fraction(k, 3, 0.875) for k in (1, 2, 3)]
    assert fractions == pytest.approx([0.5, 0.75, 0.875])  # each round removes half of what is left


def test_batchnorm_recalibration_matches_the_statistics_of_the_cut_generator():
    torch.manual_seed(0)
    module = tiny_module()
    module.generator.stem[1].running_mean.fill_(5.0)  # stale statistics, as after a cut
    cut_units(module, "generator", {"stem.0": torch.tensor([0, 2])})
    g = module.generator
    recalibrate_batchnorm(g, module.z_dim, module.device, batches=8, batch_size=256, seed=1)
    with torch.no_grad():
        pre_bn = g.stem[0](torch.randn(4096, module.z_dim))
    assert torch.allclose(g.stem[1].running_mean, pre_bn.mean(0), atol=0.05)
    assert torch.allclose(g.stem[1].running_var, pre_bn.var(0), rtol=0.1)
    assert g.stem[1].momentum == 0.1  # restored


def test_magnitude_ranks_units_behind_batchnorm_by_its_scale_not_by_the_cancelled_weights():
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=4, image_size=16, width=4)
    graph = trace(g, torch.zeros(2, 4))
    block = graph.groups[1]  # blocks.0 -> BatchNorm2d blocks.1
    with torch.no_grad():
        g.blocks[0].weight[:, 0] *= 100.0  # huge weights, silenced by gamma ~ 0
        g.blocks[1].weight.copy_(torch.tensor([1e-3, 1.0, 2.0, 3.0]))
    scores = magnitude_unit_scores(g, block, "l1")
    assert scores.argmin() == 0 and torch.allclose(scores, torch.tensor([1e-3, 1.0, 2.0, 3.0]))
    stem = magnitude_unit_scores(g, graph.groups[0], "l2")  # 16 BatchNorm1d features per feature map
    assert torch.allclose(stem, g.stem[1].weight.detach().pow(2).view(-1, 16).sum(1).sqrt())
    mlp = MLPGenerator(4, (6,), (2,), "none")  # no norm: the producer's weight norm
    first = trace(mlp, torch.zeros(2, 4)).groups[0]
    assert torch.allclose(magnitude_unit_scores(mlp, first, "l1"), mlp.net[0].weight.detach().abs().sum(1))


def test_a_layer_left_unshrunk_stops_the_cut_instead_of_passing_silently(monkeypatch):
    import gan_lightning.compress.surgery as surgery

    real = surgery.remove_units
    monkeypatch.setattr(surgery, "remove_units", lambda net, group, keep: None if group.producer == "blocks.0" else real(net, group, keep))
    module = GANModule(DCGANGenerator(z_dim=4, image_size=16, width=4), DCGANDiscriminator(image_size=16, width=4))
    keep = _drop_every_other(module, "generator")
    with pytest.raises(RuntimeError, match="did not shrink generator layer\\(s\\) blocks.0"):
        cut_units(module, "generator", keep)
