"""Low-data GAN training: VAE samples (the ``vae`` callback) against DiffAugment and nothing.

The default DCGAN (configs/default.yaml's model and batch size 16) is trained on --fractions
of the digits' training split (``DigitsDataModule(train_fraction=...)``: 10% is 162 images,
25% is 404) for the same --epochs with each --seeds, in each of these ways:

- ``none``: no augmentation;
- ``vae-real-25``: ``VAEAugmentation(mode="replace", fraction=0.25)``: a quarter of every real
  batch is VAE samples;
- ``vae-real-50-linear``: ``fraction=0.5, schedule="linear"``: half at first, decaying to 0 by
  the last epoch;
- ``vae-fake-25``: ``mode="fake", fraction=0.25``: VAE samples added to D's fakes, a quarter
  of what D sees as fake;
- ``diffaug``: ``DiffAugment()`` (color, translation, cutout on everything D sees).

The VAE of each fraction is trained once on that fraction's images (cached; the record is
in the JSON). Every generator is measured with the domain features against ALL 1797 digits
(train + validation of the full data, whatever fraction it was trained on) with --num_fake
samples on latent seed 0: the reference is the same for every run. FID is reported as mean
and std over the training seeds; the measurement noise (the std of one model's FID over
latent seeds 0, 1, 2, averaged over models) is reported beside it. A difference smaller than
the larger std is not a result.

Two more tables:

- classification accuracy score (CAS, gan_lightning.quality.cas): a classifier trained on N
  labelled images of each source, N = the fraction's training size, tested on the 180 real
  validation images: real images; a conditional VAE (its own labels); the unconditional VAE
  and the ``none``/``diffaug`` GANs of seed 0 (labels from the domain classifier, trained on
  the full data);
- calibration source: the ``none`` GANs of the largest fraction are pruned (structured,
  --calib_amount of the units of generator and discriminator, ``taylor`` criterion, one shot
  at epoch 0) with real and with VAE calibration samples and fine-tuned --calib_epochs: how
  many kept units the two decisions share (Jaccard, per network) and FID after fine-tuning.
  The generator's importance is its adversarial loss on latents, which no real sample enters,
  so only the discriminator's decision can move.

    python benchmarks/low_data.py [--fractions 0.1,0.25] [--epochs 60] [--seeds 0,1,2]
        [--num_fake 2000] [--vae_epochs 30] [--out benchmarks/results/low_data.json]

    # a smoke run (a minute): one fraction, one seed, 2 epochs
    python benchmarks/low_data.py --fractions 0.1 --epochs 2 --seeds 0 --vae_epochs 2 --num_fake 300 --calib_epochs 1
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch

try:  # run as a script, `benchmarks/` is sys.path[0]; run as a module from the repository root, it is a namespace package
    from prune_vs_modelpruning import default_module, git_state, make_trainer, mean_std
except ImportError:  # pragma: no cover
    from benchmarks.prune_vs_modelpruning import default_module, git_state, make_trainer, mean_std

from callbacks.diffaug import DiffAugment
from callbacks.prune import Prune
from callbacks.vae import VAEAugmentation
from datamodules.digits import DigitsDataModule
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.quality.cas import classification_accuracy_score
from gan_lightning.quality.evaluation import evaluate_generator
from gan_lightning.quality.features import domain_classifier, load_domain_classifier
from gan_lightning.synth.vae import VAESettings, cached_vae, vae_cache_dir

BATCH_SIZE = 16  # configs/default.yaml's
EVAL_SEEDS = (0, 1, 2)


def variants(vae_settings: VAESettings) -> dict[str, Callable[[], list]]:
    vae = dict(latent_dim=vae_settings.latent_dim, width=vae_settings.width, epochs=vae_settings.epochs, seed=vae_settings.seed)
    return {
        "none": lambda: [],
        "vae-real-25": lambda: [VAEAugmentation(mode="replace", fraction=0.25, **vae)],
        "vae-real-50-linear": lambda: [VAEAugmentation(mode="replace", fraction=0.5, schedule="linear", **vae)],
        "vae-fake-25": lambda: [VAEAugmentation(mode="fake", fraction=0.25, **vae)],
        "diffaug": lambda: [DiffAugment()],
    }


def digits(fraction: float) -> DigitsDataModule:
    data = DigitsDataModule(image_size=32, batch_size=BATCH_SIZE, train_fraction=fraction)
    data.setup("fit")
    return data


def measure(module, reference: DigitsDataModule, domain: str, num_fake: int, seeds=(0,)) -> dict[str, list[float]]:
    """FID, precision, recall and classes covered against all the digits, per latent seed."""
    out: dict[str, list[float]] = {"fid": [], "precision": [], "recall": [], "classes": []}
    for seed in seeds:
        m = evaluate_generator(module, reference, "domain", num_fake, 10**6, seed, domain, real_split="all")
        for key, name in (("fid", "fid"), ("precision", "precision"), ("recall", "recall"), ("classes", "modes")):
            out[key].append(m[name])
    return out


def train(data, epochs: int, seed: int, callbacks: list, root: Path, module=None) -> pl.LightningModule:
    pl.seed_everything(seed, verbose=False)
    module = module if module is not None else default_module()
    make_trainer(root, epochs, callbacks).fit(module, datamodule=data)
    return module


def summarize(per_seed: list[dict[str, list[float]]]) -> dict:
    row = {}
    for key in ("fid", "precision", "recall", "classes"):
        row[key + "_mean"], row[key + "_std"] = mean_std([m[key][0] for m in per_seed])  # latent seed 0 of each model
    # the measurement noise: one model's FID over latent seeds, averaged over the models
    row["fid_eval_std"] = statistics.fmean(statistics.stdev(m["fid"]) for m in per_seed)
    row["fid_per_seed"] = [m["fid"][0] for m in per_seed]
    return row


def labelled_by_domain(images: torch.Tensor, domain: str) -> torch.Tensor:
    with torch.no_grad():
        return load_domain_classifier(domain)(images)[1].argmax(1)


def cas_table(fraction: float, data, reference, domain: str, vae_settings: VAESettings, gans: dict, cache: Path, seed: int = 0) -> dict:
    images, labels = stack_samples(data.train_set)
    n = len(images)
    test = stack_samples(reference.val_set)
    conditional = VAESettings(**{**vae_settings.__dict__, "conditional": True})
    cvae, *_ = cached_vae(images, labels, conditional, 10, cache)
    uvae, *_ = cached_vae(images, labels, vae_settings, 10, cache)
    gen = torch.Generator().manual_seed(seed)
    sources = {"real": (images, labels)}
    cvae_labels = cvae.sample_labels(n, gen)
    sources["vae-conditional (own labels)"] = (cvae.sample(n, cvae_labels, gen), cvae_labels)
    uvae_images = uvae.sample(n, generator=gen)
    sources["vae (domain labels)"] = (uvae_images, labelled_by_domain(uvae_images, domain))
    for name, module in gans.items():
        fake = module.generate(n, seed=seed)
        sources[f"gan {name} (domain labels)"] = (fake, labelled_by_domain(fake, domain))
    rows = {}
    for name, (x, y) in sources.items():
        score = classification_accuracy_score((x.float(), y), (images, labels), test, 10, seed=seed)
        rows[name] = {"accuracy": score["cas_synthetic"], "real_accuracy": score["cas_real"], "ratio": score["cas_ratio"], "n": n,
                      "num_test": score["num_test"]}
    return rows


def jaccard(a: dict[str, list[int]], b: dict[str, list[int]]) -> float:
    """Shared kept units over all kept units, over every layer of a network."""
    inter = sum(len(set(a[k]) & set(b.get(k, []))) for k in a)
    union = sum(len(set(a[k]) | set(b.get(k, []))) for k in a)
    return inter / union if union else 1.0


def calibration_table(dense_models: list, data, reference, domain: str, args, vae_settings: VAESettings, root: Path) -> dict:
    vae = dict(latent_dim=vae_settings.latent_dim, width=vae_settings.width, epochs=vae_settings.epochs, seed=vae_settings.seed)
    rows = {"real": [], "vae": []}
    overlap: dict[str, list[float]] = {"generator": [], "discriminator": []}
    for seed, dense in dense_models:
        decisions = {}
        for source in ("real", "vae"):
            prune = Prune(generator_amount=args.calib_amount, discriminator_amount=args.calib_amount, criterion="taylor", calibration_source=source, start_epoch=0, metric="none", seed=seed)
            extra = [VAEAugmentation(mode="none", **vae)] if source == "vae" else []
            module = train(data, args.calib_epochs, seed, [*extra, prune], root / f"calib-{source}-{seed}", module=copy.deepcopy(dense))
            decisions[source] = {net: module.edits.kept(net) for net in ("generator", "discriminator")}
            rows[source].append(measure(module, reference, domain, args.num_fake, EVAL_SEEDS))
        for network in overlap:
            overlap[network].append(jaccard(decisions["real"].get(network, {}), decisions["vae"].get(network, {})))
    return {"kept_unit_jaccard": overlap, **{s: summarize(r) for s, r in rows.items()}}


def print_rows(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'variant':<22}{'FID mean':>10}{'± std':>8}{'eval std':>10}{'precision':>11}{'recall':>8}{'classes':>9}")
    for name, r in rows.items():
        print(f"{name:<22}{r['fid_mean']:>10.2f}{r['fid_std']:>8.2f}{r['fid_eval_std']:>10.2f}{r['precision_mean']:>11.3f}"
              f"{r['recall_mean']:>8.3f}{r['classes_mean']:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fractions", default="0.1,0.25")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num_fake", type=int, default=2000)
    parser.add_argument("--vae_epochs", type=int, default=30)
    parser.add_argument("--calib_amount", type=float, default=0.5)
    parser.add_argument("--calib_epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/low_data.json"))
    args = parser.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    vae_settings = VAESettings(epochs=args.vae_epochs)
    reference = digits(1.0)  # the yardstick: every run is compared with all 1797 digits
    domain = str(domain_classifier(reference)[0])
    result = {"args": vars(args) | {"out": str(args.out)}, "git": git_state(), "platform": platform.platform(), "torch": torch.__version__,
              "reference": {"features": "domain", "real_split": "all of the full data", "num_real": len(reference.train_set) + len(reference.val_set),
                            "num_fake": args.num_fake, "eval_seeds": list(EVAL_SEEDS)}, "fractions": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fraction in fractions:
            data = digits(fraction)
            per_variant, models = {}, {}
            for name, make_callbacks in variants(vae_settings).items():
                per_seed = []
                for seed in seeds:
                    module = train(data, args.epochs, seed, make_callbacks(), root / f"{fraction}-{name}-{seed}")
                    per_seed.append(measure(module, reference, domain, args.num_fake, EVAL_SEEDS))
                    models[(name, seed)] = module
                    print(f"[{time.perf_counter() - start:6.0f}s] {fraction:.0%} {name} seed {seed}: FID {per_seed[-1]['fid'][0]:.2f}", flush=True)
                per_variant[name] = summarize(per_seed)
            entry = {"num_train": len(data.train_set), "batches_per_epoch": len(data.train_set) // BATCH_SIZE, "variants": per_variant}
            print_rows(f"{fraction:.0%} of the training split ({entry['num_train']} images), {args.epochs} epochs, seeds {seeds}", per_variant)
            gans = {name: models[(name, seeds[0])] for name in ("none", "diffaug")}
            entry["cas"] = cas_table(fraction, data, reference, domain, vae_settings, gans, vae_cache_dir())
            print(f"{'CAS source':<34}{'accuracy':>10}{'real':>8}{'ratio':>8}")
            for name, r in entry["cas"].items():
                print(f"{name:<34}{r['accuracy']:>10.3f}{r['real_accuracy']:>8.3f}{r['ratio']:>8.3f}")
            result["fractions"][str(fraction)] = entry
            if fraction == max(fractions):
                dense = [(seed, models[("none", seed)]) for seed in seeds]
                calib = calibration_table(dense, data, reference, domain, args, vae_settings, root)
                entry["calibration"] = calib
                print(f"\ncalibration source, {fraction:.0%} data, structured {args.calib_amount:.0%} taylor, {args.calib_epochs} fine-tuning epochs:"
                      " kept-unit Jaccard real vs vae: " + ", ".join(f"{net} {statistics.fmean(v):.3f} {[round(x, 3) for x in v]}" for net, v in calib["kept_unit_jaccard"].items()))
                print_rows("after pruning", {"real calibration": calib["real"], "vae calibration": calib["vae"]})
    result["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.exit(main())
