"""Write a labelled synthetic dataset: N samples of a VAE or of a trained GAN as an image folder
that ``--data datamodules.ImageFolderDataModule`` reads (one subfolder per class).

    python -m gan_lightning.commands.synthesize --source runs/gan-lightning/<run>/checkpoints/last.ckpt \\
        --num_samples 1000 --out synthetic/ [--labels auto|vae|domain|none] [--score]
    python -m gan_lightning.commands.synthesize --source ~/.cache/gan-lightning/vae/vae-<key>.pt \\
        --config runs/gan-lightning/<run>/config.yaml --num_samples 1000 --out synthetic/ --score

The source is a train.py checkpoint (``.ckpt``), a generator written by the export command, or
a VAE file of the vae callback (its cache, printed when it trains). Labels (``--labels``):
``vae`` is the class a conditional VAE was asked for; ``domain`` is the prediction of the domain
classifier (the one behind domain FID, trained on the data of ``--config``); ``none`` writes
every image into the folder itself (unlabelled); ``auto`` picks vae for a conditional VAE, else
domain when the data has labels, else none. ``dataset.json`` in the folder records which.
``--score`` adds the classification accuracy score (gan_lightning.quality.cas): a classifier
trained on the N written images against one trained on N real training images, both tested
on the real validation split.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from gan_lightning.class_paths import add_allow_class_flag, allow_classes
from gan_lightning.commands.console import CommandParser, run
from gan_lightning.commands.evaluate import datamodule_from_config, run_config
from gan_lightning.commands.generate import latent_batches, load_generator, to_uint8, write_images
from gan_lightning.dataset_tensors import stack_samples
from gan_lightning.deploy.torchscript_trust import add_trust_torchscript_flag
from gan_lightning.errors import ConfigError
from gan_lightning.files import write_atomically
from gan_lightning.quality.cas import classification_accuracy_score
from gan_lightning.quality.features import domain_classifier, load_domain_classifier
from gan_lightning.synth.vae import is_vae_file, load_vae

LABEL_SOURCES = ("auto", "vae", "domain", "none")


def draw(source: Path, num_samples: int, seed: int, batch_size: int, trust_torchscript: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor], str]:
    """Samples of the source in [-1, 1], the labels a conditional VAE drew them for (else None),
    and what the source is (``vae``, ``conditional vae`` or ``gan``); the same seed, the same samples."""
    if is_vae_file(source):
        vae, _ = load_vae(source, flag="--source")
        generator = torch.Generator().manual_seed(seed)
        labels = vae.sample_labels(num_samples, generator)
        return vae.sample(num_samples, labels, generator), labels, "conditional vae" if vae.num_classes else "vae"
    generator = load_generator(source, torch.device("cpu"), trust_torchscript)
    with torch.no_grad():
        batches = list(latent_batches(num_samples, generator.z_dim, seed, batch_size))
        images = torch.cat([generator(z).float() for z in tqdm(batches, desc="synthesize", unit="batch")])
    return images, None, "gan"


def class_names(datamodule, num_classes: int) -> list[str]:
    """Folder names whose sorted order is the label order: the data's own class names when it
    has them (an image folder), else zero-padded numbers."""
    names = list(getattr(datamodule, "classes", None) or [])
    if len(names) == num_classes and names == sorted(names):
        return names
    width = len(str(num_classes - 1))
    return [f"{i:0{width}d}" for i in range(num_classes)]


def synthesize(source: str | Path, out: str | Path, num_samples: int = 1000, labels: str = "auto", config: Optional[str | Path] = None,
               seed: int = 0, batch_size: int = 256, score: bool = False, overwrite: bool = False, trust_torchscript: bool = False) -> dict:
    """Write the dataset and return its record (also written as ``<out>/dataset.json``)."""
    source, out = Path(source), Path(out)
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"--num_samples and --batch_size must be >= 1, got {num_samples} and {batch_size}")
    if labels not in LABEL_SOURCES:
        raise ConfigError(f"--labels must be one of {', '.join(LABEL_SOURCES)}, got {labels!r}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the dataset")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; choose a new folder or pass --overwrite (files of the same names are replaced)")
    if not source.exists():
        raise ConfigError(f"--source {source} does not exist; give a train.py checkpoint (.ckpt), an exported generator or a VAE file")
    if config is None and source.suffix == ".ckpt":
        candidate = source.parent.parent / "config.yaml"  # a train.py run folder: <run>/checkpoints/x.ckpt
        config = candidate if candidate.is_file() else None
    datamodule = None
    if config is not None:
        datamodule = datamodule_from_config(run_config(Path(config)))
        datamodule.setup("validate")
    num_classes = getattr(datamodule, "num_classes", None) or 0

    images, vae_labels, kind = draw(source, num_samples, seed, batch_size, trust_torchscript)
    if images.dim() != 4:
        raise ConfigError(f"--source {source} makes samples of shape {tuple(images.shape[1:])}, which are not images; the dataset is written as PNG files")
    if datamodule is not None and tuple(images.shape[1:]) != tuple(datamodule.sample_shape):
        raise ConfigError(f"--source {source} makes samples of shape {tuple(images.shape[1:])} but the data of --config {config} has {tuple(datamodule.sample_shape)}")
    if labels == "auto":
        labels = "vae" if vae_labels is not None else "domain" if num_classes >= 2 else "none"
    if labels == "vae" and vae_labels is None:
        raise ConfigError(f"--labels vae needs a conditional VAE as --source, and {source} is a{'n unconditional VAE' if kind == 'vae' else ' GAN'}: use --labels domain")
    if (labels == "domain" or score) and num_classes < 2:
        flag = "--labels domain" if labels == "domain" else "--score"
        raise ConfigError(f"{flag} needs labelled data: pass --config with a data section whose data has classes (e.g. the run's config.yaml)")

    if score:  # checked before anything is written
        real = stack_samples(datamodule.train_set)
        if len(real[0]) < num_samples:
            raise ConfigError(
                f"--score compares with as many real training images as --num_samples ({num_samples}), and the data of --config"
                f" {config} has {len(real[0])}: lower --num_samples"
            )

    pixels = to_uint8(images)
    stored = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1  # what the files hold, for the score
    if labels == "vae":
        targets = vae_labels
    elif labels == "domain":
        path, _ = domain_classifier(datamodule)
        with torch.no_grad():
            targets = load_domain_classifier(path)(stored)[1].argmax(1)
    else:
        targets = None
    names = class_names(datamodule, max(num_classes, int(targets.max()) + 1)) if targets is not None else []
    write_images(pixels, out, targets, names)
    record = {
        "source": str(source), "kind": kind, "num_samples": num_samples, "seed": seed, "labels": labels, "classes": names,
        "class_counts": torch.bincount(targets, minlength=len(names)).tolist() if targets is not None else None,
    }
    if score:
        test = stack_samples(datamodule.val_set)
        record["cas"] = classification_accuracy_score((stored, targets), real, test, num_classes, seed=seed)
    text = json.dumps(record, indent=2)
    write_atomically(out / "dataset.json", lambda f: f.write(text.encode()), what="the dataset record", then=", then run again with --overwrite")
    return record


def main(argv: Optional[list[str]] = None) -> int:
    parser = CommandParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a train.py checkpoint (.ckpt), an exported generator, or a VAE file")
    parser.add_argument("--out", type=Path, required=True, help="the dataset folder to write")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--labels", default="auto", help=f"where labels come from: {', '.join(LABEL_SOURCES)} (default auto)")
    parser.add_argument("--config", type=Path, default=None, help="config with the data section (default: the run's config.yaml for a .ckpt)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--score", action="store_true", help="also measure the classification accuracy score against real data")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    add_trust_torchscript_flag(parser)
    add_allow_class_flag(parser)
    args = parser.parse_args(argv)
    allow_classes(args.allow_class)

    def command() -> None:
        record = synthesize(args.source, args.out, args.num_samples, args.labels, args.config, args.seed, args.batch_size, args.score, args.overwrite,
                            trust_torchscript=args.trust_torchscript)
        counts = f" ({', '.join(f'{n}: {c}' for n, c in zip(record['classes'], record['class_counts']))})" if record["class_counts"] else ""
        print(f"wrote {record['num_samples']} images from the {record['kind']} to {args.out}, labels {record['labels']}{counts}")
        if "cas" in record:
            cas = record["cas"]
            print(f"classification accuracy on {cas['num_test']} real validation images: trained on {cas['num_train']} synthetic"
                  f" {cas['cas_synthetic']:.3f}, on as many real {cas['cas_real']:.3f} (ratio {cas['cas_ratio']:.3f})")

    return run(command)


if __name__ == "__main__":
    sys.exit(main())
