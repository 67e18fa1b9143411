"""Export the sampling generator of a checkpoint: compact PyTorch, TorchScript or ONNX, with a model card.

    python -m gan_lightning.commands.export --ckpt_path runs/.../checkpoints/last.ckpt --out g.pt             # compact
    python -m gan_lightning.commands.export --ckpt_path ... --out g.onnx                                    # needs the export extra
    python -m gan_lightning.commands.export --ckpt_path ... --out g.ts                                      # TorchScript
    python -m gan_lightning.commands.export --ckpt_path ... --out g_int8.onnx --quantize int8               # int8 (ONNX only)

Every format holds the sampling generator only (the EMA copy when the run keeps one), with
pruning masks already in its weights; the discriminator, a distillation teacher and its
adapters stay behind. ``compact`` is the gan-lightning format (each tensor in its smallest
encoding; ``gan_lightning.load_exported`` rebuilds it). ``torchscript`` and ``onnx`` run
without gan-lightning and are checked against the PyTorch generator before they are kept.
Each file gets a model card beside it, ``<out>.card.json``. ``--quantize int8`` writes an int8
ONNX file (ONNX Runtime's static quantization, calibrated on latents from the prior; see
:mod:`gan_lightning.deploy.quantize`) and records the calibration and the measured agreement
with the fp32 generator in the card.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import yaml

from gan_lightning.class_paths import add_allow_class_flag, allow_classes
from gan_lightning.commands.console import CommandParser, run
from gan_lightning.commands.evaluate import evaluate_checkpoint, evaluate_file, measurement, parse_seeds, run_config, run_config_path
from gan_lightning.deploy.export_file import ExportReport, configured_generator, export_generator, spec_from_hparams
from gan_lightning.core.checkpoint import read_checkpoint
from gan_lightning.core.module import GANModule
from gan_lightning.deploy.card import card_path, cost_entry, model_card, sha256, write_card
from gan_lightning.deploy.inference import for_inference
from gan_lightning.deploy.quantize import MODES as QUANTIZE_MODES
from gan_lightning.deploy.quantize import Calibration, check_quantize, quantization_tools, summary_line, write_quantized
from gan_lightning.deploy.runtimes import RUNTIMES, latents, write_verified
from gan_lightning.errors import CheckpointError, ConfigError

FORMATS = ("compact", *RUNTIMES)
# What a file name's suffix says it holds, when --format is left out. ``.pt`` is torch's generic
# suffix: it means the compact format here, and is also accepted with --format torchscript.
SUFFIX_FORMATS = {".onnx": "onnx", ".ts": "torchscript", ".pt": "compact"}


def format_for(out: Path, fmt: Optional[str]) -> str:
    """The format to write: ``fmt``, or the one ``out``'s suffix names (compact for any other);
    a suffix that names another format than an explicit ``fmt`` is refused."""
    named = SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is None:
        return named or "compact"
    if named is not None and named != fmt and not (out.suffix.lower() == ".pt" and fmt == "torchscript"):
        raise ConfigError(f"--out {out} names a {named} file but --format is {fmt}: leave --format out, or name the file {out.with_suffix(next(k for k, v in SUFFIX_FORMATS.items() if v == fmt))}")
    return fmt


def _refuse_overwrite(paths: list[Path], ckpt_path: Path, overwrite: bool) -> None:
    for path in paths:
        if path.exists() and path.resolve() == ckpt_path.resolve():
            raise ConfigError(f"--out {path} is the checkpoint being exported; choose another file name")
        if path.exists() and not overwrite:
            raise ConfigError(f"--out would replace the existing file {path}; choose another name or pass --overwrite")
        if path.is_dir():
            raise ConfigError(f"--out {path} is a folder; give a file name such as {path / 'g.onnx'}")


def run_quality(checkpoint: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The last metrics measurement the run saved (FidelityEvaluation's state), if any."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith("FidelityEvaluation") and isinstance(state, dict) and state.get("last"):
            return state["last"]
    return None


def training_config(ckpt_path: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The run's config.yaml (next to ``checkpoints/``) when it is there, else the model's hyper-parameters."""
    config = ckpt_path.parent.parent / "config.yaml"
    if config.is_file():
        return {"source": str(config), "config": yaml.safe_load(config.read_text())}
    return {"source": "checkpoint hyper-parameters (the run's config.yaml was not found)", "config": checkpoint.get("hyper_parameters")}


def load_for_export(ckpt_path: str | Path) -> tuple[GANModule, dict[str, Any], dict[str, Any]]:
    """The module of a train.py checkpoint, the raw checkpoint, and its generator spec."""
    checkpoint = read_checkpoint(ckpt_path)  # one clear sentence for a missing or broken file
    spec = spec_from_hparams(checkpoint.get("hyper_parameters"))
    if spec is None:
        raise CheckpointError(f"--ckpt_path {ckpt_path} holds no generator class path in its hyper-parameters; export checkpoints written by train.py")
    module = GANModule.load_from_checkpoint(ckpt_path, map_location="cpu").eval()  # keeps the class paths in hparams
    return module, checkpoint, spec


def export_checkpoint(
    ckpt_path: str | Path, out: str | Path, fmt: Optional[str] = None, sparse: bool = True, overwrite: bool = False, rewrite: bool = False,
    quantize: Optional[str] = None, calibration: Calibration = Calibration(),
) -> dict[str, Any]:
    """Export the sampling generator of a train.py checkpoint in ``fmt`` (default: the one
    ``out``'s suffix names, see :func:`format_for`) and write its model card; returns the card
    (the compact format's size report is under ``"sizes"``). ``rewrite`` applies
    :func:`~gan_lightning.deploy.inference.for_inference` first (TorchScript/ONNX only);
    ``quantize`` (``int8``, ``int8-dynamic``; ONNX only) writes an int8 file calibrated on ``calibration``."""
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    fmt = format_for(Path(out), fmt)
    if rewrite and fmt == "compact":
        raise ConfigError("--inference_rewrite applies to --format torchscript or onnx; the compact format stores the generator as trained")
    check_quantize(quantize, fmt)
    if quantize:
        quantization_tools()  # missing onnxruntime: one sentence before the checkpoint is read
    ckpt_path, out = Path(ckpt_path), Path(out)
    _refuse_overwrite([out, card_path(out)], ckpt_path, overwrite)
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    module, checkpoint, spec = load_for_export(ckpt_path)
    generator = module.sampling_generator.eval()
    configured, build_z = configured_generator(module, spec)
    sizes = verification = quantization = None
    if fmt == "compact":
        sizes = asdict(export_generator(module, out, spec=spec, sparse=sparse, checkpoint_path=ckpt_path))
    else:
        metadata = {"z_dim": module.z_dim, "generator": module.edits.spec("generator", spec)}
        written = for_inference(generator) if rewrite else generator
        if quantize:
            checked, quantization = write_quantized(written, module.z_dim, out, quantize, metadata, calibration, reference=generator)
            verification = asdict(checked)
        else:
            verification = asdict(write_verified(written, module.z_dim, out, fmt, metadata, reference=generator))
        verification["inference_rewrite"] = rewrite
    architecture = {
        **module.edits.spec("generator", spec),  # a student's, when one replaced the configured generator
        "pruned_units": {layer: len(kept) for layer, kept in module.edits.kept("generator").items()},
        "lowrank_ranks": module.edits.ranks("generator"),
    }
    card = model_card(
        file=out,
        runtime=fmt,
        architecture=architecture,
        z_dim=module.z_dim,
        output_shape=list(generator(latents(1, module.z_dim)).detach().shape[1:]),
        cost=cost_entry(generator, configured, module.z_dim, build_z),
        quality=run_quality(checkpoint),
        verification=verification,
        source={"checkpoint": str(ckpt_path), "sha256": sha256(ckpt_path), "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step")},
        training_config=training_config(ckpt_path, checkpoint),
        quantization=quantization,
    )
    card["sizes"] = sizes
    card["card_path"] = str(write_card(card, out))
    return card


def measure_quality(card: dict[str, Any], ckpt_path: Path, out: Path, seeds: list[int], config: Optional[Path] = None) -> dict[str, Any]:
    """``--measure_fid``: the written file's metrics and its checkpoint's, with the run's own
    metric settings and the same latents, recorded in the card (and rewritten to disk); for an
    int8 file the quantization record gets its FID beside the fp32 checkpoint's."""
    using = measurement(ckpt_path, config)
    file = evaluate_file(out, ckpt_path, seeds, using=using)
    if "fid" not in file["metrics"]:
        raise ConfigError(f"--measure_fid: the run measures no FID (its metrics.features is {file['features']}); evaluate the file with a run that does")
    checkpoint = evaluate_checkpoint(ckpt_path, seeds, using=using)
    fid, reference = file["metrics"]["fid"], checkpoint["metrics"]["fid"]
    card["measured"] = {
        **{k: file[k] for k in ("features", "split", "num_real", "num_fake", "seeds")},
        "file": file["metrics"], "checkpoint": checkpoint["metrics"], "fid_over_checkpoint": fid["mean"] / reference["mean"],
    }
    if card.get("quantization"):
        card["quantization"].update(fid=fid["mean"], fid_std=fid["std"], fid_fp32=reference["mean"], fid_fp32_std=reference["std"],
                                    fid_note=f"measured by export --measure_fid: {file['num_fake']} samples per seed {seeds} against {file['num_real']}"
                                             f" {file['split']} samples ({file['features']} features); fp32 is the checkpoint's on the same latents")
    card["card_path"] = str(write_card({k: v for k, v in card.items() if k not in ("sizes", "card_path")}, out))
    return card


def summary(card: dict[str, Any]) -> str:
    cost, quality = card["cost"], card["quality"]
    lines = [
        f"generator: {card['architecture']['class_path']}, z_dim {card['input']['shape'][1]}, output {card['output']['shape'][1:]}",
        f"params {cost['params']:,} ({cost['nonzero_params']:,} non-zero, sparsity {cost['sparsity']:.1%});"
        f" MACs/sample {cost['macs_per_sample']:,} ({cost['mac_reduction']:.2f}x fewer than configured)",
    ]
    if card["verification"]:
        v = card["verification"]
        lines.append(f"verified: max |difference| {v['max_abs_diff']:.2g} from the PyTorch generator on {v['batch']} fixed latents (tolerance {v['tolerance']:g})")
    if card.get("quantization"):
        lines.append(summary_line(card["quantization"]))
    if card.get("measured"):
        m = card["measured"]
        f, c = m["file"]["fid"], m["checkpoint"]["fid"]
        lines.append(f"measured: FID {f['mean']:.2f} ± {f['std']:.2f} for this file, {c['mean']:.2f} ± {c['std']:.2f} for its checkpoint ({m['fid_over_checkpoint']:.3f}x;"
                     f" {m['num_fake']} samples per seed {m['seeds']} against {m['num_real']} {m['split']} samples, {m['features']} features)")
    if quality:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in quality["metrics"].items() if k in ("val/fid", "val/kid", "val/swd", "val/modes"))
        lines.append(f"quality at step {quality['step']}: {metrics} ({quality['features']} features, {quality['num_fake']} generated vs {quality['num_real']} {quality['real_split']} samples)")
    else:
        lines.append("quality: the run measured none (metrics off); see python -m gan_lightning.commands.evaluate")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a checkpoint written by train.py")
    parser.add_argument("--out", type=Path, required=True, help="the file to write, e.g. g.pt, g.ts or g.onnx")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="compact (gan-lightning, smallest), torchscript or onnx (needs the export extra); default: from --out's suffix"
                        " (.onnx, .ts; .pt and any other: compact)")
    parser.add_argument("--dense", action="store_true", help="compact format: store every tensor dense (for comparison)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out and its card if they exist")
    parser.add_argument("--inference_rewrite", action="store_true",
                        help="torchscript/onnx: fold BatchNorm and put the image layer in sub-pixel form (exact; speed varies, see docs/deploy.md)")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=None,
                        help="onnx only: int8 (static, QDQ: int8 weights and activations, calibrated on latents; transposed convolutions put in"
                        " sub-pixel form, which ONNX Runtime runs in int8) or int8-dynamic (int8 weights of Linear/MatMul/Gemm layers only;"
                        " convolutions stay float); see docs/deploy.md")
    parser.add_argument("--calibration_batches", type=int, default=Calibration.batches, help="--quantize int8: batches of latents to calibrate on")
    parser.add_argument("--calibration_batch_size", type=int, default=Calibration.batch_size, help="--quantize int8: latents per calibration batch")
    parser.add_argument("--calibration_seed", type=int, default=Calibration.seed, help="--quantize int8: seed of the calibration latents")
    parser.add_argument("--measure_fid", action="store_true",
                        help="score the written file and its checkpoint on the same latents with the run's metric settings and record both in the card")
    parser.add_argument("--fid_seeds", default="0,1,2", help="--measure_fid: comma-separated latent seeds (default 0,1,2)")
    parser.add_argument("--config", type=Path, default=None, help="--measure_fid: the run's config.yaml (default: beside the checkpoint's folder)")
    add_allow_class_flag(parser)
    args = parser.parse_args(argv)
    allow_classes(args.allow_class)
    fid_seeds = parse_seeds(parser, "--fid_seeds", args.fid_seeds)
    if args.measure_fid and not fid_seeds:
        parser.error("--fid_seeds needs at least one seed, e.g. --fid_seeds 0,1,2")

    def export() -> None:
        if args.measure_fid:  # a missing config.yaml is said before the export's minutes, not after
            run_config(run_config_path(args.ckpt_path, args.config))
        calibration = Calibration(args.calibration_batches, args.calibration_batch_size, args.calibration_seed)
        card = export_checkpoint(args.ckpt_path, args.out, args.format, sparse=not args.dense, overwrite=args.overwrite, rewrite=args.inference_rewrite,
                                 quantize=args.quantize, calibration=calibration)
        if args.measure_fid:
            card = measure_quality(card, args.ckpt_path, args.out, fid_seeds, args.config)
        if card["sizes"]:
            print(ExportReport(**card["sizes"]).table())
        print(summary(card))
        print(f"wrote {args.out} and {card['card_path']}")

    return run(export)


if __name__ == "__main__":
    sys.exit(main())
