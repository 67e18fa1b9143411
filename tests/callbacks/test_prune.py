"""The prune callback inside training: events, masks after every step, schedules, retraining
modes, the report, resume, reload in a fresh process and DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

import callbacks.prune as prune_module
import callbacks.prune_trial as prune_trial
from callbacks.prune import Prune
from datamodules.digits import DigitsDataModule
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.compress.edits import EditRecord
from gan_lightning.compress.profiling import network_cost
from gan_lightning.compress.pruning import example_input
from gan_lightning.compress.schedules import iterative_fraction, polynomial_sparsity
from gan_lightning.core.hooks import GANCallback
from gan_lightning.core.module import GANModule
from gan_lightning.errors import ConfigError
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator
from tests.helpers import REPO, make_trainer, train_py_ddp

TINY = str(REPO / "tests" / "tiny.yaml")


def module16(**kwargs) -> GANModule:
    """16x16 DCGAN: two channel groups in G (stem feature maps, one transposed conv), two in D."""
    return GANModule(DCGANGenerator(z_dim=8, image_size=16, width=4), DCGANDiscriminator(image_size=16, width=4), **kwargs)


def fit(tmp_path: Path, module: GANModule, *callbacks: Callback, epochs: int = 2, batches: int = 3):
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_train_batches=batches, limit_val_batches=1, callbacks=list(callbacks))
    trainer.fit(module, DigitsDataModule(image_size=16, batch_size=32))
    return trainer


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def weights(network) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in network.named_parameters() if n.endswith("weight") and p.dim() > 1}


class Snapshot(Callback):
    """Weights of every network at the start of each epoch (placed after Prune: after its event)."""

    def __init__(self) -> None:
        self.at_epoch: dict[int, dict[str, dict[str, torch.Tensor]]] = {}

    def on_train_epoch_start(self, trainer, module) -> None:
        nets = {"generator": module.generator, "discriminator": module.discriminator}
        if module.generator_ema is not None:
            nets["generator_ema"] = module.generator_ema
        self.at_epoch[trainer.current_epoch] = {k: weights(v) for k, v in nets.items()}


class MaskProbe(GANCallback):
    """After every optimizer step (placed after Prune), checks that pruned weights are still zero."""

    def __init__(self, prune: Prune) -> None:
        self.prune = prune
        self.checked = {"discriminator": 0, "generator": 0}

    def _check(self, module, network: str) -> None:
        nets = [getattr(module, network)] + ([module.generator_ema] if network == "generator" and module.generator_ema is not None else [])
        for key, mask in self.prune.masks.items():
            if key.startswith(network + "."):
                for net in nets:
                    w = dict(net.named_parameters())[key[len(network) + 1 :]]
                    assert not w[~mask].any(), f"{key} has non-zero pruned weights after a {network} step"
                self.checked[network] += 1

    def on_discriminator_step_end(self, trainer, module) -> None:
        self._check(module, "discriminator")

    def on_generator_step_end(self, trainer, module) -> None:
        self._check(module, "generator")


def test_structured_oneshot_cuts_every_layer_keeps_training_and_reports(tmp_path, seeded):
    module = module16(ema_decay=0.9)
    dense_g = network_cost(module.generator, example_input(module, "generator"))
    prune = Prune(generator_amount=0.5, discriminator_amount=0.5, latent_amount=0.25, start_epoch=1, metric="swd")
    snap = Snapshot()
    trainer = fit(tmp_path, module, prune, snap)
    g, d = module.generator, module.discriminator
    assert g.stem[0].weight.shape == (4 * 16, 6) and g.stem[1].num_features == 64  # 8 maps -> 4, z 8 -> 6
    assert g.blocks[0].weight.shape == (4, 2, 4, 4) and g.blocks[1].num_features == 2 and g.blocks[3].weight.shape[0] == 2
    assert d.net[0].weight.shape[0] == 2 and d.net[2].weight.shape[:2] == (4, 2) and d.net[-1].in_features == 4 * 16
    assert module.z_dim == 6 and module.generate(3).shape == (3, 1, 16, 16)
    ema_shapes = {k: v.shape for k, v in module.generator_ema.state_dict().items()}
    assert ema_shapes == {k: v.shape for k, v in g.state_dict().items()}
    opt_g, opt_d = trainer.optimizers  # optimizers follow the new parameters, and they trained
    assert {id(p) for group in opt_g.param_groups for p in group["params"]} == {id(p) for p in g.parameters()}
    assert {id(p) for group in opt_d.param_groups for p in group["params"]} == {id(p) for p in d.parameters()}
    assert not torch.equal(snap.at_epoch[1]["generator"]["blocks.0.weight"], g.blocks[0].weight)
    after_g = network_cost(g, example_input(module, "generator"))
    run = Path(trainer.logger.log_dir)
    event = read_csv(run / "tables" / "compress_events.csv")
    assert len(event) == 1 and event[0]["epoch"] == "1" and int(event[0]["g_macs"]) == after_g.macs < dense_g.macs / 2.5
    assert float(event[0]["metric_before"]) > 0 and event[0]["metric"] == "swd"
    layers = read_csv(run / "tables" / "compress_layers.csv")
    assert {(r["network"], r["layer"]) for r in layers} == {
        ("generator", "stem.0"), ("generator", "blocks.0"), ("generator", "blocks.3"),
        ("discriminator", "net.0"), ("discriminator", "net.2"), ("discriminator", "net.6"),
    }
    stem = next(r for r in layers if r["layer"] == "stem.0")
    assert stem["weight_shape"] == "64x6" and float(stem["sparsity"]) == pytest.approx(1 - 64 * 6 / (128 * 8), abs=1e-4)
    logged = read_csv(run / "metrics.csv")
    assert any(r.get("compress/g_macs") == str(float(after_g.macs)) for r in logged)


def test_round_to_leaves_channel_counts_in_multiples(tmp_path, seeded):
    module = module16()  # G: 8 stem feature maps, 4 channels in blocks.0; amount 0.7 keeps 2 and 1 of them without rounding
    fit(tmp_path, module, Prune(generator_amount=0.7, round_to=2, start_epoch=0, metric="none"), epochs=1, batches=2)
    assert module.generator.stem[1].num_features == 2 * 16 and module.generator.blocks[0].weight.shape[1] == 2
    with pytest.raises(ConfigError, match="--prune.round_to must be an integer >= 1, got 0"):
        Prune(round_to=0)


def test_unstructured_masks_hold_after_every_optimizer_step(tmp_path, seeded):
    module = module16(ema_decay=0.9, n_critic=2)
    prune = Prune(generator_amount=0.6, discriminator_amount=0.3, granularity="unstructured", criterion="taylor", start_epoch=0, metric="none")
    probe = MaskProbe(prune)
    fit(tmp_path, module, prune, probe)
    assert probe.checked["discriminator"] == 6 * 2 * 2 and probe.checked["generator"] == 6 * 2  # 6 batches, n_critic 2, 2 masked layers each
    for key, mask in prune.masks.items():
        expected = 0.6 if key.startswith("generator") else 0.3
        assert (~mask).float().mean().item() == pytest.approx(expected, abs=0.5 / mask.numel() + 1e-6)
    assert "generator.blocks.3.weight" not in prune.masks and "discriminator.net.6.weight" not in prune.masks  # output layers skipped


@pytest.mark.parametrize("retrain", ["connectivity", "weight", "network"])
def test_retraining_modes(tmp_path, seeded, retrain):
    module = module16()
    before, after = Snapshot(), Snapshot()
    prune = Prune(generator_amount=0.5, granularity="unstructured", start_epoch=1, retrain=retrain, metric="none")
    fit(tmp_path, module, before, prune, after)
    mask = prune.masks.get("generator.blocks.0.weight")
    pre, post = before.at_epoch[1]["generator"]["blocks.0.weight"], after.at_epoch[1]["generator"]["blocks.0.weight"]
    final = module.generator.blocks[0].weight.detach()
    if retrain == "weight":  # masks dropped: pruned weights grew back
        assert mask is None and (post == 0).float().mean() == pytest.approx(0.5, abs=0.01) and (final == 0).float().mean() < 0.1
        return
    assert not final[~mask].any()
    if retrain == "connectivity":  # the kept weights carry on from where they were
        assert torch.equal(post[mask], pre[mask])
    else:  # network correction: the pruned structure starts again from a fresh initialization
        assert not torch.allclose(post[mask], pre[mask])


def test_iterative_rounds_rewind_the_surviving_weights(tmp_path, seeded):
    module = module16()
    prune = Prune(generator_amount=0.75, granularity="unstructured", schedule="iterative", rounds=2, start_epoch=1, rewind_epoch=0, metric="none")
    snap = Snapshot()
    fit(tmp_path, module, prune, snap, epochs=3)
    rewound = snap.at_epoch[0]["generator"]  # the weights at the start of epoch 0, as saved by prune
    for epoch, k in ((1, 1), (2, 2)):
        w = snap.at_epoch[epoch]["generator"]["blocks.0.weight"]
        assert (w == 0).float().mean().item() == pytest.approx(iterative_fraction(k, 2, 0.75), abs=1 / w.numel())
        kept = w != 0
        assert torch.equal(w[kept], rewound["blocks.0.weight"][kept])


class SparsityPerBatch(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.values.append(float((module.generator.blocks[0].weight == 0).float().mean()))


def test_gradual_schedule_follows_the_cubic_ramp_in_batches(tmp_path, seeded):
    module = module16()
    prune = Prune(generator_amount=0.8, granularity="unstructured", schedule="gradual", start_step=0, end_step=5, frequency=2, metric="none")
    probe = SparsityPerBatch()
    fit(tmp_path, module, prune, probe)
    n = module.generator.blocks[0].weight.numel()
    expected = [0, 0, *[polynomial_sparsity(s, 0, 5, 0.8) for s in (2, 2, 4)], 0.8]  # events at batches 2, 4 and 5
    assert probe.values == pytest.approx([round(e * n) / n for e in expected], abs=1e-6)
    assert len(prune.history) == 3


def test_gradual_ramp_ending_after_training_is_refused_before_the_first_step(tmp_path):
    module = module16()
    prune = Prune(granularity="unstructured", schedule="gradual", end_step=100, metric="none")
    with pytest.raises(ConfigError, match=r"--prune.end_step 100 is after training ends \(6 batches\)"):
        fit(tmp_path, module, prune)
    assert not prune.history and (module.generator.stem[0].weight != 0).all()


def test_unstructured_masks_follow_a_latent_cut(tmp_path, seeded):
    module = module16()
    prune = Prune(generator_amount=0.5, latent_amount=0.5, granularity="unstructured", start_epoch=0, metric="none")
    probe = MaskProbe(prune)
    fit(tmp_path, module, prune, probe)
    stem = module.generator.stem[0].weight
    assert stem.shape[1] == module.z_dim == 4 and prune.masks["generator.stem.0.weight"].shape == stem.shape
    assert probe.checked["generator"] == 6 * 2


def test_dynamic_schedule_keeps_good_steps_and_rolls_back_the_first_bad_one(tmp_path, seeded, monkeypatch):
    verdicts = iter([1.0, 1.05, 1.02, 3.0])  # baseline, step 1 ok (within 10%), step 2 too bad
    for where in (prune_module, prune_trial):  # the verdict, and the metric before each step
        monkeypatch.setattr(where, "measure_quality", lambda *a, **k: next(verdicts))
    module = module16()
    snap = Snapshot()
    prune = Prune(generator_amount=0.5, schedule="dynamic", rounds=2, start_epoch=0, tolerance=0.1, metric="swd")
    fit(tmp_path, module, snap, prune, epochs=3)
    assert prune.stopped and prune.next_event == 1 and prune.trial is None
    assert module.generator.stem[0].weight.shape[0] == 6 * 16  # step 1 cut 8 maps to 6; step 2 (to 4) undone
    rolled = snap.at_epoch[1]["generator"]  # taken before step 2 was tried, so equal to what rollback restored
    assert prune.history[-1][0] == "dynamic-2-rolled-back"
    # after the rollback at the end of epoch 1, epoch 2 trained on from the restored weights
    assert rolled["stem.0.weight"].shape == module.generator.stem[0].weight.shape
    assert (module.generator.blocks[0].weight.abs().sum((0, 2, 3)) > 0).all()  # no unit left zeroed


def test_dynamic_schedule_rolls_back_a_step_that_costs_classes_even_within_the_fid_tolerance(tmp_path, seeded, monkeypatch):
    # val/modes: before step 1, after it, before step 2, after it (a class lost)
    modes = iter([10.0, 10.0, 10.0, 9.0])
    for where in (prune_module, prune_trial):
        monkeypatch.setattr(where, "measure_quality", lambda *a, **k: 1.0)  # the metric never objects
        monkeypatch.setattr(where, "measured_modes", lambda trainer: (trainer.current_epoch, next(modes)))
    module = module16()
    prune = Prune(generator_amount=0.5, schedule="dynamic", rounds=2, start_epoch=0, tolerance=0.1, metric="swd")
    fit(tmp_path, module, prune, epochs=3)
    assert prune.stopped and prune.next_event == 1  # step 1 kept, step 2 undone
    assert prune.history[-1][0] == "dynamic-2-rolled-back"
    assert module.generator.stem[0].weight.shape[0] == 6 * 16


def cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "CSVLogger",
        "--trainer.logger.save_dir", str(tmp_path), "--callbacks", "prune", "--prune.metric", "swd", *extra,
    ]


@pytest.mark.slow
def test_resume_mid_schedule_restores_masks_and_continues_the_schedule(tmp_path):
    schedule = ["--prune.granularity", "unstructured", "--prune.schedule", "iterative", "--prune.rounds", "2",
                "--prune.start_epoch", "1", "--prune.generator_amount", "0.75", "--trainer.max_epochs", "3"]
    whole = GANLightningCLI(args=cli_args(tmp_path / "whole", *schedule))
    # the same run stopped after epoch 1 (after round 1), then resumed from its last.ckpt
    GANLightningCLI(args=cli_args(tmp_path / "cut", *schedule, "--trainer.max_steps", str(2 * 3 * 2)))
    last = next((tmp_path / "cut").rglob("last.ckpt"))
    saved = torch.load(last, weights_only=True)
    saved_masks = next(v for k, v in saved["callbacks"].items() if k.startswith("Prune"))["masks"]
    assert saved_masks and next(v for k, v in saved["callbacks"].items() if k.startswith("Prune"))["next_event"] == 1
    resumed = GANLightningCLI(args=cli_args(tmp_path / "cut", *schedule, "--ckpt_path", str(last)))
    prune = next(cb for cb in resumed.trainer.callbacks if isinstance(cb, Prune))
    reference = next(cb for cb in whole.trainer.callbacks if isinstance(cb, Prune))
    for key, mask in saved_masks.items():  # round 1's masks carried over: still a subset of what is pruned now
        assert not (prune.masks[key] & ~mask).any()
    assert [row[:2] for row in prune.history] == [row[:2] for row in reference.history] == [["iterative-1", 1], ["iterative-2", 2]]
    assert [row[3] for row in prune.history] == [row[3] for row in reference.history]  # same sparsity per event
    assert resumed.trainer.current_epoch == whole.trainer.current_epoch == 3


@pytest.mark.slow
def test_structured_checkpoint_reloads_in_a_fresh_process_and_resumes(tmp_path):
    cli = GANLightningCLI(args=cli_args(tmp_path, "--prune.start_epoch", "0", "--prune.latent_amount", "0.25"))
    last = next(tmp_path.rglob("last.ckpt"))
    expected = cli.model.cpu().generate(8, seed=3)
    out = tmp_path / "fresh.pt"
    code = (
        "import torch; from gan_lightning.core.module import GANModule;"
        f"m = GANModule.load_from_checkpoint({str(last)!r}, map_location='cpu');"
        f"torch.save({{'x': m.generate(8, seed=3), 'z': m.z_dim}}, {str(out)!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fresh = torch.load(out, weights_only=True)
    assert fresh["z"] == cli.model.z_dim == 6 and torch.allclose(fresh["x"], expected, atol=1e-6)
    resumed = GANLightningCLI(args=cli_args(tmp_path, "--prune.start_epoch", "0", "--prune.latent_amount", "0.25", "--ckpt_path", str(last), "--trainer.max_epochs", "2"))
    assert resumed.trainer.current_epoch == 2 and resumed.model.generator.stem[0].weight.shape == cli.model.generator.stem[0].weight.shape


def test_best_checkpoint_tracks_the_pruned_model_and_the_dense_best_stays_on_disk(tmp_path):
    cli = GANLightningCLI(args=cli_args(tmp_path, "--trainer.max_epochs", "2", "--prune.start_epoch", "1"))
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.name == "best-epoch001.ckpt"  # however good the dense epoch 0 was
    assert (best.parent / "best-epoch000.ckpt").is_file()
    assert EditRecord.from_checkpoint(torch.load(best, weights_only=True)).compressed("generator")


@pytest.mark.slow
def test_ddp_ranks_hold_identical_pruned_networks(tmp_path):
    dump = tmp_path / "ranks"
    cmd = [
        *cli_args(tmp_path)[1:],
        "--trainer.max_epochs", "2", "--prune.start_epoch", "1", "--prune.criterion", "taylor",
        "--prune.discriminator_amount", "0.5", "--trainer.callbacks+=tests.probes.RankDump", "--trainer.callbacks.out_dir", str(dump),
    ]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["first_batch"] != r1["first_batch"]  # different shards, hence different scores per rank
    assert r0["params"]["generator.stem.0.weight"].shape[0] == 2 * 16  # 4 maps -> 2
    assert r0["params"]["discriminator.net.0.weight"].shape[0] == 2
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
