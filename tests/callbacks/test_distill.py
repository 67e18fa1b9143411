from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from callbacks.distill import AUXILIARY, Distill, weights_hash
from callbacks.lowrank import LowRankFactorization
from callbacks.prune import Prune
from datamodules.digits import DigitsDataModule
from gan_lightning.compress.lowrank import LowRank
from gan_lightning.deploy.export_file import export_generator, read_export
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANDiscriminator, DCGANGenerator
from tests.helpers import TINY, make_trainer, tiny_run_args, train_py_ddp
from train import main

G16 = {"z_dim": 8, "image_size": 16, "channels": 1, "width": 4}


def module16(**kwargs) -> GANModule:
    """A 16x16 DCGAN: a stem and one hidden transposed-convolution block, so both flat and
    feature-map taps exist."""
    torch.manual_seed(0)
    return GANModule(DCGANGenerator(**G16), DCGANDiscriminator(image_size=16, channels=1, width=4), loss="lsgan", **kwargs)


def fit(tmp_path: Path, module: GANModule, callbacks: list, epochs: int = 2, batches: int = 6, **trainer_kwargs):
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_train_batches=batches, limit_val_batches=1, log_every_n_steps=1,
                           callbacks=callbacks, **trainer_kwargs)
    trainer.fit(module, datamodule=DigitsDataModule(image_size=16, batch_size=16))
    return trainer


def logged(tmp_path: Path, key: str) -> list[float]:
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    return [float(r[key]) for r in rows if r.get(key)]


def test_the_teacher_is_frozen_and_adapters_exist_only_where_shapes_differ(tmp_path):
    module = module16(ema_decay=0.9)
    distill = Distill(perceptual_weight=1.0, alignment_weight=1.0)
    trainer = fit(tmp_path, module, [Prune(generator_amount=0.5, start_epoch=1, metric="none"), distill], epochs=3)
    teacher = distill.teacher_net
    assert weights_hash(teacher) == distill.teacher["sha256"]  # unchanged by two epochs of distillation
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    in_optimizers = {id(p) for opt in trainer.optimizers for group in opt.param_groups for p in group["params"]}
    assert not in_optimizers & {id(p) for p in teacher.parameters()}
    assert teacher.stem[0].out_features == 2 * module.generator.stem[0].out_features  # the dense generator
    # stem.2 (flat, 128 -> 64) and blocks.2 (4 -> 2 channels) differ; adapters map the student to the teacher
    adapters = module.auxiliary[AUXILIARY]
    assert set(adapters) == {"stem__2", "blocks__2"}
    assert isinstance(adapters["blocks__2"], torch.nn.Conv2d) and (adapters["blocks__2"].in_channels, adapters["blocks__2"].out_channels) == (2, 4)
    assert {id(p) for p in adapters.parameters()} <= {id(p) for p in trainer.optimizers[0].param_groups[0]["params"]}
    for term in ("distill_output", "distill_feature", "distill_alignment", "distill_perceptual"):
        assert logged(tmp_path, f"train/g_term/{term}"), term
    # neither a saved student nor an export carries the adapters or the teacher
    ckpt = tmp_path / "student.ckpt"
    trainer.save_checkpoint(ckpt)
    spec = {"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": G16}
    report = export_generator(module, tmp_path / "g.pt", spec=spec)
    assert not [k for k in read_export(report.path)["state_dict"] if "auxiliary" in k or "teacher" in k]
    loaded = GANModule.load_from_checkpoint(ckpt, generator=DCGANGenerator(**G16), discriminator=DCGANDiscriminator(image_size=16, channels=1, width=4))
    assert len(loaded.auxiliary) == 0 and not [k for k in loaded.state_dict() if k.startswith("auxiliary.")]


def test_each_loss_term_decreases_while_distilling(tmp_path):
    module = module16(lr_g=1e-3)
    distill = Distill(gan_weight=0.0, perceptual_weight=1.0, alignment_weight=1.0)
    fit(tmp_path, module, [Prune(generator_amount=0.5, start_epoch=0, metric="none"), distill], epochs=4, batches=10)
    for term in ("distill_output", "distill_feature", "distill_alignment", "distill_perceptual"):
        values = logged(tmp_path, f"train/g_term/{term}")
        assert len(values) == 40
        assert statistics.fmean(values[-8:]) < 0.9 * statistics.fmean(values[:8]), term
    # gan_weight 0: the adversarial term (still logged as train/g_adv) is left out of the loss
    terms = ("distill_output", "distill_feature", "distill_alignment", "distill_perceptual")
    assert logged(tmp_path, "train/g_adv")[-1] > 0.1
    assert logged(tmp_path, "train/g_loss")[-1] == pytest.approx(sum(logged(tmp_path, f"train/g_term/{t}")[-1] for t in terms), rel=1e-5)


@pytest.mark.parametrize("compression", ["prune", "lowrank"])
def test_taps_follow_the_layers_that_a_cut_or_a_factorization_replaced(tmp_path, compression):
    module = module16()
    # stem.0 is resized by the cut and replaced by a LowRank pair by the factorization
    distill = Distill(feature_layers=["stem.0", "blocks.0"])
    if compression == "prune":
        first = Prune(generator_amount=0.5, start_epoch=1, metric="none")
    else:
        first = LowRankFactorization(epoch=1, rank_mode="fixed", rank_value=2, metric="none")
    seen = {}

    class AtTrainEnd(pl.Callback):  # the taps are removed at teardown
        def on_train_end(self, trainer, pl_module):
            seen["attached"] = distill._taps["student"].attached_to(pl_module.generator)

    fit(tmp_path, module, [first, distill, AtTrainEnd()], epochs=2, batches=3)
    assert seen["attached"]
    if compression == "lowrank":
        assert isinstance(module.generator.stem[0], LowRank)
    # the taps saw the new layers' outputs: a stale tap would have no output and stop the run
    assert len(logged(tmp_path, "train/g_term/distill_feature")) == 3


def test_unstructured_pruning_hands_over_the_dense_teacher_without_resetting_the_optimizers(tmp_path):
    module = module16()
    distill = Distill()
    seen = {}

    class Moments(pl.Callback):  # Adam's moments survive a masking event, which changes no shape
        def on_train_epoch_start(self, trainer, pl_module):
            seen.setdefault("optimizers", []).append(id(trainer.optimizers[0]))

    fit(tmp_path, module, [Prune(generator_amount=0.8, granularity="unstructured", start_epoch=1, metric="none"), distill, Moments()], epochs=2, batches=3)
    weight = distill.teacher_net.stem[0].weight
    assert bool((weight != 0).all()) and float((module.generator.stem[0].weight == 0).float().mean()) == pytest.approx(0.8, abs=0.01)
    assert len(module.auxiliary[AUXILIARY]) == 0  # same shapes: no adapters
    assert seen["optimizers"][0] == seen["optimizers"][1]
    assert len(logged(tmp_path, "train/g_term/distill_output")) == 3


def test_a_tap_left_on_a_replaced_module_is_detected(tmp_path):
    from gan_lightning.compress.lowrank import factorize_module
    from gan_lightning.distill.taps import FeatureTaps

    module = module16()
    taps = FeatureTaps(module.generator, ["stem.0"])
    factorize_module(module, {"generator.stem.0": 2})
    assert not taps.attached_to(module.generator)
    module.generator(torch.zeros(2, 8))
    with pytest.raises(RuntimeError, match="saw no forward pass"):
        taps.collect()


def _tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    return tiny_run_args(tmp_path, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--checkpoint.dirpath", str(tmp_path / "ckpts"), *extra)


def test_resume_restores_the_teacher_and_the_adapters_exactly(tmp_path):
    distill = ["--callbacks", "prune,distill", "--prune.start_epoch", "1", "--prune.metric", "none", "--model.ema_decay", "0.9"]
    assert main(_tiny_args(tmp_path / "a", *distill, "--trainer.max_epochs", "2")) == 0
    saved = torch.load(tmp_path / "a" / "ckpts" / "last.ckpt", weights_only=True)
    record = saved["callbacks"]["Distill"]["teacher"]
    adapters = {k[len("auxiliary."):]: v for k, v in saved["state_dict"].items() if k.startswith("auxiliary.")}
    assert adapters and record["source"] == "the generator before compression"
    probe = ["--trainer.callbacks+=tests.probes.AuxiliaryAtStart", "--trainer.callbacks.out_dir", str(tmp_path / "probe")]
    resumed = ["--trainer.max_epochs", "3", "--ckpt_path", str(tmp_path / "a" / "ckpts" / "last.ckpt")]
    assert main(_tiny_args(tmp_path / "a", *distill, *resumed, *probe)) == 0
    start = torch.load(tmp_path / "probe" / "start.pt", weights_only=True)
    assert start["teacher_sha256"] == record["sha256"]
    assert start["auxiliary"].keys() == adapters.keys()
    assert all(torch.equal(start["auxiliary"][k], v) for k, v in adapters.items())
    final = torch.load(tmp_path / "a" / "ckpts" / "last.ckpt", weights_only=True)
    assert final["epoch"] == 2 and final["callbacks"]["Distill"]["teacher"]["sha256"] == record["sha256"]


def test_a_teacher_from_a_checkpoint_trains_a_smaller_student(tmp_path):
    assert main(_tiny_args(tmp_path / "teacher", "--trainer.max_epochs", "1")) == 0
    teacher = tmp_path / "teacher" / "ckpts" / "last.ckpt"
    student = ["--model.generator.init_args.width", "2", "--callbacks", "distill", "--distill.teacher_ckpt", str(teacher), "--trainer.max_epochs", "1"]
    assert main(_tiny_args(tmp_path / "student", *student)) == 0
    values = logged(tmp_path / "student", "train/g_term/distill_output")
    assert len(values) == 3 and all(v > 0 for v in values)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--callbacks", "distill"], "--callbacks distill needs a teacher and a student: switch on a compression callback that changes the generator"),
        (["--callbacks", "prune,distill", "--prune.start_epoch", "0", "--distill.feature_layers", "[stem.9]"],
         "--distill.feature_layers names stem.9, which DCGANGenerator does not have; e.g. stem.2"),
        (["--callbacks", "distill", "--distill.teacher_ckpt", "nope.ckpt"], "--distill.teacher_ckpt nope.ckpt does not exist"),
        (["--callbacks", "prune,distill", "--prune.start_epoch", "0", "--distill.output_weight", "-1"], "--distill.output_weight must be a number >= 0, got -1"),
    ],
)
def test_bad_input_is_one_sentence_before_training(tmp_path, capsys, extra, message):
    assert main(_tiny_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "ckpts").exists()


def test_a_teacher_of_another_data_shape_is_refused_naming_the_file(tmp_path, capsys):
    shape16 = ["--model.generator.init_args.image_size", "16", "--model.discriminator.init_args.image_size", "16",
               "--data.init_args.image_size", "16", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1"]
    assert main(_tiny_args(tmp_path / "other", *shape16)) == 0
    teacher = tmp_path / "other" / "ckpts" / "last.ckpt"
    capsys.readouterr()
    assert main(_tiny_args(tmp_path / "run", "--callbacks", "distill", "--distill.teacher_ckpt", str(teacher))) == 2
    err = capsys.readouterr().err
    assert f"--distill.teacher_ckpt {teacher}: the teacher makes samples of shape (1, 16, 16) but the student makes (1, 8, 8)" in err


def test_bf16_mixed_distils_with_an_fp32_teacher(tmp_path):
    module = module16()
    distill = Distill()
    fit(tmp_path, module, [Prune(generator_amount=0.5, start_epoch=0, metric="none"), distill], epochs=1, batches=3, precision="bf16-mixed")
    assert all(p.dtype == torch.float32 for p in distill.teacher_net.parameters())
    values = logged(tmp_path, "train/g_term/distill_output")
    assert len(values) == 3 and all(torch.isfinite(torch.tensor(values)))


@pytest.mark.slow
def test_ddp_ranks_hold_identical_students_teachers_and_adapters(tmp_path):
    dump = tmp_path / "ranks"
    cmd = [
        "--config", TINY, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--trainer.max_epochs", "2",
        "--callbacks", "prune,distill", "--prune.start_epoch", "1", "--prune.metric", "swd",
        "--trainer.callbacks+=tests.probes.DistillDump", "--trainer.callbacks.out_dir", str(dump),
    ]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["world_size"] == 2
    assert [k for k in r0["params"] if k.startswith("auxiliary.")]
    for key, value in r0["params"].items():  # BatchNorm statistics are each rank's own, as without distillation
        assert torch.equal(value, r1["params"][key]), key
    for key, value in r0["teacher"].items():
        assert torch.equal(value, r1["teacher"][key]), key
