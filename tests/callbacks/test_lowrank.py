"""The `lowrank` callback and gan_lightning.compress.lowrank: exact factors at full rank, the error the
kept energy predicts at lower rank, rank selection, which layers are skipped, EMA and
checkpoint rebuilds (also combined with structured pruning), a train.py run reloaded in a
fresh process, and bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from pytorch_lightning import Callback
from torch import nn

from callbacks.lowrank import LowRankFactorization
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.compress.edits import EditRecord, Factorize
from gan_lightning.compress.lowrank import LowRank, apply_ranks, choose_rank, energy_kept, factorize, factorize_module, plan_ranks, singular_values
from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.pruning import cut_units
from gan_lightning.errors import CheckpointError
from tests.helpers import REPO, tiny_module, tiny_run_args, train_py_ddp
from train import main


LAYERS = {
    "linear": (lambda: nn.Linear(12, 7), (5, 12)),
    "linear_nobias": (lambda: nn.Linear(9, 16, bias=False), (5, 9)),
    "conv2d": (lambda: nn.Conv2d(3, 6, 3, stride=2, padding=1), (2, 3, 9, 9)),
    "conv2d_dilated_reflect": (lambda: nn.Conv2d(4, 5, 3, padding=2, dilation=2, padding_mode="reflect"), (2, 4, 8, 8)),
    "convtranspose2d": (lambda: nn.ConvTranspose2d(6, 3, 4, stride=2, padding=1), (2, 6, 5, 5)),
    "convtranspose2d_output_padding": (lambda: nn.ConvTranspose2d(5, 4, 3, stride=2, padding=1, output_padding=1, bias=False), (2, 5, 5, 5)),
}


def reconstructed(layer: nn.Module, factors: LowRank) -> torch.Tensor:
    """The m x n matrix the two factors compute (see the table in gan_lightning.compress.lowrank)."""
    a, b = factors[0].weight.detach(), factors[1].weight.detach()
    if isinstance(layer, nn.ConvTranspose2d):
        return a.reshape(a.shape[0], -1).t() @ b.reshape(b.shape[0], -1)
    return b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)


# ---------------------------------------------------------------------- the maths
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_full_rank_factors_reproduce_the_layer(kind):
    torch.manual_seed(0)
    make, shape = LAYERS[kind]
    layer = make()
    x = torch.randn(shape)
    full = len(singular_values(layer))
    factors = factorize(layer, full)
    assert torch.allclose(factors(x), layer(x), atol=1e-4)
    keys = set(nn.Sequential(factors).state_dict())
    assert {"0.0.weight", "0.1.weight"} <= keys and ("0.1.bias" in keys) == (layer.bias is not None)
    assert "0.0.bias" not in keys
    # the MACs of the factors are r (m + n) per position, as counted by the shared profiler
    m, n = layer.weight.shape[0], layer.weight[0].numel()
    assert network_cost(factors, x).macs == network_cost(layer, x).macs // (m * n) * full * (m + n)


@pytest.mark.parametrize("kind", ["linear", "conv2d", "convtranspose2d"])
def test_truncation_error_is_what_the_kept_energy_predicts(kind):
    torch.manual_seed(1)
    make, _ = LAYERS[kind]
    layer = make()
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    s = singular_values(layer)
    for rank in range(1, len(s)):
        approx = reconstructed(layer, factorize(layer, rank)).double()
        # Eckart-Young: the relative Frobenius error of the best rank-r approximation
        error = float((approx - weight).norm() / weight.norm())
        assert error == pytest.approx((1 - energy_kept(s, rank)) ** 0.5, rel=1e-5, abs=1e-6)


def test_output_error_on_random_inputs_follows_the_kept_energy():
    torch.manual_seed(2)
    layer = nn.Linear(40, 30, bias=False)
    x = torch.randn(20000, 40)  # white inputs: E|(W - W_r) x|^2 = |W - W_r|_F^2
    y = layer(x)
    s = singular_values(layer)
    for rank in (2, 10, 20):
        y_r = factorize(layer, rank)(x)
        relative = float((y_r - y).norm() / y.norm())
        assert relative == pytest.approx((1 - energy_kept(s, rank)) ** 0.5, rel=0.05)
        # and never above the spectral-norm bound |(W - W_r) x| <= s_{r+1} |x|
        assert float((y_r - y).norm(dim=1).max()) <= float(s[rank]) * float(x.norm(dim=1).max()) + 1e-4


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("fixed", 3, 3), ("fixed", 10, 4), ("fixed", 1, 1),
        ("ratio", 0.5, 2), ("ratio", 0.3, 2), ("ratio", 0.01, 1), ("ratio", 1.0, 4),
        # squares 16, 9, 4, 1 of 30: 0.533, 0.833, 0.967, 1
        ("energy", 0.5, 1), ("energy", 25 / 30, 2), ("energy", 0.84, 3), ("energy", 0.9, 3), ("energy", 1.0, 4),
    ],
)
def test_rank_selection_per_mode(mode, value, expected):
    s = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    assert choose_rank(s, mode, value) == expected
    if mode == "energy":
        r = choose_rank(s, mode, value)
        assert energy_kept(s, r) >= value - 1e-12 and (r == 1 or energy_kept(s, r - 1) < value)


def test_plan_factorizes_only_layers_whose_macs_drop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    x = torch.randn(2, 8)
    plans = {p.layer: p for p in plan_ranks(net, x, "fixed", 8, skip={"4"})}
    # 64x8 at rank 8 costs 8 * 72 = 576 >= 512 MACs; 64x64 at rank 8 costs 1024 < 4096
    assert not plans["0"].factorize and "no MAC saving" in plans["0"].reason
    assert plans["2"].factorize and plans["2"].macs_after == 1024
    assert not plans["4"].factorize and plans["4"].reason == "skip_layers"
    before = network_cost(net, x)
    apply_ranks(net, {p.layer: p.rank for p in plans.values() if p.factorize})
    assert isinstance(net[2], LowRank) and isinstance(net[0], nn.Linear)
    after = network_cost(net, x)
    assert after.macs == before.macs - 4096 + 1024
    assert set(net.state_dict()) >= {"2.0.weight", "2.1.weight", "2.1.bias"}


def test_factorized_rank_deficient_layer_is_exact_below_full_rank():
    torch.manual_seed(0)
    layer = nn.Linear(64, 64)
    with torch.no_grad():  # a rank-8 weight: rank 8 reproduces it and costs 1024 instead of 4096 MACs
        layer.weight.copy_(torch.randn(64, 8) @ torch.randn(8, 64) / 8)
    x = torch.randn(3, 64)
    s = singular_values(layer)
    assert choose_rank(s, "energy", 1.0 - 1e-9) == 8
    assert torch.allclose(factorize(layer, 8)(x), layer(x), atol=1e-4)


# ---------------------------------------------------------------------- GANModule, EMA, checkpoints
def _checkpoint(module) -> dict:
    ckpt = {"state_dict": {k: v.clone() for k, v in module.state_dict().items()}}
    module.on_save_checkpoint(ckpt)
    return ckpt


def _same_samples(a, b) -> None:
    a.eval(), b.eval()
    assert torch.equal(a.generate(6, seed=3), b.generate(6, seed=3))


def test_ema_is_factorized_identically_and_a_fresh_module_rebuilds_it():
    torch.manual_seed(0)
    module = tiny_module(ema_decay=0.9)
    module.edits.append("generator", factorize_module(module, {"generator.stem.0": 3})["generator"])
    g, ema = module.generator.state_dict(), module.generator_ema.state_dict()
    assert set(g) == set(ema) and all(torch.equal(g[k], ema[k]) for k in g)
    assert not any(p.requires_grad for p in module.generator_ema.parameters())
    assert all(p.requires_grad for p in module.generator.parameters())
    assert module.generator.stem[0].rank == 3 and module.edits.ranks("generator") == {"stem.0": 3}
    ckpt = _checkpoint(module)
    assert EditRecord.from_state(ckpt["edits"]) == EditRecord({"generator": [Factorize({"stem.0": 3})]})  # no cut
    fresh = tiny_module(ema_decay=0.9)
    assert fresh.checkpoint_mismatch(ckpt) is None
    fresh.load_state_dict(ckpt["state_dict"])
    assert fresh.edits == module.edits
    _same_samples(module, fresh)
    assert fresh.checkpoint_mismatch(ckpt) is None  # adopting twice is harmless


def test_a_recorded_layer_the_network_lacks_is_one_clear_sentence():
    ckpt = _checkpoint(tiny_module())
    ckpt["edits"] = EditRecord({"generator": [Factorize({"stem.5": 2})]}).to_state()
    with pytest.raises(CheckpointError) as info:
        tiny_module().checkpoint_mismatch(ckpt)
    assert str(info.value).startswith("layer 'stem.5' is recorded as low-rank factorized but DCGANGenerator has no such")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("order", ["cut_then_factorize", "factorize_then_cut_rank"])
def test_rebuild_with_structured_pruning_in_either_order(order):
    torch.manual_seed(0)
    module = tiny_module(ema_decay=0.9)
    if order == "cut_then_factorize":
        module.edits.append("generator", cut_units(module, "generator", {"stem.0": torch.tensor([0, 2, 3])}))  # 3 of 4 feature maps
        module.edits.append("generator", factorize_module(module, {"generator.stem.0": 2})["generator"])
        assert module.generator.stem[0][1].weight.shape == (48, 2)
    else:
        module.edits.append("generator", factorize_module(module, {"generator.stem.0": 4})["generator"])
        module.edits.append("generator", cut_units(module, "generator", {"stem.0.0": torch.tensor([0, 1, 3])}))  # prune the rank itself
        assert module.generator.stem[0][0].weight.shape == (3, 8)
    ckpt = _checkpoint(module)
    fresh = tiny_module(ema_decay=0.9)
    assert fresh.checkpoint_mismatch(ckpt) is None
    fresh.load_state_dict(ckpt["state_dict"])
    _same_samples(module, fresh)


# ---------------------------------------------------------------------- through train.py
def _tiny_args(run, *extra) -> list[str]:
    # monitor null: last.ckpt is rewritten every epoch (with a monitor, Lightning 2.6 writes
    # last.ckpt only on epochs that improve it)
    return tiny_run_args(run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", *extra)


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_py_factorizes_reports_and_reloads_in_a_fresh_process(tmp_path):
    run = tmp_path / "run"
    cli = GANLightningCLI(args=["fit", *_tiny_args(run, "--trainer.max_epochs", "2", "--callbacks", "lowrank", "--lowrank.epoch", "1", "--lowrank.metric", "swd")])
    module = cli.model.cpu().eval()
    callback = next(cb for cb in cli.trainer.callbacks if isinstance(cb, LowRankFactorization))
    assert callback.done and callback.ranks == {"generator.stem.0": 2}  # 64x8 at ratio 0.25; blocks.0 is the output layer
    assert isinstance(module.generator.stem[0], LowRank) and isinstance(module.generator_ema.stem[0], LowRank)
    # the report: MACs of the factorized generator, the dense reference split over the factors
    folder = run / "version_0"
    event = _rows(folder / "tables" / "compress_events.csv")
    assert len(event) == 1 and event[0]["event"] == "lowrank" and event[0]["epoch"] == "1"
    g_macs = network_cost(module.generator, torch.zeros(2, 8)).macs
    assert int(event[0]["g_macs"]) == g_macs == 2 * (8 + 64) + 1024
    layers = {r["layer"]: r for r in _rows(folder / "tables" / "compress_layers.csv") if r["network"] == "generator"}
    assert int(layers["stem.0.0"]["dense_weights"]) + int(layers["stem.0.1"]["dense_weights"]) == 512
    assert float(event[0]["g_sparsity"]) == pytest.approx((512 - 144) / (512 + 64), abs=1e-4)
    plan = {r["layer"]: r for r in _rows(folder / "tables" / "compress_lowrank_layers.csv")}
    assert plan["stem.0"]["factorize"] == "True" and plan["blocks.0"]["reason"] == "skip_layers"
    metrics = _rows(folder / "metrics.csv")
    assert any(r.get("compress/g_macs") and float(r["compress/g_macs"]) == g_macs for r in metrics)
    assert any(r.get("compress/swd_after") for r in metrics)

    last = cli.trainer.checkpoint_callback.last_model_path
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and EditRecord.from_state(ckpt["edits"]) == EditRecord({"generator": [Factorize({"stem.0": 2})]})
    assert {"generator.stem.0.0.weight", "generator.stem.0.1.weight", "generator_ema.stem.0.0.weight"} <= set(ckpt["state_dict"])
    out = tmp_path / "fresh.pt"
    code = (
        "import sys, torch; from gan_lightning.core.module import GANModule;"
        "m = GANModule.load_from_checkpoint(sys.argv[1], map_location='cpu').eval();"
        "torch.save(m.generate(16, seed=5), sys.argv[2])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, last, str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.allclose(torch.load(out, weights_only=True), module.generate(16, seed=5), atol=1e-6)

    # resuming continues the factorized run without a second event
    assert main(_tiny_args(run, "--trainer.max_epochs", "3", "--callbacks", "lowrank", "--lowrank.epoch", "1", "--lowrank.metric", "swd", "--ckpt_path", last)) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 2 and EditRecord.from_state(resumed["edits"]) == EditRecord({"generator": [Factorize({"stem.0": 2})]})
    assert len(_rows(folder / "tables" / "compress_events.csv")) == 1


class RankState(Callback):
    """Saves each DDP rank's final state and factorization (attached through the CLI, so it
    also runs in the worker process that re-executes train.py)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        # parameters (EMA included), not buffers: BatchNorm statistics are per rank by design
        state = {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()}
        torch.save({"state": state, "lowrank": {f"{n}.{k}": r for n in pl_module.edits.networks for k, r in pl_module.edits.ranks(n).items()}, "world_size": trainer.world_size}, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


@pytest.mark.slow
def test_ddp_two_processes_factorize_identically_and_keep_training_in_step(tmp_path):
    dump = tmp_path / "ranks"
    cmd = [
        *_tiny_args(tmp_path), "--trainer.max_epochs", "2",
        "--callbacks", "lowrank", "--lowrank.epoch", "1", "--lowrank.network", "both",
        "--lowrank.rank_mode", "energy", "--lowrank.rank_value", "0.6", "--lowrank.metric", "swd",
        "--trainer.callbacks+=tests.callbacks.test_lowrank.RankState", "--trainer.callbacks.out_dir", str(dump),
    ]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["world_size"] == 2 and r0["lowrank"] == r1["lowrank"]
    assert set(r0["lowrank"]) == {"generator.stem.0", "discriminator.net.0"}
    # the re-wrapped DDP kept averaging gradients over the new factors: identical weights
    assert {"generator.stem.0.0.weight", "generator_ema.stem.0.1.weight", "discriminator.net.0.1.bias"} <= set(r0["state"])
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lowrank.rank_mode", "fixed", "--lowrank.rank_value", "0"], "--lowrank.rank_value must be an integer >= 1 (the rank kept per layer) with rank_mode fixed, got 0"),
        (["--lowrank.rank_mode", "fixed", "--lowrank.rank_value", "2.5"], "--lowrank.rank_value must be an integer >= 1"),
        (["--lowrank.rank_mode", "ratio", "--lowrank.rank_value", "1.5"], "--lowrank.rank_value must be in (0, 1] (the fraction of each layer's full rank kept) with rank_mode ratio, got 1.5"),
        (["--lowrank.rank_mode", "energy", "--lowrank.rank_value", "0"], "--lowrank.rank_value must be in (0, 1] (the share of squared singular values kept) with rank_mode energy, got 0"),
        (["--lowrank.epoch", "2"], "--lowrank.epoch 2 is never reached because training ends after epoch 1 (--trainer.max_epochs 2): set --lowrank.epoch below 2 or train longer"),
        (["--lowrank.skip_layers", "[generator.nope]"], "--lowrank.skip_layers names unknown layer(s) generator.nope; factorizable layers:"),
        (["--lowrank.rank_mode", "fixed", "--lowrank.rank_value", "8"], "--lowrank.rank_value 8 (rank_mode fixed) makes no layer of the generator cheaper"),
        (["--lowrank.network", "both", "--lowrank.rank_mode", "ratio", "--lowrank.rank_value", "1.0"], "(rank_mode ratio) makes no layer of the generator or discriminator cheaper"),
        (["--callbacks", "prune,lowrank", "--prune.start_epoch", "1"], "--callbacks prune,lowrank on the same network needs every pruning event before --lowrank.epoch 1"),
        (["--callbacks", "prune,lowrank", "--prune.start_epoch", "0", "--prune.granularity", "unstructured"], "no masks left after them"),
    ],
)
def test_bad_lowrank_input_is_one_clear_sentence(tmp_path, capsys, extra, message):
    run = tmp_path / "run"
    callbacks = [] if "--callbacks" in extra else ["--callbacks", "lowrank"]
    assert main(_tiny_args(run, "--trainer.max_epochs", "2", "--lowrank.epoch", "1", *callbacks, *extra)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err  # one line, one sentence
    assert not run.exists()


def test_lowrank_options_need_the_callback(tmp_path, capsys):
    assert main(_tiny_args(tmp_path / "run", "--lowrank.epoch", "1")) == 2
    assert "--lowrank.epoch was set but the 'lowrank' callback is not switched on; add it with --callbacks lowrank" in capsys.readouterr().err
