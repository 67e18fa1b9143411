"""The prune callback on the SNGAN ResNets: every criterion and both granularities on a
residual generator and a spectral-norm discriminator, schedules, retraining, resume and DDP."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.nn.utils import parametrize

from callbacks.prune import Prune
from datamodules.digits import DigitsDataModule
from gan_lightning.commands.train import GANLightningCLI
from gan_lightning.compress.importance import CRITERIA
from gan_lightning.compress.pruning import example_input
from gan_lightning.compress.surgery import trace
from gan_lightning.core.module import GANModule
from gan_lightning.errors import ConfigError
from gan_lightning.networks import ResNetDiscriminator, ResNetGenerator
from tests.helpers import REPO, make_trainer, train_py_ddp

SNGAN = str(REPO / "configs" / "sngan.yaml")

SMALL = ["--model.generator.init_args.width", "8", "--model.discriminator.init_args.width", "8", "--model.n_critic", "1",
         "--model.generator.init_args.image_size", "8", "--model.discriminator.init_args.image_size", "8", "--data.image_size", "8",
         "--model.generator.init_args.z_dim", "8", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]


def resnets(**kwargs) -> GANModule:
    torch.manual_seed(0)
    return GANModule(ResNetGenerator(z_dim=8, image_size=8, width=8), ResNetDiscriminator(image_size=8, width=8), loss="hinge", **kwargs)


def fit(tmp_path, module: GANModule, prune: Prune, epochs: int = 2):
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_train_batches=3, limit_val_batches=1, callbacks=[prune])
    trainer.fit(module, DigitsDataModule(image_size=8, batch_size=16))
    return trainer


def units(module: GANModule, network: str) -> dict[str, int]:
    return {g.producer: g.units for g in trace(getattr(module, network), example_input(module, network)).groups}


def sigma_of_normalized(layer) -> float:
    return torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_every_criterion_cuts_every_group_of_both_resnets(tmp_path, criterion):
    module = resnets(ema_decay=0.9)
    dense = {net: units(module, net) for net in ("generator", "discriminator")}
    fit(tmp_path, module, Prune(generator_amount=0.5, discriminator_amount=0.5, criterion=criterion, start_epoch=1, metric="none"))
    for net in ("generator", "discriminator"):
        assert units(module, net) == {k: v // 2 for k, v in dense[net].items()}  # every residual and inner group halved
    assert {k: v.shape for k, v in module.generator_ema.state_dict().items()} == {k: v.shape for k, v in module.generator.state_dict().items()}
    x = module.generate(4)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(module.discriminator(x)).all()
    for layer in module.discriminator.modules():  # the cut spectral-norm layers are still normalized (sigma ~ 1)
        if parametrize.is_parametrized(layer, "weight"):
            assert layer.parametrizations.weight[0]._u.numel() == layer.parametrizations.weight.original.shape[0]
            assert sigma_of_normalized(layer.eval()) == pytest.approx(1.0, abs=0.1)


def test_the_group_criterion_is_refused_for_single_weights():
    with pytest.raises(ConfigError, match="--prune.criterion group scores channel groups: it needs --prune.granularity structured"):
        Prune(criterion="group", granularity="unstructured")


def test_unstructured_masks_act_on_the_spectral_norm_layers_original_weights(tmp_path, seeded):
    module = resnets()
    prune = Prune(discriminator_amount=0.5, generator_amount=0.0, granularity="unstructured", start_epoch=0, metric="none")
    fit(tmp_path, module, prune, epochs=1)
    keys = [k for k in prune.masks if k.startswith("discriminator.")]
    assert keys and all(k.endswith(".parametrizations.weight.original") for k in keys)
    for key in keys:  # after the last D step of training, masked weights are still exactly zero
        weight = module.get_parameter(key)
        mask = prune.masks[key]
        assert not weight[~mask.to(weight.device)].any() and (~mask).float().mean().item() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("schedule,options", [("iterative", {"rounds": 2, "start_epoch": 1}), ("gradual", {"start_step": 0, "end_step": 4, "frequency": 2})])
def test_structured_schedules_reach_the_amount_on_the_resnet_generator(tmp_path, seeded, schedule, options):
    module = resnets()
    dense = units(module, "generator")
    prune = Prune(generator_amount=0.75, schedule=schedule, metric="none", **options)
    fit(tmp_path, module, prune, epochs=3)
    assert len(prune.history) >= 2  # more than one event
    assert units(module, "generator") == {k: round(v * 0.25) for k, v in dense.items()}


def test_network_retraining_reinitializes_the_cut_resnet(tmp_path, seeded):
    module = resnets()
    prune = Prune(generator_amount=0.5, retrain="network", start_epoch=1, metric="none")
    fit(tmp_path, module, prune)
    assert units(module, "generator")["stem"] == 4 and torch.isfinite(module.generate(2)).all()


def _cli(run, *extra) -> GANLightningCLI:
    return GANLightningCLI(args=["fit", "--config", SNGAN, *SMALL, "--trainer.default_root_dir", str(run), "--trainer.logger", "CSVLogger",
                                 "--trainer.logger.save_dir", str(run), "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null",
                                 "--callbacks", "prune", "--prune.metric", "none", *extra])


def test_resume_mid_schedule_gives_the_uninterrupted_runs_cut(tmp_path):
    schedule = ["--prune.schedule", "iterative", "--prune.rounds", "2", "--prune.start_epoch", "1", "--prune.generator_amount", "0.75",
                "--trainer.max_epochs", "3"]
    whole = _cli(tmp_path / "whole", *schedule)
    _cli(tmp_path / "cut", *schedule, "--trainer.max_steps", str(2 * 3 * 2))  # stopped after round 1: 2 epochs of 3 batches, D and G steps
    last = next((tmp_path / "cut").rglob("last.ckpt"))
    resumed = _cli(tmp_path / "cut", *schedule, "--ckpt_path", str(last))
    assert resumed.model.edits.to_state() == whole.model.edits.to_state()  # the same units kept, in the same events
    shapes = {k: v.shape for k, v in resumed.model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in whole.model.state_dict().items()}


@pytest.mark.slow
def test_ddp_ranks_hold_identical_pruned_resnets(tmp_path):
    dump = tmp_path / "ranks"
    cmd = ["--config", "sngan", *SMALL, "--trainer.default_root_dir", str(tmp_path), "--callbacks", "prune", "--prune.metric", "none",
           "--trainer.max_epochs", "2", "--prune.start_epoch", "1", "--prune.criterion", "taylor", "--prune.discriminator_amount", "0.5",
           "--trainer.callbacks+=tests.probes.RankDump", "--trainer.callbacks.out_dir", str(dump)]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["first_batch"] != r1["first_batch"]  # different shards, hence different scores per rank
    assert r0["params"]["generator.stem.weight"].shape[0] == 4 * 16  # 8 maps -> 4
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name


def test_the_sngan_preset_with_prune_and_distill_cuts_every_residual_block_and_tables_it(tmp_path):
    sixteen = ["--model.generator.init_args.image_size", "16", "--model.discriminator.init_args.image_size", "16", "--data.image_size", "16"]
    cli = _cli(tmp_path, *sixteen, "--trainer.log_every_n_steps", "1", "--callbacks", "prune,distill", "--prune.start_epoch", "1", "--prune.generator_amount", "0.5", "--trainer.max_epochs", "2")
    g = cli.model.generator
    convs = [n for n, m in g.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    rows = list(csv.DictReader(open(next(tmp_path.rglob("compress_layers.csv")))))
    table = {r["layer"]: r for r in rows if r["network"] == "generator"}
    assert set(table) == set(convs)  # every convolution, shortcut and the stem has its row
    blocks = {n.split(".")[1] for n in convs if n.startswith("blocks.")}
    assert len(blocks) == 2 and all(float(table[f"blocks.{b}.{part}"]["sparsity"]) > 0.4 for b in blocks for part in ("main.3", "main.6", "shortcut.1"))
    assert table["blocks.0.main.6"]["weight_shape"] == "4x4x3x3"  # 8 -> 4 channels in and out
    distill_terms = [r for r in csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))) if r.get("train/g_term/distill_output")]
    assert distill_terms and all(float(r["train/g_term/distill_output"]) > 0 for r in distill_terms)


def test_the_auto_criterion_says_what_it_chose_for_each_network(tmp_path, caplog):
    with caplog.at_level("INFO", logger="callbacks.prune"):
        fit(tmp_path, resnets(), Prune(generator_amount=0.5, discriminator_amount=0.5, start_epoch=1, metric="none"))
    said = [r.getMessage() for r in caplog.records if "--prune.criterion auto" in r.getMessage()]
    assert said == [f"prune: --prune.criterion auto scores {net} by group (its channels are joined by residual additions)"
                    for net in ("generator", "discriminator")]
