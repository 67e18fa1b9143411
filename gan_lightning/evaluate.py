"""Evaluate a checkpoint without training: FID/KID/IS/precision/recall and mode coverage,
averaged over several latent seeds, printed as a table and written as JSON.

    python -m gan_lightning.evaluate --ckpt_path runs/gan-lightning/<run>/checkpoints/last.ckpt \\
        [--seeds 0,1,2] [--features domain|inception|none] [--num_fake 1000] [--num_real 1000] [--out metrics.json]

The data comes from the run's saved ``config.yaml`` (next to ``checkpoints/``) unless
``--config`` names another file with a ``data:`` section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Optional

import yaml
from jsonargparse import ArgumentParser

from datamodules.base import GANDataModule
from gan_lightning.checkpoint import read_checkpoint
from gan_lightning.errors import ConfigError, GANLightningError
from gan_lightning.evaluation import evaluate_generator, needs_domain_classifier
from gan_lightning.features import DEFAULT_CACHE_DIR, domain_classifier, inception_weights_or_fail
from gan_lightning.module import GANModule


def datamodule_from_config(path: Path) -> GANDataModule:
    if not path.is_file():
        raise ConfigError(f"--config {path} does not exist; pass the run's config.yaml (it holds the data section)")
    data = (yaml.safe_load(path.read_text()) or {}).get("data")
    if not data:
        raise ConfigError(f"--config {path} has no data section")
    parser = ArgumentParser()
    parser.add_subclass_arguments(GANDataModule, "data")
    return parser.instantiate_classes(parser.parse_object({"data": data})).data


def evaluate_checkpoint(
    ckpt_path: Path,
    seeds: list[int],
    features: str = "domain",
    num_fake: int = 1000,
    num_real: int = 1000,
    config: Optional[Path] = None,
    inception_weights: Optional[str] = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> dict:
    read_checkpoint(ckpt_path)  # one clear sentence for a missing or broken file
    if features == "inception":
        inception_weights_or_fail(inception_weights)
    module = GANModule.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
    datamodule = datamodule_from_config(config or ckpt_path.parent.parent / "config.yaml")
    datamodule.setup("validate")
    module.check_sample_shape(tuple(datamodule.sample_shape))
    domain = str(domain_classifier(datamodule, cache_dir)[0]) if needs_domain_classifier(datamodule, features) else None
    per_seed = {
        seed: evaluate_generator(module, datamodule, features, num_fake, num_real, seed, domain, inception_weights)
        for seed in seeds
    }
    names = [k for k in next(iter(per_seed.values())) if not k.startswith("num_")]
    summary = {
        name: {
            "mean": statistics.fmean(v[name] for v in per_seed.values()),
            "std": statistics.stdev([v[name] for v in per_seed.values()]) if len(seeds) > 1 else 0.0,
        }
        for name in names
    }
    first = next(iter(per_seed.values()))
    return {
        "checkpoint": str(ckpt_path),
        "features": features,
        "split": "val",
        "num_real": int(first["num_real"]),
        "num_fake": int(first["num_fake"]),
        "seeds": seeds,
        "metrics": summary,
        "per_seed": {str(s): {k: v[k] for k in names} for s, v in per_seed.items()},
    }


def format_table(result: dict) -> str:
    lines = [
        f"{result['checkpoint']}: {result['features']} features, {result['num_fake']} generated vs"
        f" {result['num_real']} {result['split']} samples, seeds {result['seeds']}",
        f"{'metric':<14}{'mean':>12}{'std':>12}",
    ]
    lines += [f"{name:<14}{v['mean']:>12.4f}{v['std']:>12.4f}" for name, v in result["metrics"].items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated latent seeds (default 0,1,2)")
    parser.add_argument("--features", choices=["domain", "inception", "none"], default="domain")
    parser.add_argument("--num_fake", type=int, default=1000)
    parser.add_argument("--num_real", type=int, default=1000)
    parser.add_argument("--config", type=Path, default=None, help="config with the data section (default: the run's config.yaml)")
    parser.add_argument("--inception_weights", default=None, help="InceptionV3 FID weights file")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write (default: <run>/evaluation.json)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    try:
        result = evaluate_checkpoint(
            args.ckpt_path, seeds, args.features, args.num_fake, args.num_real, args.config, args.inception_weights
        )
    except GANLightningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    out = args.out or args.ckpt_path.parent.parent / "evaluation.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
