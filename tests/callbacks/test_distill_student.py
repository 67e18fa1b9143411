"""--distill.student: a new, smaller generator that replaces the run's and learns from the teacher."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from callbacks.distill import Distill, weights_hash
from gan_lightning.compress.edits import EditRecord, Replace
from gan_lightning.deploy.export_file import load_exported
from gan_lightning.core.module import GANModule
from gan_lightning.networks import DCGANGenerator
from tests.callbacks.test_distill import G16, fit, logged, module16
from tests.helpers import TINY, tiny_run_args, train_py_ddp
from train import main

NARROW = "{init_args: {width: 2}}"  # the tiny preset's generator (width 4), narrower


def _args(run: Path, *extra: str) -> list[str]:
    return tiny_run_args(run, "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--checkpoint.dirpath", str(run / "ckpts"), *extra)


def _generator_shapes(state: dict, prefix: str = "generator.") -> dict[str, tuple]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)}


def test_the_student_replaces_the_generator_at_half_time_and_is_what_the_checkpoint_loads(tmp_path):
    run = tmp_path / "run"
    assert main(_args(run, "--trainer.max_epochs", "2", "--callbacks", "distill", "--distill.student", NARROW)) == 0
    saved = torch.load(run / "ckpts" / "last.ckpt", weights_only=True)
    narrow = DCGANGenerator(z_dim=8, image_size=8, channels=1, width=2)
    tiny = {"z_dim": 8, "image_size": 8, "channels": 1}
    assert EditRecord.from_checkpoint(saved) == EditRecord({"generator": [Replace({"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": {**tiny, "width": 2}},
                                                                                  {"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": {**tiny, "width": 4}})]})
    assert _generator_shapes(saved["state_dict"]) == {k: tuple(v.shape) for k, v in narrow.state_dict().items()}
    # the teacher is the run's own (width 4) generator as epoch 1 began, frozen since
    record = saved["callbacks"]["Distill"]["teacher"]
    assert record["source"] == "the run's generator at epoch 1"
    assert record["spec"]["init_args"]["width"] == 4 and record["state_dict"]["stem.0.weight"].shape[0] == 2 * narrow.stem[0].out_features
    # distillation only after the replacement: the 3 batches of epoch 1
    assert len(logged(run, "train/g_term/distill_output")) == 3
    params = logged(run, "compress/g_params")  # logged as training starts, and at the replacement
    assert params[0] == 705 and params[-1] == sum(p.numel() for p in narrow.parameters()) == 353
    # evaluation and export build the student, not the configured generator
    loaded = GANModule.load_from_checkpoint(run / "ckpts" / "last.ckpt", map_location="cpu")
    assert loaded.generator.stem[0].out_features == narrow.stem[0].out_features
    assert torch.equal(loaded.generator.stem[0].weight, saved["state_dict"]["generator.stem.0.weight"])
    from gan_lightning.commands.export import export_checkpoint

    card = export_checkpoint(run / "ckpts" / "last.ckpt", tmp_path / "g.pt")
    assert card["architecture"]["init_args"]["width"] == 2
    # costs are compared with the generator the student replaced, not with the student itself
    assert card["cost"]["configured_params"] == 705 and card["cost"]["params"] == 353 and card["cost"]["mac_reduction"] > 1.5
    exported = load_exported(tmp_path / "g.pt")
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.equal(exported.eval()(z), loaded.sampling_generator.eval()(z))


def test_best_checkpoints_track_the_student_from_the_replacement_on(tmp_path):
    run = tmp_path / "run"
    # val/fid picks the best checkpoint; a fresh student is far worse than the dense generator before it
    assert main(tiny_run_args(run, "--checkpoint.dirpath", str(run / "ckpts"), "--trainer.max_epochs", "2",
                              "--callbacks", "distill", "--distill.student", NARROW)) == 0
    assert (run / "ckpts" / "best-epoch000.ckpt").is_file()  # the dense generator's, kept on disk
    best = torch.load(run / "ckpts" / "best-epoch001.ckpt", weights_only=True)
    assert EditRecord.from_checkpoint(best).replacement("generator").spec["init_args"]["width"] == 2


def test_resume_after_the_replacement_keeps_the_student_and_the_teacher(tmp_path):
    run = tmp_path / "run"
    student = ["--callbacks", "distill", "--distill.student", NARROW]
    assert main(_args(run, "--trainer.max_epochs", "2", *student)) == 0
    saved = torch.load(run / "ckpts" / "last.ckpt", weights_only=True)
    probe = ["--trainer.callbacks+=tests.probes.AuxiliaryAtStart", "--trainer.callbacks.out_dir", str(tmp_path / "probe"),
             "--trainer.callbacks+=tests.probes.GeneratorAtFirstBatch", "--trainer.callbacks.out_dir", str(tmp_path / "probe")]
    assert main(_args(run, "--trainer.max_epochs", "3", *student, *probe, "--ckpt_path", str(run / "ckpts" / "last.ckpt"))) == 0
    start = torch.load(tmp_path / "probe" / "start.pt", weights_only=True)
    assert start["teacher_sha256"] == saved["callbacks"]["Distill"]["teacher"]["sha256"]
    final = torch.load(run / "ckpts" / "last.ckpt", weights_only=True)
    assert final["epoch"] == 2 and EditRecord.from_checkpoint(final) == EditRecord.from_checkpoint(saved)
    assert _generator_shapes(final["state_dict"]) == _generator_shapes(saved["state_dict"])
    # not replaced a second time: epoch 2 starts from the trained student, not from a fresh one
    first = torch.load(tmp_path / "probe" / "generator.pt", weights_only=True)
    assert all(torch.equal(v, saved["state_dict"]["generator." + k]) for k, v in first.items())


def test_a_student_from_scratch_learns_the_teacher_alone(tmp_path):
    # gan_weight 0: the student's only signal is the teacher's outputs and features (Aguinaldo et al. 2019)
    module = module16(lr_g=5e-3)
    distill = Distill(student={"init_args": {**G16, "width": 2}, "class_path": "gan_lightning.networks.DCGANGenerator"},
                      student_epoch=1, gan_weight=0.0)
    fit(tmp_path, module, [distill], epochs=5, batches=6)
    teacher = distill.teacher_net
    assert weights_hash(teacher) == distill.teacher["sha256"] and teacher.stem[0].out_features == 2 * module.generator.stem[0].out_features
    values = logged(tmp_path, "train/g_term/distill_output")
    assert len(values) == 24  # epochs 1-4, 6 batches each
    assert statistics.fmean(values[-6:]) < 0.8 * statistics.fmean(values[:6])
    in_optimizer = {id(p) for p in module.trainer.optimizers[0].param_groups[0]["params"]}
    assert {id(p) for p in module.generator.parameters()} <= in_optimizer


def test_bf16_mixed_trains_a_student_in_fp32_weights(tmp_path):
    module = module16()
    distill = Distill(student={"class_path": "gan_lightning.networks.DCGANGenerator", "init_args": {**G16, "width": 2}}, student_epoch=0)
    fit(tmp_path, module, [distill], epochs=1, batches=3, precision="bf16-mixed")
    assert module.generator.stem[0].out_features == distill.teacher_net.stem[0].out_features // 2
    assert all(p.dtype == torch.float32 for p in [*module.generator.parameters(), *distill.teacher_net.parameters()])
    values = logged(tmp_path, "train/g_term/distill_output")
    assert len(values) == 3 and all(torch.isfinite(torch.tensor(values)))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--callbacks", "prune,distill", "--prune.start_epoch", "0", "--distill.student", NARROW],
         "--distill.student replaces the generator by a new network, and prune compresses the generator into a student already"),
        (["--callbacks", "distill", "--distill.student", "{class_path: collections.OrderedDict}"],
         "--distill.student names the generator class 'collections.OrderedDict', which is not a torch.nn.Module"),
        (["--callbacks", "distill", "--distill.student", "{init_args: {image_size: 16}}"],
         "--distill.student makes samples of shape (1, 16, 16) but the run's generator makes (1, 8, 8)"),
        (["--callbacks", "distill", "--distill.student", "{init_args: {z_dim: 5}}"],
         "--distill.student takes 5 latent dimensions but the run's generator 8"),
        (["--callbacks", "distill", "--distill.student", "{width: 2}"], "--distill.student takes {class_path: CLASS, init_args: {...}}"),
        (["--callbacks", "distill", "--distill.student", NARROW, "--distill.student_epoch", "2"],
         "--distill.student_epoch 2 is not before --trainer.max_epochs 2"),
        (["--callbacks", "prune,distill", "--distill.student_epoch", "0"], "--distill.student_epoch is the epoch at which --distill.student replaces"),
        (["--callbacks", "distill", "--distill.student", NARROW, "--distill.student_epoch", "1", "--distill.teacher_ckpt", "nope.ckpt"],
         "--distill.student_epoch 1 with --distill.teacher_ckpt would train the configured generator for nothing"),
    ],
)
def test_bad_student_settings_are_one_sentence_before_training(tmp_path, capsys, extra, message):
    assert main(_args(tmp_path, "--trainer.max_epochs", "2", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "ckpts").exists() and not list(tmp_path.rglob("metrics.csv"))  # refused before any training step


@pytest.mark.slow
def test_ddp_ranks_hold_the_same_student(tmp_path):
    dump = tmp_path / "ranks"
    cmd = [
        "--config", TINY, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
        "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "null", "--trainer.max_epochs", "2",
        "--callbacks", "distill", "--distill.student", NARROW,
        "--trainer.callbacks+=tests.probes.DistillDump", "--trainer.callbacks.out_dir", str(dump),
    ]
    r0, r1 = train_py_ddp(tmp_path, *cmd)
    assert r0["world_size"] == 2
    assert r0["params"]["generator.stem.0.weight"].shape[0] == DCGANGenerator(z_dim=8, image_size=8, channels=1, width=2).stem[0].out_features
    for key, value in r0["params"].items():
        assert torch.equal(value, r1["params"][key]), key
    for key, value in r0["teacher"].items():
        assert torch.equal(value, r1["teacher"][key]), key
