"""Battery: option values, on the command line and in YAML: Lightning's count-or-fraction
options keep their type, a compression that would empty a layer keeps a floor, and every wrong
value is one sentence before a run folder exists."""

from __future__ import annotations

import csv

from tests.reliability.battery import Case
from tests.reliability.cases_cli import tiny

CATEGORY = "option values"
QUICK = ("--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")


def _steps(ws) -> int:
    import torch

    last = next((ws.dir / "runs").rglob("last.ckpt"))
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def trained_one_batch(ws) -> None:
    # manual optimization counts a D and a G step per batch
    assert _steps(ws) == 2, f"trained {_steps(ws) // 2} batches, not 1"


def trained_every_batch(ws) -> None:
    assert _steps(ws) == 6, f"trained {_steps(ws) // 2} batches, not the 3 of tests/tiny.yaml"


def validated_after_every_batch(ws) -> None:
    rows = list(csv.DictReader(next((ws.dir / "runs").rglob("metrics.csv")).open()))
    validations = [row for row in rows if row.get("val/swd")]
    assert len(validations) == 3, f"validated {len(validations)} times in 3 batches"


def _yaml_limit(ws) -> list[str]:
    config = ws.path("one_batch.yaml")
    config.write_text("trainer:\n  limit_train_batches: 1\n")
    return tiny(ws, *QUICK, "--config", str(config))


CASES = [
    Case("limit-train-batches-int-one", CATEGORY, "train", lambda ws: tiny(ws, *QUICK, "--trainer.limit_train_batches", "1"), r"", rc=0,
         check=trained_one_batch),
    Case("limit-train-batches-yaml-one", CATEGORY, "train", _yaml_limit, r"", rc=0, check=trained_one_batch),
    Case("limit-train-batches-float-one", CATEGORY, "train",
         lambda ws: tiny(ws, *QUICK, "--trainer.limit_train_batches", "1.0", "--data.init_args.train_fraction", "0.03"), r"", rc=0,
         check=trained_every_batch),
    Case("val-check-interval-int", CATEGORY, "train",
         lambda ws: tiny(ws, *QUICK, "--trainer.val_check_interval", "1", "--trainer.num_sanity_val_steps", "0"), r"", rc=0,
         check=validated_after_every_batch),
]


def every_generator_layer_kept(ws) -> None:
    import torch

    state = torch.load(next((ws.dir / "runs").rglob("last.ckpt")), map_location="cpu", weights_only=True)["state_dict"]
    layers = {k: v for k, v in state.items() if k.startswith("generator.") and k.endswith(".weight") and v.dim() >= 2}
    assert len(layers) == 3, sorted(layers)
    empty = [k for k, v in layers.items() if not v.count_nonzero()]
    assert not empty, f"the pruned generator has layers of zeros: {empty}"


WIDER_16 = ("--model.generator.init_args.width", "16", "--model.generator.init_args.image_size", "16",
            "--model.discriminator.init_args.image_size", "16", "--data.init_args.image_size", "16")
CASES += [
    Case("prune-global-unstructured-keeps-every-layer", CATEGORY, "train",
         lambda ws: tiny(ws, *QUICK, *WIDER_16, "--callbacks", "prune", "--prune.ranking", "global", "--prune.granularity", "unstructured",
                         "--prune.generator_amount", "0.9", "--prune.start_epoch", "0"),
         r"global unstructured pruning would leave generator\.blocks\.0\.weight with fewer than 2% of its weights.*keeps its best 2%", rc=0,
         check=every_generator_layer_kept),
]


def _yaml(text: str):
    def prepare(ws) -> list[str]:
        config = ws.path("options.yaml")
        config.write_text(text)
        return tiny(ws, "--config", str(config))
    return prepare


NOT_ALLOWED = r"error: {flag} {value} is not allowed: expected {what}\n"
CASES += [
    Case("batch-size-not-an-integer", CATEGORY, "train", lambda ws: tiny(ws, "--data.batch_size", "1.5"),
         NOT_ALLOWED.format(flag="--data\\.batch_size", value="1\\.5", what="an integer")),
    Case("max-epochs-not-an-integer", CATEGORY, "train", lambda ws: tiny(ws, "--trainer.max_epochs", "2.5"),
         NOT_ALLOWED.format(flag="--trainer\\.max_epochs", value="2\\.5", what="an integer or null")),
    Case("distill-student-plain-string", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "distill", "--distill.student", "foo"),
         NOT_ALLOWED.format(flag="--distill\\.student", value="foo", what=r"a mapping such as \{class_path: \.\.\., init_args: \{\.\.\.\}\} or null")),
    Case("prune-amount-nan", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prune", "--prune.generator_amount", "nan"),
         NOT_ALLOWED.format(flag="--prune\\.generator_amount", value="nan", what="a finite number")),
    Case("vae-beta-inf", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "vae", "--vae.beta", "inf"),
         NOT_ALLOWED.format(flag="--vae\\.beta", value="inf", what="a finite number")),
    Case("data-train-fraction-nan", CATEGORY, "train", lambda ws: tiny(ws, "--data.train_fraction", "nan"),
         NOT_ALLOWED.format(flag="--data\\.train_fraction", value="nan", what="a finite number")),
    Case("learning-rate-overflows-to-inf", CATEGORY, "train", lambda ws: tiny(ws, "--model.lr_g", "1e400"),
         NOT_ALLOWED.format(flag="--model\\.lr_g", value="inf", what="a finite number")),
    Case("yaml-inf-extent", CATEGORY, "train", _yaml("samples:\n  extent: .inf\n"),
         NOT_ALLOWED.format(flag="--samples\\.extent", value="inf", what="a finite number")),
    Case("negative-extent", CATEGORY, "train", lambda ws: tiny(ws, "--samples.extent=-1"), r"error: --samples\.extent must be a number > 0.*got -1"),
    Case("domain-epochs-zero", CATEGORY, "train", lambda ws: tiny(ws, "--metrics.domain_epochs", "0"), r"error: --metrics\.domain_epochs must be an integer >= 1, got 0"),
    Case("negative-exponent-read-as-a-flag", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prune", "--prune.generator_amount", "-5e-1"),
         r"error: --prune\.generator_amount needs a value; write a negative number as --prune\.generator_amount=-1e-3\n"),
    Case("num-workers-negative", CATEGORY, "train", lambda ws: tiny(ws, "--data.num_workers=-1"), r"error: --data\.num_workers must be an integer >= 0"),
    Case("prune-start-epoch-negative", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prune", "--prune.start_epoch=-1"),
         r"error: --prune\.start_epoch must be an epoch >= 0, got -1"),
]
