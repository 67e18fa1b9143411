"""Evaluate a checkpoint without training: FID/KID/IS/precision/recall and mode coverage,
averaged over several latent seeds, printed as a table and written as JSON.

    python -m gan_lightning.commands.evaluate --ckpt_path runs/gan-lightning/<run>/checkpoints/last.ckpt \\
        [--seeds 0,1,2] [--features domain|inception|none] [--num_fake N] [--num_real N]
        [--real_split val|train|all] [--out metrics.json]

The data and, unless overridden, the metric settings come from the run's saved
``config.yaml`` (next to ``checkpoints/``), or from ``--config``.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from jsonargparse import ArgumentParser

from callbacks.fidelity import FidelityEvaluation
from datamodules.base import GANDataModule
from gan_lightning.class_paths import add_allow_class_flag, allow_classes
from gan_lightning.commands.config_classes import check_data_section
from gan_lightning.commands.config_files import read_yaml
from gan_lightning.commands.console import CommandParser, run
from gan_lightning.commands.generate import latent_batches
from gan_lightning.core.checkpoint import read_checkpoint
from gan_lightning.core.module import GANModule
from gan_lightning.deploy.runtimes import load_runtime
from gan_lightning.errors import ConfigError
from gan_lightning.files import write_atomically
from gan_lightning.quality.evaluation import REAL_SPLITS, check_metrics_setup, check_real_split, evaluate_generator, evaluate_samples
from gan_lightning.quality.features import domain_cache_dir, domain_classifier
from gan_lightning.quality.inception_file import verify_inception_weights

FILE_CHUNK = 500  # latents per call of an exported file, as GANModule.generate batches them


def run_config(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"--config {path} does not exist; pass the run's config.yaml (it holds the data section)")
    config = read_yaml(path, "--config") or {}  # a folder, or a syntax error with its line, in one sentence
    if not isinstance(config, dict) or not config.get("data"):
        raise ConfigError(f"--config {path} has no data section")
    check_data_section(config["data"], str(path))  # before jsonargparse imports what it names
    return config


def run_config_path(ckpt_path: Path, config: Optional[Path] = None) -> Path:
    """``config``, or the config.yaml train.py writes beside a run's ``checkpoints/`` folder."""
    return config or ckpt_path.parent.parent / "config.yaml"


def datamodule_from_config(config: dict) -> GANDataModule:
    parser = ArgumentParser()
    parser.add_subclass_arguments(GANDataModule, "data")
    return parser.instantiate_classes(parser.parse_object({"data": config["data"]})).data


def _mean_std(values: list[float]) -> dict:
    # NaN (e.g. mode_kl of a generator with no high-quality sample) stays NaN; JSON gets null.
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values):
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def evaluate_checkpoint(ckpt_path: Path, seeds: list[int], config: Optional[Path] = None, using: Optional[Measurement] = None,
                        **overrides) -> dict:
    """Metrics of a checkpoint per seed and their mean/std. Unless overridden, the feature space,
    sample counts, real split, classifier settings and cache are the run's own ``metrics`` settings,
    so the numbers match the ``val/*`` values logged in training for the same weights and seed.
    A config.yaml written before ``real_split`` existed gets its default, ``val``, as in that run.
    ``using``: a :func:`measurement` already set up for this run, instead of ``config``/``overrides``."""
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
    settings, datamodule, domain = using or measurement(ckpt_path, config, **overrides)
    module = GANModule.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    module.check_sample_shape(tuple(datamodule.sample_shape))
    per_seed = {
        seed: evaluate_generator(
            module, datamodule, settings["features"], settings["num_fake"], settings["num_real"], seed, domain,
            settings["inception_weights"], settings["real_split"],
        )
        for seed in seeds
    }
    return summarize(str(ckpt_path), settings, seeds, per_seed)


def evaluate_file(path: Path, ckpt_path: Path, seeds: list[int], config: Optional[Path] = None, using: Optional[Measurement] = None,
                  **overrides) -> dict:
    """Metrics of an exported file (any format ``generate`` runs) per seed and their mean/std,
    with the settings of the run ``ckpt_path`` belongs to: seed s draws the latents the
    checkpoint's evaluation draws, so a file that reproduces its checkpoint's outputs reproduces
    its numbers, and an int8 file's difference is the quantization's (``using``/``overrides`` as
    for :func:`evaluate_checkpoint`)."""
    settings, datamodule, domain = using or measurement(ckpt_path, config, **overrides)
    generator = load_runtime(path)
    per_seed = {}
    for seed in seeds:
        with torch.no_grad():
            fake = torch.cat([generator(z) for z in latent_batches(settings["num_fake"], generator.z_dim, seed, FILE_CHUNK)])
        per_seed[seed] = evaluate_samples(fake, datamodule, settings["features"], settings["num_real"], domain,
                                          settings["inception_weights"], settings["real_split"])
    return summarize(str(path), settings, seeds, per_seed)


class Measurement(NamedTuple):
    """How a run's samples are scored: its metric settings, its datamodule set up for validation
    and its domain classifier file (None where the features need none)."""

    settings: dict
    datamodule: GANDataModule
    domain: Optional[str]


def measurement(ckpt_path: Path, config: Optional[Path] = None, **overrides) -> Measurement:
    """The run's :func:`metric_settings` and domain classifier, set up once for everything that
    scores its samples (a checkpoint and its exported file, say)."""
    settings, datamodule = metric_settings(ckpt_path, config, **overrides)
    return Measurement(settings, datamodule, domain_weights(datamodule, settings))


def metric_settings(ckpt_path: Path, config: Optional[Path] = None, **overrides) -> tuple[dict, GANDataModule]:
    """The run's ``metrics`` settings with ``overrides`` (``None`` values ignored) and its
    datamodule, set up for validation: what :func:`evaluate_checkpoint` measures with, for
    anything that scores samples of the same run the same way (an exported file's, say)."""
    read_checkpoint(ckpt_path)  # one clear sentence for a missing or broken file
    config = run_config_path(ckpt_path, config)
    cfg = run_config(config)
    defaults = {k: p.default for k, p in inspect.signature(FidelityEvaluation.__init__).parameters.items() if k != "self"}
    settings = {**defaults, **(cfg.get("metrics") or {})}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    features = settings["features"]
    check_real_split(settings["real_split"])  # a hand-edited config.yaml, before the datamodule loads
    if features == "inception" and settings["inception_weights"]:  # named as the user gave it, before torch-fidelity reads it
        given = overrides.get("inception_weights") is not None
        verify_inception_weights(settings["inception_weights"], "--inception_weights" if given else f"metrics.inception_weights in {config}:")
    datamodule = datamodule_from_config(cfg)
    datamodule.setup("validate")
    return settings, datamodule


def domain_weights(datamodule: GANDataModule, settings: dict) -> Optional[str]:
    """The cached domain classifier file (trained first if need be), or None where the settings
    and data need none; refuses settings that cannot be measured."""
    if not check_metrics_setup(datamodule, settings["features"], settings["inception_weights"]):
        return None
    cache = Path(settings["domain_cache_dir"]) if settings["domain_cache_dir"] else domain_cache_dir()
    return str(domain_classifier(datamodule, cache, epochs=settings["domain_epochs"])[0])


def summarize(source: str, settings: dict, seeds: list[int], per_seed: dict[int, dict]) -> dict:
    """Per-seed metrics and their mean/std, as the evaluate command writes them (``checkpoint``: ``source``)."""
    first = next(iter(per_seed.values()))
    names = [k for k in first if not k.startswith("num_")]
    return {
        "checkpoint": source,
        "features": settings["features"],
        "split": settings["real_split"],
        "num_real": int(first["num_real"]),
        "num_fake": int(first["num_fake"]),
        "seeds": seeds,
        "metrics": {name: _mean_std([v[name] for v in per_seed.values()]) for name in names},
        "per_seed": {str(s): {k: (v[k] if math.isfinite(v[k]) else None) for k in names} for s, v in per_seed.items()},
    }


def refuse_replacing(out: Path, ckpt_path: Path) -> None:
    """--out may replace an earlier evaluation's JSON (the default file is rewritten on every
    evaluation), never any other file: a checkpoint would be lost."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; pass a .json file name")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"--out {out} cannot be created because {blocker} is a file, not a folder; choose another path")
    if not out.exists():
        return
    try:
        earlier = json.loads(out.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        earlier = None
    if not (isinstance(earlier, dict) and {"checkpoint", "metrics", "per_seed"} <= set(earlier)) or out.resolve() == ckpt_path.resolve():
        raise ConfigError(f"--out {out} exists and is not an earlier evaluation result, so it is not replaced; choose another file name")


def format_table(result: dict) -> str:
    lines = [
        f"{result['checkpoint']}: {result['features']} features, {result['num_fake']} generated vs"
        f" {result['num_real']} {result['split']} samples, seeds {result['seeds']}",
        f"{'metric':<14}{'mean':>12}{'std':>12}",
    ]
    for name, v in result["metrics"].items():
        lines.append(f"{name:<14}{'nan':>12}{'':>12}" if v["mean"] is None else f"{name:<14}{v['mean']:>12.4f}{v['std']:>12.4f}")
    return "\n".join(lines)


def parse_seeds(parser: CommandParser, flag: str, text: str) -> list[int]:
    """``0,1,2`` as latent seeds, or the parser's one-line error naming ``flag``."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        parser.error(f"{flag} must be comma-separated integers, got {text!r}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated latent seeds (default 0,1,2)")
    parser.add_argument("--features", choices=["domain", "inception", "none"], default=None, help="default: the run's")
    parser.add_argument("--num_fake", type=int, default=None, help="default: the run's --metrics.num_fake")
    parser.add_argument("--num_real", type=int, default=None, help="default: the run's --metrics.num_real")
    parser.add_argument("--real_split", choices=list(REAL_SPLITS), default=None, help="default: the run's --metrics.real_split")
    parser.add_argument("--config", type=Path, default=None, help="config with the data section (default: the run's config.yaml)")
    parser.add_argument("--inception_weights", default=None, help="InceptionV3 FID weights file")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: <run>/evaluation.json)")
    add_allow_class_flag(parser)
    args = parser.parse_args(argv)
    allow_classes(args.allow_class)
    seeds = parse_seeds(parser, "--seeds", args.seeds)

    def evaluate() -> None:
        out = args.out or args.ckpt_path.parent.parent / "evaluation.json"
        refuse_replacing(out, args.ckpt_path)  # before the evaluation's minutes, not after
        result = evaluate_checkpoint(
            args.ckpt_path, seeds, args.config, features=args.features, num_fake=args.num_fake,
            num_real=args.num_real, real_split=args.real_split, inception_weights=args.inception_weights,
        )
        print(format_table(result))
        text = json.dumps(result, indent=2, allow_nan=False)
        write_atomically(out, lambda f: f.write(text.encode()))  # a full disk keeps the earlier evaluation
        print(f"wrote {out}")

    return run(evaluate)


if __name__ == "__main__":
    sys.exit(main())
