"""``python -m gan_lightning.commands.export --format torchscript|onnx`` on a train.py checkpoint
of a pruned and distilled run: the files hold the student only, match it, and carry a model
card whose numbers are the checkpoint's; existing files are never replaced by accident."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from gan_lightning.commands import export as export_command
from gan_lightning.compress.profiling import network_cost
from gan_lightning.core.module import GANModule
from gan_lightning.deploy.runtimes import load_runtime
from tests.helpers import tiny_run_args
from train import main

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A run pruned at epoch 1 and distilled from its dense teacher in epoch 2, metrics on."""
    run = tmp_path_factory.mktemp("distilled")
    assert main(tiny_run_args(
        run, "--checkpoint.monitor", "null", "--trainer.max_epochs", "2", "--callbacks", "prune,distill", "--prune.start_epoch", "1",
        "--prune.generator_amount", "0.5", "--prune.metric", "none", "--model.ema_decay", "0.9",
    )) == 0
    return run / "version_0" / "checkpoints" / "last.ckpt"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_export_is_the_student_alone_and_its_card_holds_the_checkpoints_numbers(tmp_path, distilled, fmt, capsys):
    out = tmp_path / f"g.{fmt}"
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(out), "--format", fmt]) == 0
    assert f"wrote {out} and {out}.card.json" in capsys.readouterr().out
    module = GANModule.load_from_checkpoint(distilled, map_location="cpu").eval()
    student = module.sampling_generator
    checkpoint = torch.load(distilled, map_location="cpu", weights_only=False)
    assert any(k.startswith("auxiliary.") for k in checkpoint["state_dict"]), "the run has adapters, which must stay out of the export"
    model = load_runtime(out)
    z = module.sample_z(6, seed=2)
    with torch.no_grad():
        assert torch.allclose(model(z), student(z), atol=1e-5)
    if fmt == "torchscript":  # every tensor of the file is a tensor of the student: no teacher, adapter or discriminator
        assert set(model.state_dict()) == set(student.state_dict())

    card = json.loads((tmp_path / f"g.{fmt}.card.json").read_text())
    cost = network_cost(student, torch.zeros(1, module.z_dim))
    assert card["cost"]["params"] == cost.params and card["cost"]["macs_per_sample"] == cost.macs
    assert card["cost"]["mac_reduction"] > 1.5  # half the units of each pruned layer are gone
    assert card["input"]["shape"] == ["batch", module.z_dim] and card["output"]["shape"] == ["batch", 1, 8, 8]
    assert card["quality"] == checkpoint["callbacks"]["FidelityEvaluation"]["last"]
    assert card["quality"]["step"] == checkpoint["global_step"] and card["quality"]["num_real"] == 180
    assert card["source"]["sha256"] == sha(distilled) and card["sha256"] == sha(out)
    assert card["training_config"]["config"]["prune"]["generator_amount"] == 0.5
    assert card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]


def test_existing_files_and_the_checkpoint_itself_are_never_replaced(tmp_path, distilled, capsys):
    before = sha(distilled)
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(distilled), "--format", "onnx"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {distilled} is the checkpoint being exported; choose another file name"
    assert sha(distilled) == before
    existing = tmp_path / "g.onnx"
    existing.write_bytes(b"a model someone kept")
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(existing), "--format", "onnx"]) == 2
    assert "--out would replace the existing file" in capsys.readouterr().err
    assert existing.read_bytes() == b"a model someone kept" and not (tmp_path / "g.onnx.card.json").exists()
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(existing), "--format", "onnx", "--overwrite"]) == 0
    assert load_runtime(existing).z_dim == 8


def test_the_inference_rewrite_is_verified_against_the_generator_as_trained(tmp_path, distilled, capsys):
    out = tmp_path / "fast.ts"
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(out), "--format", "torchscript", "--inference_rewrite"]) == 0
    module = GANModule.load_from_checkpoint(distilled, map_location="cpu").eval()
    model = load_runtime(out)
    assert not [k for k in model.state_dict() if "running_var" in k]  # BatchNorm folded away
    z = module.sample_z(6, seed=2)
    with torch.no_grad():
        assert torch.allclose(model(z), module.sampling_generator(z), atol=1e-5)
    assert json.loads((tmp_path / "fast.ts.card.json").read_text())["verification"]["inference_rewrite"] is True
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(tmp_path / "g.pt"), "--inference_rewrite"]) == 2
    assert "--inference_rewrite applies to --format torchscript or onnx" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "fmt"), [("g.onnx", None), ("g.ts", None), ("g.pt", None), ("g.bin", None), ("g.pt", "torchscript"), ("g.x", "onnx")])
def test_the_format_follows_the_file_name_unless_given(tmp_path, name, fmt):
    expected = fmt or {"g.onnx": "onnx", "g.ts": "torchscript"}.get(name, "compact")
    assert export_command.format_for(tmp_path / name, fmt) == expected


@pytest.mark.parametrize(("name", "fmt", "hint"), [("g.onnx", "compact", "g.pt"), ("g.ts", "onnx", "g.onnx"), ("g.pt", "onnx", "g.onnx")])
def test_a_file_name_that_names_another_format_is_refused(tmp_path, distilled, capsys, name, fmt, hint):
    out = tmp_path / name
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(out), "--format", fmt]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {out} names a {export_command.SUFFIX_FORMATS[out.suffix]} file but --format is {fmt}: leave --format out, or name the file {tmp_path / hint}"
    assert not out.exists()


def test_an_onnx_name_without_format_writes_onnx(tmp_path, distilled):
    out = tmp_path / "g.onnx"
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(out)]) == 0
    assert out.read_bytes()[:2] != b"PK"  # not a torch zip archive
    assert load_runtime(out).z_dim == 8


def test_an_int8_export_records_its_quantization_and_stays_close_to_the_checkpoint(tmp_path, distilled, capsys):
    out, fp32 = tmp_path / "g_int8.onnx", tmp_path / "g.onnx"
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(out), "--quantize", "int8", "--calibration_batches", "4", "--calibration_batch_size", "8", "--calibration_seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "quantized: int8 (QDQ), calibrated on 32 latents (4 batches of 8, seed 3); against the fp32 generator on 256 fixed latents" in printed
    assert "FID not measured" in printed
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(fp32)]) == 0
    card = json.loads((tmp_path / "g_int8.onnx.card.json").read_text())
    record = card["quantization"]
    assert record["mode"] == "int8" and record["format"] == "QDQ" and record["bytes"] == out.stat().st_size
    assert record["calibration"] == {"latents": 32, "batches": 4, "batch_size": 8, "seed": 3, "distribution": "standard normal"}
    assert record["fid"] is None and json.loads((tmp_path / "g.onnx.card.json").read_text())["quantization"] is None
    assert card["sha256"] == sha(out) and card["verification"]["max_abs_diff"] <= card["verification"]["tolerance"]
    assert record["nodes"]["QuantizeLinear"] > 0 and record["nodes"]["DequantizeLinear"] > 0

    module = GANModule.load_from_checkpoint(distilled, map_location="cpu").eval()
    z = module.sample_z(64, seed=2)
    with torch.no_grad():
        got, expected = load_runtime(out)(z), module.sampling_generator(z)
    psnr = 10 * math.log10(4 / float((got - expected).pow(2).mean()))
    # int8 rounding of weights and activations: ~1% of the range per layer (see tests/deploy/test_quantize.py)
    assert psnr > 30 and abs(psnr - record["agreement_with_fp32"]["psnr_db"]) < 6  # other latents, same quality


def test_quantization_is_refused_for_other_formats_and_unknown_modes(tmp_path, distilled, capsys):
    for name, fmt in (("g.ts", "torchscript"), ("g.pt", "compact")):
        assert export_command.main(["--ckpt_path", str(distilled), "--out", str(tmp_path / name), "--format", fmt, "--quantize", "int8"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --quantize int8 applies to --format onnx only: PyTorch has no maintained int8 path for ConvTranspose2d")
        assert err.endswith("so export with --format onnx") and not (tmp_path / name).exists()
    with pytest.raises(SystemExit):
        export_command.main(["--ckpt_path", str(distilled), "--out", str(tmp_path / "g.onnx"), "--quantize", "int4"])
    err = capsys.readouterr().err  # argparse quotes the choices or not, by Python version
    assert "argument --quantize: invalid choice: 'int4' (choose from " in err and "int8-dynamic" in err
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(tmp_path / "g.onnx"), "--quantize", "int8", "--calibration_batches", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --calibration_batches and --calibration_batch_size must be >= 1, got 0 and 16"
    assert list(tmp_path.iterdir()) == []


def test_measure_fid_records_the_files_fid_beside_its_checkpoints(tmp_path, distilled, capsys):
    """A file that reproduces its checkpoint's outputs scores its checkpoint's FID (the same
    latents, real samples and features); an int8 file's FID is recorded beside the fp32 one."""
    from gan_lightning.commands.evaluate import evaluate_checkpoint

    compact, int8 = tmp_path / "g.pt", tmp_path / "g_int8.onnx"
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(compact), "--measure_fid", "--fid_seeds", "0,1"]) == 0
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(int8), "--quantize", "int8", "--measure_fid", "--fid_seeds", "0,1"]) == 0
    printed = capsys.readouterr().out
    reference = evaluate_checkpoint(distilled, [0, 1])["metrics"]["fid"]
    measured = json.loads((tmp_path / "g.pt.card.json").read_text())["measured"]
    assert measured["seeds"] == [0, 1] and measured["num_fake"] == 200 and measured["checkpoint"]["fid"] == reference
    assert measured["file"]["fid"]["mean"] == pytest.approx(reference["mean"], rel=1e-6) and measured["fid_over_checkpoint"] == pytest.approx(1, rel=1e-6)
    card = json.loads((tmp_path / "g_int8.onnx.card.json").read_text())
    record = card["quantization"]
    assert record["fid_fp32"] == reference["mean"] and record["fid"] == card["measured"]["file"]["fid"]["mean"] != reference["mean"]
    assert record["fid"] == pytest.approx(reference["mean"], rel=0.25) and math.isfinite(record["fid_std"])
    assert card["sha256"] == sha(int8)  # the rewritten card still describes the file
    assert f"FID {record['fid']:.2f} ± {record['fid_std']:.2f} (fp32 {reference['mean']:.2f}" in printed


def test_measure_fid_needs_a_run_that_measures_fid(tmp_path, distilled, capsys):
    config = tmp_path / "config.yaml"
    config.write_text((distilled.parent.parent / "config.yaml").read_text().replace("features: domain", "features: none"))
    assert "features: none" in config.read_text()
    assert export_command.main(["--ckpt_path", str(distilled), "--out", str(tmp_path / "g.pt"), "--measure_fid", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --measure_fid: the run measures no FID (its metrics.features is none); evaluate the file with a run that does"
    )
