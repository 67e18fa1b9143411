"""The quantize callback: the int8 grid of the fake quantization, prune,distill,quantize in one
run, resume mid-QAT, and agreement with the int8 ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pytorch_lightning import Callback
from torch import nn

from callbacks.quantize import Quantize
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.compress.fake_quant import ActivationRanges, FakeQuantizer, activation_qparams, quantize_activation, quantize_weight, weight_scale
from gan_lightning.compress.profiling import evaluating
from gan_lightning.deploy.inference import subpixel
from gan_lightning.errors import ConfigError
from tests.helpers import tiny_run_args

QAT = ["--callbacks", "prune,distill,quantize", "--prune.start_epoch", "1", "--prune.metric", "none", "--quantize.start_epoch", "2", "--model.ema_decay", "0.9"]


def cli_args(run: Path, *extra: str) -> list[str]:
    return ["fit", *tiny_run_args(run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--checkpoint.dirpath", str(run / "ckpts"), "--trainer.num_sanity_val_steps", "0", *extra)]


@pytest.mark.parametrize("layer", [nn.Linear(6, 5), nn.Conv2d(3, 5, 3), nn.ConvTranspose2d(3, 5, 3), nn.ConvTranspose2d(3, 5, 4, 2, 1)], ids=["linear", "conv", "convT", "convT-stride2"])
def test_fake_quantized_weights_lie_on_the_int8_grid_within_half_a_step(layer):
    torch.manual_seed(0)
    w = layer.weight.detach() * torch.rand_like(layer.weight) * 10
    q, scale = quantize_weight(layer, w), weight_scale(layer, w)
    assert (q - w).abs().le(scale / 2 + 1e-7).all()
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
    channels = q.transpose(0, 1) if isinstance(layer, nn.ConvTranspose2d) else q
    assert all(len(c.unique()) <= 255 for c in channels)
    if isinstance(layer, nn.ConvTranspose2d) and layer.stride == (2, 2):
        # the export's sub-pixel Conv, quantized per its own output channel, finds the weights already on its grid
        layer.weight.data.copy_(q)
        conv = subpixel(layer)[0]
        requantized = quantize_weight(conv, conv.weight.detach())
        assert torch.allclose(requantized, conv.weight, atol=1e-6)
    # gradients pass straight through
    w.requires_grad_(True)
    quantize_weight(layer, w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_fake_quantized_activations_take_at_most_256_values_and_clip_outside_the_range():
    x = torch.linspace(-3, 5, 10001, requires_grad=True)
    lo, hi = torch.tensor(-1.0), torch.tensor(4.0)
    q = quantize_activation(x, lo, hi)
    scale, zero = activation_qparams(lo, hi)
    inside = (x >= lo) & (x <= hi)
    assert len(q.unique()) <= 256 and (q - x)[inside].abs().max() <= scale / 2 + 1e-6
    assert torch.allclose(q[~inside].detach().abs().max(), (127 - zero) * scale)  # hi end of the grid
    q.sum().backward()
    low, high = (-128 - zero) * scale, (127 - zero) * scale  # the grid's ends: lo and hi up to rounding of the zero point
    assert (x.grad[(x > low) & (x < high)] == 1).all() and (x.grad[(x < low) | (x > high)] == 0).all()
    relu_range = activation_qparams(torch.tensor(0.5), torch.tensor(2.0))  # 0 is always representable
    assert relu_range[1] == -128


def test_bad_settings_name_their_flag():
    with pytest.raises(ConfigError, match="--quantize.start_epoch must be an integer >= 0"):
        Quantize(start_epoch=-1)
    with pytest.raises(ConfigError, match=r"--quantize.range_momentum must be in \(0, 1\]"):
        Quantize(range_momentum=0)


class Probe(Callback):
    """At the end of each training epoch: the eval-mode outputs of the generator and its EMA copy
    against a reference fake-quantized forward written out by hand for the tiny DCGAN."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, bool, float, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        quantize = next(cb for cb in trainer.callbacks if isinstance(cb, Quantize))
        z = pl_module.sample_z(16, seed=5)
        errors = []
        for net in (pl_module.generator, pl_module.generator_ema):
            with evaluating(net), torch.no_grad():
                out = net(z)
                ref = reference_forward(net, z, quantize.ranges.ranges) if quantize.active else out
            errors.append(float((out - ref).abs().max()))
        self.rows.append((trainer.current_epoch, quantize.active, *errors))


def reference_forward(g, z, ranges):
    act = lambda x, key: quantize_activation(x, *ranges[key])  # noqa: E731
    stem, up = g.stem[0], g.blocks[0]
    h = F.relu(g.stem[1](F.linear(act(z, "stem.0:in"), quantize_weight(stem, stem.weight))))
    h = act(h.view(len(z), -1, 4, 4), "blocks.0:in")
    h = F.conv_transpose2d(h, quantize_weight(up, up.weight), up.bias, 2, 1)
    return torch.tanh(act(h, "blocks.0:out"))


def test_prune_distill_quantize_in_one_run(tmp_path):
    probe = ["--trainer.callbacks+=tests.callbacks.test_quantize.Probe"]
    cli = GANLightningCLI(args=cli_args(tmp_path, *QAT, "--trainer.max_epochs", "3", *probe))
    probe = next(cb for cb in cli.trainer.callbacks if isinstance(cb, Probe))
    assert [row[:2] for row in probe.rows] == [(0, False), (1, False), (2, True)]
    assert all(row[2] < 1e-6 and row[3] < 1e-6 for row in probe.rows)  # G and EMA compute the fake-quantized forward
    g = cli.model.generator
    assert g.stem[0].weight.shape[0] < 64  # the prune cut (dense: width 4 x 16)
    assert list(g.state_dict()) == ["stem.0.weight", "stem.1.weight", "stem.1.bias", "stem.1.running_mean", "stem.1.running_var", "stem.1.num_batches_tracked", "blocks.0.weight", "blocks.0.bias"]
    assert "forward" not in vars(g.stem[0])  # float layers after fit
    metrics = (tmp_path / "csv").rglob("metrics.csv") if (tmp_path / "csv").exists() else tmp_path.rglob("metrics.csv")
    text = next(iter(metrics)).read_text()
    assert "compress/fake_quant_error" in text and "train/g_term/distill_output" in text
    distill = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "Distill")
    assert distill.teacher_net is not None and distill.teacher_net.stem[0].weight.shape[0] == 64


def test_quantize_before_a_pruning_event_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--quantize.start_epoch 1 must come after the last prune event"):
        GANLightningCLI(args=cli_args(tmp_path, *QAT[:-4], "--quantize.start_epoch", "1", "--trainer.max_epochs", "3"))


def test_resume_mid_qat_continues_with_the_saved_ranges(tmp_path):
    steps = ["--trainer.max_epochs", "4"]
    whole = GANLightningCLI(args=cli_args(tmp_path / "whole", *QAT, *steps))
    # stopped after epoch 2 (QAT's first epoch: 3 batches x 2 optimizer steps a batch), then resumed from last.ckpt
    GANLightningCLI(args=cli_args(tmp_path / "cut", *QAT, *steps, "--trainer.max_steps", str(3 * 3 * 2)))
    last = tmp_path / "cut" / "ckpts" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["callbacks"]["Quantize"]
    assert saved["active"] and saved["started"] == 2 and set(saved["ranges"]["ranges"]) == {"stem.0:in", "blocks.0:in", "blocks.0:out"}
    resumed = GANLightningCLI(args=cli_args(tmp_path / "cut", *QAT, *steps, "--ckpt_path", str(last), "--trainer.callbacks+=tests.callbacks.test_quantize.Probe"))
    probe = next(cb for cb in resumed.trainer.callbacks if isinstance(cb, Probe))
    assert probe.rows[0][:2] == (3, True) and probe.rows[0][2] < 1e-6  # on from the first resumed step, on the saved ranges
    a, b = (next(cb for cb in cli.trainer.callbacks if isinstance(cb, Quantize)) for cli in (whole, resumed))
    assert (a.active, a.started) == (b.active, b.started) == (True, 2)
    # the same layers observed; the values drift apart as the resumed run's batches and latents do
    # (a resumed run draws them afresh), so they agree within a few percent, not bit for bit
    ra, rb = a.state_dict()["ranges"]["ranges"], b.state_dict()["ranges"]["ranges"]
    assert ra.keys() == rb.keys() and all(torch.allclose(torch.tensor(ra[k]), torch.tensor(rb[k]), rtol=0.05, atol=0.02) for k in ra)
    assert [(k, v.shape) for k, v in whole.model.state_dict().items()] == [(k, v.shape) for k, v in resumed.model.state_dict().items()]
