"""Every plug-in on residual networks (issue 22, item 3): lowrank, prune + distill and clip on tiny
SNGAN ResNets (spectral norm in D), export of a pruned ResNet generator to compact, TorchScript and
ONNX and ``generate`` from each file, and prune and lowrank on an unmodified torchvision
``resnet18`` inside an ordinary LightningModule classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.nn.utils.parametrize import is_parametrized, type_before_parametrizations
from torch.utils.data import DataLoader, TensorDataset

from callbacks.clip import WeightClipping
from callbacks.distill import AUXILIARY, Distill
from callbacks.lowrank import LowRankFactorization
from callbacks.prune import Prune
from datamodules.digits import DigitsDataModule
from gan_lightning.compress.lowrank import LowRank, apply_ranks, factorize_module, plan_ranks, singular_values
from gan_lightning.compress.profiling import network_cost
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.module import GANModule
from gan_lightning.networks import ResNetDiscriminator, ResNetGenerator
from tests.helpers import make_trainer, tiny_run_args

WIDTH, SIZE, Z = 8, 16, 8
C = 0.0625  # a power of two: "|w| <= C" holds exactly in fp32


def sngan(**kwargs) -> GANModule:
    torch.manual_seed(0)
    return GANModule(ResNetGenerator(z_dim=Z, image_size=SIZE, channels=1, width=WIDTH),
                     ResNetDiscriminator(image_size=SIZE, channels=1, width=WIDTH), loss="hinge", **kwargs)


def fit(tmp_path: Path, module: pl.LightningModule, callbacks: list, epochs: int = 1, batches: int = 2, data=None) -> pl.Trainer:
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0, log_every_n_steps=1, callbacks=callbacks)
    if data is None:
        trainer.fit(module, datamodule=DigitsDataModule(image_size=SIZE, batch_size=8))
    else:
        trainer.fit(module, train_dataloaders=data)
    return trainer


def optimized(trainer: pl.Trainer, index: int = 0) -> set[int]:
    return {id(p) for group in trainer.optimizers[index].param_groups for p in group["params"]}


# ---------------------------------------------------------------------- lowrank
def test_lowrank_full_rank_resnet_generator_is_the_dense_one():
    module = sngan(ema_decay=0.9).eval()
    z = torch.randn(5, Z)
    with torch.no_grad():
        dense = module.generator(z)
    names = [p.layer for p in plan_ranks(module.generator, torch.zeros(2, Z), "ratio", 1.0, set())]
    assert {"stem", "blocks.0.main.3", "blocks.1.main.6", "blocks.0.shortcut.1", "head.2"} <= set(names)  # main paths and shortcuts
    factorize_module(module, {f"generator.{n}": len(singular_values(module.generator.get_submodule(n))) for n in names})
    assert all(isinstance(module.generator.get_submodule(n), LowRank) for n in names)
    with torch.no_grad():
        assert torch.allclose(module.generator(z), dense, atol=1e-5)


def test_lowrank_cuts_the_resnet_generators_macs_and_training_goes_on(tmp_path):
    module = sngan(ema_decay=0.9)
    before = network_cost(module.generator, torch.zeros(1, Z))
    lowrank = LowRankFactorization(epoch=0, rank_mode="ratio", rank_value=0.25, metric="none", latency_batch=2)
    trainer = fit(tmp_path, module, [lowrank])
    # every 3x3 and 1x1 conv of both residual blocks and the stem; the head (output layer) is skipped
    assert set(lowrank.ranks) == {"generator.stem"} | {f"generator.blocks.{b}.{p}" for b in (0, 1) for p in ("main.3", "main.6", "shortcut.1")}
    assert isinstance(module.generator_ema.blocks[1].shortcut[1], LowRank)
    assert network_cost(module.generator, torch.zeros(1, Z)).macs < 0.5 * before.macs
    assert {id(p) for p in module.generator.parameters()} <= optimized(trainer)  # trained after the event
    assert trainer.global_step > 0 and module.generate(3, seed=1).shape == (3, 1, SIZE, SIZE)


def test_lowrank_keeps_spectral_norm_on_a_factorized_discriminator():
    """A spectral-norm layer's class is torch's generated ParametrizedConv2d; its factors are plain
    Conv2d/Linear, each spectral-normalized again, so D keeps its Lipschitz bound."""
    torch.manual_seed(0)
    d = ResNetDiscriminator(image_size=8, channels=1, width=WIDTH)
    x = torch.randn(4, 1, 8, 8)
    for _ in range(30):  # converge the power iteration
        d(x)
    d.eval()
    with torch.no_grad():
        dense = d(x)
    names = [p.layer for p in plan_ranks(d, x, "ratio", 1.0, set())]
    apply_ranks(d, {n: len(singular_values(d.get_submodule(n))) for n in names})
    factors = [f for n in names for f in d.get_submodule(n)]
    assert {type_before_parametrizations(f) for f in factors} <= {nn.Conv2d, nn.Linear}
    assert all(is_parametrized(f, "weight") for f in factors)
    assert all(float(torch.linalg.matrix_norm(f.weight.reshape(f.weight.shape[0], -1), 2)) <= 1 + 1e-5 for f in factors)
    with torch.no_grad():  # what differs is the dense layers' power-iteration error, which the factors do not have
        assert torch.allclose(d(x), dense, rtol=1e-3, atol=1e-3 * float(dense.abs().max()))
    # a checkpoint rebuilds the same layers (shapes only) and loads them exactly
    fresh = ResNetDiscriminator(image_size=8, channels=1, width=WIDTH)
    apply_ranks(fresh, {n: d.get_submodule(n).rank for n in names}, weights=False)
    fresh.load_state_dict(d.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), d(x))


# ---------------------------------------------------------------------- prune + distill
def test_distill_on_a_pruned_sngan_taps_block_outputs_through_adapters(tmp_path):
    module = sngan(ema_decay=0.9)
    distill = Distill(feature_layers=["blocks.0", "blocks.1"], perceptual_weight=1.0, alignment_weight=1.0)
    trainer = fit(tmp_path, module, [Prune(generator_amount=0.5, start_epoch=1, metric="none", latency_batch=2), distill], epochs=2)
    assert module.generator.blocks[0].main[3].weight.shape == (WIDTH // 2, WIDTH // 2, 3, 3)  # the residual width was cut
    assert distill.teacher_net.blocks[0].main[3].weight.shape == (WIDTH, WIDTH, 3, 3)
    adapters = module.auxiliary[AUXILIARY]
    assert set(adapters) == {"blocks__0", "blocks__1"}
    assert all((a.in_channels, a.out_channels) == (WIDTH // 2, WIDTH) for a in adapters.values())
    assert {id(p) for p in adapters.parameters()} <= optimized(trainer, 0)  # trained with G
    assert not {id(p) for p in adapters.parameters()} & optimized(trainer, 1)
    # the perceptual term goes through the spectral-norm D
    assert all(is_parametrized(m, "weight") for m in module.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    for term in ("distill_output", "distill_feature", "distill_alignment", "distill_perceptual"):
        value = trainer.callback_metrics[f"train/g_term/{term}"]
        assert torch.isfinite(value) and float(value) > 0, term


# ---------------------------------------------------------------------- clip
class AfterDStep(GANCallback):
    """Placed after clip: the largest |value| of every trainable D parameter after each D step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_discriminator_step_end(self, trainer, module) -> None:
        self.seen.append({n: float(p.detach().abs().max()) for n, p in module.discriminator.named_parameters() if p.requires_grad})


def test_clip_bounds_the_spectral_norm_discriminators_original_weights(tmp_path):
    """Spectral norm divides ``parametrizations.weight.original`` by its largest singular value on
    every read; the trained (and clipped) parameter is the original, the power-iteration vectors
    are buffers and stay unit vectors."""
    module = GANModule(ResNetGenerator(z_dim=Z, image_size=SIZE, channels=1, width=WIDTH),
                       ResNetDiscriminator(image_size=SIZE, channels=1, width=WIDTH),
                       loss="wasserstein", optimizer="rmsprop", lr_d=1e-2, lr_g=1e-3, n_critic=2)
    probe = AfterDStep()
    fit(tmp_path, module, [WeightClipping(clip_value=C, parameters="weights"), probe])
    names = set(probe.seen[0])
    assert sum(n.endswith("parametrizations.weight.original") for n in names) == sum(
        isinstance(m, (nn.Conv2d, nn.Linear)) for m in module.discriminator.modules())
    assert len(probe.seen) == 4 and all(max(step.values()) <= C for step in probe.seen)  # 2 batches x n_critic 2
    assert max(probe.seen[-1].values()) == C  # RMSprop at lr 1e-2 pushes weights past C: the clamp had work to do
    u = [b for n, b in module.discriminator.named_buffers() if n.endswith("_u")]
    assert u and all(abs(float(v.norm()) - 1) < 1e-4 for v in u)


# ---------------------------------------------------------------------- export and generate
@pytest.fixture(scope="module")
def pruned_resnet(tmp_path_factory) -> Path:
    """A train.py run of an 8x8 SNGAN whose generator is structurally pruned at epoch 0."""
    run = tmp_path_factory.mktemp("pruned_resnet")
    g = {"class_path": "gan_lightning.networks.ResNetGenerator", "init_args": {"z_dim": Z, "image_size": 8, "channels": 1, "width": WIDTH}}
    d = {"class_path": "gan_lightning.networks.ResNetDiscriminator", "init_args": {"image_size": 8, "channels": 1, "width": WIDTH}}
    from train import main

    assert main(tiny_run_args(
        run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--model.generator", json.dumps(g),
        "--model.discriminator", json.dumps(d), "--model.loss", "hinge", "--model.ema_decay", "0.9", "--callbacks", "prune",
        "--prune.start_epoch", "0", "--prune.generator_amount", "0.5", "--prune.metric", "none",
    )) == 0
    return run / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("fmt,name", [("compact", "g.pt"), ("torchscript", "g.ts"), ("onnx", "g.onnx")])
def test_export_and_generate_a_pruned_resnet_generator(tmp_path, pruned_resnet, fmt, name):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")
    from gan_lightning.commands import export as export_command
    from gan_lightning.commands import generate as generate_command
    from gan_lightning.deploy.runtimes import load_runtime

    out = tmp_path / name
    assert export_command.main(["--ckpt_path", str(pruned_resnet), "--out", str(out), "--format", fmt]) == 0
    module = GANModule.load_from_checkpoint(pruned_resnet, map_location="cpu").eval()
    student = module.sampling_generator
    assert isinstance(student, ResNetGenerator) and student.blocks[0].main[3].weight.shape[0] == WIDTH // 2
    card = json.loads(out.with_name(name + ".card.json").read_text())
    assert card["cost"]["mac_reduction"] > 2 and card["cost"]["macs_per_sample"] == network_cost(student, torch.zeros(1, Z)).macs
    if fmt != "compact":  # the command verifies the exported runtime against the checkpoint's generator
        assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]
    z = module.sample_z(6, seed=2)
    with torch.no_grad():
        assert torch.allclose(load_runtime(out)(z), student(z), atol=1e-5)
    n = 5
    for source, folder in ((out, tmp_path / "exported"), (pruned_resnet, tmp_path / "checkpoint")):
        assert generate_command.main(["--source", str(source), "--out", str(folder), "--num_samples", str(n), "--batch_size", "2", "--device", "cpu"]) == 0
    images = [np.stack([np.asarray(Image.open(f / f"{i:06d}.png"), dtype=np.int16) for i in range(n)]) for f in (tmp_path / "exported", tmp_path / "checkpoint")]
    assert images[0].shape == (n, 8, 8) and len(np.unique(images[1])) > 10
    assert np.abs(images[0] - images[1]).max() <= (1 if fmt == "onnx" else 0)  # ONNX Runtime may round to the next level


# ---------------------------------------------------------------------- torchvision resnet18, any LightningModule
class ResNetClassifier(pl.LightningModule):
    """An unmodified torchvision resnet18 on 3x16x16 inputs (its adaptive pooling takes any size)."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.model = torchvision.models.resnet18(num_classes=10)
        self.example_input_array = torch.zeros(2, 3, 16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class AtFirstBatch(pl.Callback):
    """Right after the event at the start of epoch 0: the weights and what the optimizer holds."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self.weights = {n: p.detach().clone() for n, p in module.model.named_parameters()}
            self.optimized, self.parameters = optimized(trainer), {id(p) for p in module.parameters()}


def classifier_data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)), batch_size=4)


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_structured_pruning_cuts_every_stage_of_torchvisions_resnet18(tmp_path):
    torch.manual_seed(0)
    module, probe = ResNetClassifier(), AtFirstBatch()
    dense = {n: m.out_channels for n, m in convs(module.model).items()}
    fit(tmp_path, module, [Prune(networks={"model": 0.5}, granularity="structured", start_epoch=0, metric="none", latency_batch=2), probe], data=classifier_data())
    cut = convs(module.model)
    assert {n: m.out_channels for n, m in cut.items()} == {n: c // 2 for n, c in dense.items()}  # every conv, stem to layer4
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for block in (0, 1):  # the residual add lines up: the block's output width is its input's (or downsample's)
            conv2 = cut[f"{stage}.{block}.conv2"]
            shortcut = cut.get(f"{stage}.{block}.downsample.0")
            assert conv2.out_channels == (shortcut.out_channels if shortcut is not None else cut[f"{stage}.{block}.conv1"].in_channels)
    assert module.model.fc.in_features == 256 and module.model.fc.out_features == 10  # the output layer is left alone
    assert probe.optimized == probe.parameters  # the optimizer was rebuilt over the cut parameters
    assert any(not torch.equal(p, probe.weights[n]) for n, p in module.model.named_parameters())  # and trained them
    module.eval()
    with torch.no_grad():
        assert module(torch.randn(3, 3, 16, 16)).shape == (3, 10)


def test_lowrank_factorizes_torchvisions_resnet18(tmp_path):
    torch.manual_seed(0)
    module, probe = ResNetClassifier(), AtFirstBatch()
    example = torch.zeros(1, 3, 16, 16)
    before = network_cost(module.model, example).macs
    # energy ranks: the plan (an SVD of each of resnet18's 21 layers, the bulk of this test's time) is made once, at the event
    lowrank = LowRankFactorization(networks=["model"], epoch=0, rank_mode="energy", rank_value=0.3, metric="none", latency_batch=2)
    fit(tmp_path, module, [lowrank, probe], data=classifier_data())
    factorized = {n for n, m in module.model.named_modules() if isinstance(m, LowRank)}
    assert {"layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2"} <= factorized and "fc" not in factorized
    assert network_cost(module.model, example).macs < 0.6 * before
    assert probe.optimized == probe.parameters
    module.eval()
    with torch.no_grad():
        assert module(torch.randn(3, 3, 16, 16)).shape == (3, 10)
