"""int8 ONNX files (gan_lightning.deploy.quantize): int8 weights in QDQ form that ONNX Runtime runs,
outputs close to the fp32 generator, calibration that depends on its seed, and refusals in one
sentence that leave nothing behind."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gan_lightning.deploy import quantize
from gan_lightning.deploy.quantize import Calibration, check_quantize, write_quantized
from gan_lightning.deploy.runtimes import latents, load_runtime, write_verified
from gan_lightning.errors import ConfigError, ExportError
from gan_lightning.networks import DCGANGenerator, MLPGenerator

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")
pytest.importorskip("onnxruntime")

SMALL = Calibration(batches=4, batch_size=8)  # 32 latents: enough for MinMax ranges of a tiny generator
# int8 per-channel weights and int8 activations each round to 1/255 of their range; the error
# of a few such layers stays near 1% of the [-1, 1] output range (~40-55 dB measured on random
# DCGANs); 30 dB (RMS error 3% of the range, ~4 grey levels) leaves room and still fails
# a wrong scale, a missed layer or a broken rewrite, which land below 20 dB.
MIN_PSNR = 30.0


def random_dcgan(image_size: int = 16, width: int = 16) -> nn.Module:
    torch.manual_seed(0)
    generator = DCGANGenerator(z_dim=8, image_size=image_size, channels=1, width=width).eval()
    with torch.no_grad():  # BatchNorm statistics away from 0/1, so that folding them matters
        for m in generator.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return generator.requires_grad_(False)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4.0 / float((a - b).double().pow(2).mean()))


def ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def int8_share(path) -> float:
    """The share of the file's stored values (initializers) that are int8."""
    counts = {}
    for init in onnx.load(str(path)).graph.initializer:
        counts[init.data_type] = counts.get(init.data_type, 0) + math.prod(init.dims)
    return counts.get(onnx.TensorProto.INT8, 0) / sum(counts.values())


def test_int8_has_int8_weights_in_qdq_form_and_stays_close_to_fp32(tmp_path):
    generator = random_dcgan()
    fp32, int8 = tmp_path / "g.onnx", tmp_path / "g_int8.onnx"
    write_verified(generator, 8, fp32, "onnx", {"z_dim": 8})
    verification, record = write_quantized(generator, 8, int8, "int8", {"z_dim": 8}, SMALL)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "DepthToSpace"} <= ops(int8)
    assert "ConvTranspose" not in ops(int8)  # every upsampler in sub-pixel form, which ONNX Runtime runs in int8
    assert int8_share(int8) > 0.9  # weights stored int8; float scales and biases are the rest
    assert int8.stat().st_size < 0.8 * fp32.stat().st_size  # 2.25x taps at 1/4 the bytes, plus scales
    assert verification.max_abs_diff <= verification.tolerance  # the fp32 sub-pixel graph is the generator

    model = load_runtime(int8)
    assert model.z_dim == 8 and model.metadata["quantization"] == {"mode": "int8", "format": "QDQ"}
    z = latents(64, 8, seed=7)
    with torch.no_grad():
        got, expected = model(z), generator(z)
    assert got.shape == expected.shape and psnr(got, expected) > MIN_PSNR
    assert not torch.equal(got, expected)  # it is not the fp32 graph under another name

    measured = record["agreement_with_fp32"]
    assert measured["psnr_db"] > MIN_PSNR and measured["latents"] == quantize.AGREEMENT_LATENTS
    assert record["calibration"] == {"latents": 32, "batches": 4, "batch_size": 8, "seed": 0, "distribution": "standard normal"}
    assert record["bytes"] == int8.stat().st_size and record["fid"] is None and "not measured" in record["fid_note"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the working folder is gone


def test_the_calibration_seed_sets_the_activation_ranges(tmp_path):
    generator = random_dcgan(image_size=8, width=8)
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        write_quantized(generator, 8, tmp_path / f"{name}.onnx", "int8", {"z_dim": 8}, Calibration(2, 4, seed))
    same = (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert same and (tmp_path / "a.onnx").read_bytes() != (tmp_path / "c.onnx").read_bytes()


def test_int8_dynamic_quantizes_the_linear_layers_and_leaves_convolutions_float(tmp_path):
    out = tmp_path / "g.onnx"
    generator = random_dcgan()
    _, record = write_quantized(generator, 8, out, "int8-dynamic", {"z_dim": 8})
    assert {"MatMulInteger", "DynamicQuantizeLinear", "ConvTranspose"} <= ops(out) and "ConvInteger" not in ops(out)
    assert record["calibration"] is None and record["agreement_with_fp32"]["psnr_db"] > MIN_PSNR
    mlp = MLPGenerator(z_dim=8, hidden=(64, 64), out_shape=(1, 8, 8)).eval()
    write_quantized(mlp, 8, tmp_path / "mlp.onnx", "int8-dynamic", {"z_dim": 8})
    assert int8_share(tmp_path / "mlp.onnx") > 0.9  # an MLP is all Linear: all its weights go int8
    with torch.no_grad():
        assert psnr(load_runtime(tmp_path / "mlp.onnx")(latents(32, 8)), mlp(latents(32, 8))) > MIN_PSNR


class ConvOnly(nn.Module):
    """A generator without a Linear layer: z as a 1x1 map, one transposed convolution."""

    z_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(8, 1, 4, 1, 0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.up(z.view(z.shape[0], 8, 1, 1)))


def test_dynamic_quantization_of_a_generator_without_linear_layers_is_refused(tmp_path):
    out = tmp_path / "g.onnx"
    with pytest.raises(ConfigError) as refused:
        write_quantized(ConvOnly().eval(), 8, out, "int8-dynamic", {"z_dim": 8})
    assert str(refused.value) == (
        "--quantize int8-dynamic quantizes the weights of Linear (MatMul/Gemm) layers only, and this generator has none; use --quantize int8"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_file_below_the_agreement_floor_is_not_written(tmp_path, monkeypatch):
    out = tmp_path / "g.onnx"
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(quantize, "MIN_PSNR_DB", 1000.0)  # no int8 file reaches it
    with pytest.raises(ExportError, match=r"agrees with the fp32 generator at only [0-9.]+ dB PSNR \(floor 1000 dB\) on 256 fixed latents; nothing was written"):
        write_quantized(random_dcgan(image_size=8, width=8), 8, out, "int8", {"z_dim": 8}, SMALL)
    assert out.read_bytes() == b"an earlier export" and [p.name for p in tmp_path.iterdir()] == ["g.onnx"]


@pytest.mark.parametrize(("mode", "fmt", "message"), [
    ("int4", "onnx", "--quantize must be one of int8, int8-dynamic, got 'int4'"),
    ("int8", "torchscript", f"--quantize int8 applies to --format onnx only: {quantize.WHY_ONNX_ONLY}, so export with --format onnx"),
    ("int8-dynamic", "compact", f"--quantize int8-dynamic applies to --format onnx only: {quantize.WHY_ONNX_ONLY}, so export with --format onnx"),
])
def test_what_cannot_be_quantized_is_refused_in_one_sentence(mode, fmt, message):
    with pytest.raises(ConfigError) as refused:
        check_quantize(mode, fmt)
    assert str(refused.value) == message and message.count(". ") == 0
    check_quantize(None, fmt)  # no --quantize: nothing to check


def test_calibration_sizes_below_one_and_a_missing_onnxruntime_are_refused(monkeypatch):
    with pytest.raises(ConfigError, match=r"^--calibration_batches and --calibration_batch_size must be >= 1, got 0 and 16$"):
        Calibration(batches=0)
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an install without the export extra sees
    with pytest.raises(ConfigError, match=r"^--quantize needs onnx and onnxruntime's quantization tools \(.*\); pip install gan-lightning\[export\]$"):
        quantize.quantization_tools()


def test_agreement_is_measured_against_the_reference_on_fixed_latents():
    generator = random_dcgan(image_size=8, width=8)
    exact = quantize.agreement(generator, generator, 8, n=16)
    assert exact.max_abs_diff == 0 and exact.psnr_db == math.inf
    shifted = quantize.agreement(lambda z: generator(z) + 0.02, generator, 8, n=16)
    assert np.isclose(shifted.mean_abs_diff, 0.02, atol=1e-6) and np.isclose(shifted.psnr_db, 10 * math.log10(4 / 0.02**2), atol=1e-3)


def test_without_the_subpixel_rewrite_the_transposed_convolutions_are_quantized_as_they_are(tmp_path):
    out = tmp_path / "g.onnx"
    generator = random_dcgan(image_size=8, width=8)
    _, record = write_quantized(generator, 8, out, "int8", {"z_dim": 8}, SMALL, subpixel=False)
    assert {"ConvTranspose", "QuantizeLinear"} <= ops(out) and "DepthToSpace" not in ops(out)
    assert record["rewrite"] == "BatchNorm folded" and record["agreement_with_fp32"]["psnr_db"] > MIN_PSNR
