"""int8 ONNX generators: ONNX Runtime's post-training quantization of the exported generator,
calibrated on latents from its prior, checked against the fp32 generator before it is kept.

- ``int8`` (static, QDQ format): weights int8 per output channel, activations int8 with
  ranges calibrated on ``batches x batch_size`` latents of one seeded standard-normal draw
  (MinMax). Before quantizing, BatchNorm is folded and every stride-2 transposed convolution
  is put in sub-pixel form (Conv2d + PixelShuffle, exact, see
  :mod:`gan_lightning.deploy.inference`): ONNX Runtime's CPU provider has int8 kernels for
  Conv, MatMul and Gemm but none for ConvTranspose, so a quantized ConvTranspose runs as
  dequantize, float ConvTranspose, quantize, which was measured 1.3-1.6x *slower* than fp32
  (DCGAN 64x64, width 64), while the sub-pixel convolutions run in int8
  (benchmarks/int8_latency.py has the numbers). The sub-pixel kernel holds 2.25x the taps
  (zeros included), so the file is about half, not a quarter, of the fp32 one.
- ``int8-dynamic``: int8 weights of the MatMul/Gemm (Linear) layers only, activations
  quantized per call; convolutions stay float (ONNX Runtime's ConvInteger was measured 3x
  slower than float Conv). A generator without a Linear layer is refused.

Agreement is measured at export time: mean and max |difference| and PSNR (peak-to-peak 2: the
outputs are tanh values in [-1, 1]) of the int8 file against the fp32 PyTorch generator on
fixed latents; below :data:`MIN_PSNR_DB` nothing is written. FID is not measured here (it
needs the training data and thousands of samples); the card says so rather than give a number.

PyTorch itself has no maintained int8 path for these files: torch.ao.quantization (eager/FX)
is deprecated in favour of torchao, whose PT2E quantizers produce torch.compile graphs, not
TorchScript or compact files, and do not quantize conv_transpose2d for x86 yet (pytorch/ao#3971
is open). So ``--quantize`` needs ``--format onnx`` (docs/deploy.md).
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from gan_lightning.deploy.inference import for_inference
from gan_lightning.deploy.runtimes import METADATA_KEY, Verification, latents, load_runtime, write_verified
from gan_lightning.errors import ConfigError, ExportError
from gan_lightning.files import refused_writes

MODES = ("int8", "int8-dynamic")
INSTALL_HINT = "pip install gan-lightning[export]"
WHY_ONNX_ONLY = (
    "PyTorch has no maintained int8 path for ConvTranspose2d generators on the CPU (torch.ao.quantization is deprecated,"
    " and torchao's PT2E makes torch.compile graphs without conv_transpose2d support)"
)
AGREEMENT_LATENTS, AGREEMENT_SEED = 256, 1234  # not the calibration draw: agreement on latents the ranges never saw
MIN_PSNR_DB = 20.0  # ~10% of the [-1, 1] range as RMS error: a file this far off is broken, not coarse
SUBPIXEL_ALL = 1 << 30  # for_inference's max_out_channels: every stride-2 upsampler
DYNAMIC_OPS = ("MatMul", "Gemm")
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}


@dataclass(frozen=True)
class Calibration:
    """The latents the activation ranges are calibrated on: ``batches`` batches of ``batch_size``
    from one seeded standard-normal draw (the generator's prior)."""

    batches: int = 32
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batches < 1 or self.batch_size < 1:
            raise ConfigError(f"--calibration_batches and --calibration_batch_size must be >= 1, got {self.batches} and {self.batch_size}")


def check_quantize(mode: Optional[str], fmt: str) -> None:
    """Refuse, in one sentence, a mode that does not exist or a format that cannot be quantized."""
    if mode is None:
        return
    if mode not in MODES:
        raise ConfigError(f"--quantize must be one of {', '.join(MODES)}, got {mode!r}")
    if fmt != "onnx":
        raise ConfigError(f"--quantize {mode} applies to --format onnx only: {WHY_ONNX_ONLY}, so export with --format onnx")


def quantization_tools():
    """(onnx, onnxruntime, onnxruntime.quantization, quant_pre_process), or one sentence saying how to install them."""
    try:
        import onnx
        import onnxruntime
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise ConfigError(f"--quantize needs onnx and onnxruntime's quantization tools ({exc}); {INSTALL_HINT}") from exc
    return onnx, onnxruntime, quantization, quant_pre_process


def _reader(quantization, input_name: str, z_dim: int, calibration: Calibration):
    class LatentReader(quantization.CalibrationDataReader):
        """The calibration latents, one batch per call, then None."""

        def __init__(self) -> None:
            z = latents(calibration.batches * calibration.batch_size, z_dim, seed=calibration.seed).numpy()
            self.batches = iter(z.reshape(calibration.batches, calibration.batch_size, z_dim))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    return LatentReader()


@dataclass
class Agreement:
    """The int8 file against the fp32 generator on ``latents`` fixed latents (seed ``seed``)."""

    latents: int
    seed: int
    mean_abs_diff: float
    max_abs_diff: float
    psnr_db: float  # 10 log10(2^2 / MSE): the outputs span [-1, 1]


def agreement(quantized, reference: nn.Module, z_dim: int, n: int = AGREEMENT_LATENTS, seed: int = AGREEMENT_SEED) -> Agreement:
    z = latents(n, z_dim, seed=seed)
    with torch.no_grad():
        diff = (quantized(z) - reference(z)).double()
    mse = float(diff.pow(2).mean())
    psnr = 10 * math.log10(4.0 / mse) if mse > 0 else math.inf
    return Agreement(n, seed, float(diff.abs().mean()), float(diff.abs().max()), psnr)


def _ops(model) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def _quantize(onnx, quantization, source: Path, target: Path, mode: str, z_dim: int, calibration: Calibration) -> None:
    if mode == "int8":
        quantization.quantize_static(
            str(source), str(target), _reader(quantization, "z", z_dim, calibration), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
        )
        return
    if not set(_ops(onnx.load(str(source)))) & set(DYNAMIC_OPS):
        raise ConfigError(
            "--quantize int8-dynamic quantizes the weights of Linear (MatMul/Gemm) layers only, and this generator has none;"
            " use --quantize int8"
        )
    quantization.quantize_dynamic(str(source), str(target), op_types_to_quantize=list(DYNAMIC_OPS), weight_type=quantization.QuantType.QInt8)


def write_quantized(
    generator: nn.Module, z_dim: int, path: str | Path, mode: str, metadata: dict[str, Any],
    calibration: Calibration = Calibration(), reference: Optional[nn.Module] = None, subpixel: bool = True,
) -> tuple[Verification, dict[str, Any]]:
    """Write ``generator`` as an int8 ONNX file at ``path`` (``mode``: see the module docstring)
    and return the verification of the fp32 graph it was quantized from (against ``reference``,
    default the generator) and the quantization record for the model card. The fp32 graph and
    the quantized file are made in a hidden folder beside ``path``; the file is moved into place
    only once its agreement with the fp32 generator passes :data:`MIN_PSNR_DB`. ``subpixel=False``
    (int8) keeps transposed convolutions as they are, for runtimes with int8 ConvTranspose kernels."""
    check_quantize(mode, "onnx")
    onnx, onnxruntime, quantization, quant_pre_process = quantization_tools()
    path = Path(path)
    reference = generator if reference is None else reference
    graph = for_inference(generator, subpixel_max_out_channels=SUBPIXEL_ALL if subpixel else 0) if mode == "int8" else generator
    record_base = {"mode": mode, "format": "QDQ" if mode == "int8" else "dynamic (MatMulInteger)"}
    with refused_writes(path), tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        fp32, prepared, quantized = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        verification = write_verified(graph, z_dim, fp32, "onnx", metadata, reference=reference)
        # shape inference and ONNX Runtime's exact fusions (BatchNorm into Gemm), as its quantization docs advise
        quant_pre_process(str(fp32), str(prepared))
        _quantize(onnx, quantization, prepared, quantized, mode, z_dim, calibration)
        model = onnx.load(str(quantized))
        ops = _ops(model)
        if not ops.keys() & QUANTIZED_OPS:
            raise ExportError(f"ONNX Runtime quantized nothing in the {mode} export of {path}; nothing was written")
        record = {
            **record_base,
            "weights": "int8, per output channel" if mode == "int8" else "int8, per tensor (MatMul/Gemm only)",
            "activations": "int8, static ranges (MinMax)" if mode == "int8" else "float; quantized per call at each MatMul",
            "calibration": {"latents": calibration.batches * calibration.batch_size, **asdict(calibration), "distribution": "standard normal"} if mode == "int8" else None,
            "rewrite": ("BatchNorm folded" + ("; stride-2 transposed convolutions in sub-pixel form (no int8 ConvTranspose kernel in ONNX Runtime's CPU provider)" if subpixel else "")) if mode == "int8" else None,
            "nodes": dict(sorted(ops.items())),
            "onnxruntime": onnxruntime.__version__,
        }
        del model.metadata_props[:]  # the quantizer may or may not carry the fp32 graph's entries over
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps({**metadata, "quantization": record_base})
        onnx.save(model, str(quantized))
        measured = agreement(load_runtime(quantized, "onnx"), copy.deepcopy(reference).eval().float().cpu(), z_dim)
        if not measured.psnr_db >= MIN_PSNR_DB:  # also catches NaN
            raise ExportError(
                f"the {mode} export of {path} agrees with the fp32 generator at only {measured.psnr_db:.1f} dB PSNR (floor {MIN_PSNR_DB:g} dB)"
                f" on {measured.latents} fixed latents; nothing was written: use the fp32 export"
            )
        record.update({
            "bytes": quantized.stat().st_size,
            "fp32_bytes": fp32.stat().st_size,  # the fp32 graph it was quantized from (sub-pixel form for int8)
            "agreement_with_fp32": asdict(measured),
            "fid": None,
            "fid_note": "not measured (export --measure_fid measures it with the run's data and metric settings); quality above is the fp32 run's",
        })
        os.replace(quantized, path)
    return verification, record


def summary_line(record: dict[str, Any]) -> str:
    """One line for the export command's report."""
    a = record["agreement_with_fp32"]
    calibration = record["calibration"]
    calibrated = f", calibrated on {calibration['latents']} latents ({calibration['batches']} batches of {calibration['batch_size']}, seed {calibration['seed']})" if calibration else ""
    return (
        f"quantized: {record['mode']} ({record['format']}){calibrated}; against the fp32 generator on {a['latents']} fixed latents:"
        f" mean |difference| {a['mean_abs_diff']:.3g}, PSNR {a['psnr_db']:.1f} dB; {record['bytes']:,} bytes (fp32 graph {record['fp32_bytes']:,});"
        + (f" FID {record['fid']:.2f} ± {record['fid_std']:.2f} (fp32 {record['fid_fp32']:.2f} ± {record['fid_fp32_std']:.2f})"
           if record.get("fid") is not None else " FID not measured (export --measure_fid measures it)")
    )
