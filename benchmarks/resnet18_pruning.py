"""Structured pruning of torchvision's ResNet-18 classifier on the digits: ours against Torch-Pruning.

The half of issue 22's benchmark that is not a GAN: an unmodified ``torchvision.models.resnet18``
(10 classes) in an ordinary LightningModule, the digits resized to ``--image_size`` (grey repeated
to three channels), trained with a plain Lightning Trainer for ``--dense_epochs``. At each MAC
reduction of ``--reductions``, two decisions of *which* channels go, each followed by the *same*
``--after_epochs`` of fine-tuning (a fresh Adam, as a cut's new shapes require), with and without
distillation from the dense network:

- ``ours``: the product's path for any LightningModule, ``Prune(networks={"model": amount},
  start_epoch=0)`` (+ ``Distill(network="model", output_loss="mse")``) in the fine-tuning Trainer,
  ``amount`` found by bisection so the cut network has the target MACs; ``ours:<criterion>`` rows
  add ``criterion=<criterion>``;
- ``tp``: Torch-Pruning (``MetaPruner``, ``GroupMagnitudeImportance(p=2)``, ``fc`` ignored) at the
  ratio that gives ours' MACs, executed by the project's surgery before the fine-tuning Trainer;
  its distillation is the same term Distill adds (MSE between the student's logits and the frozen
  dense network's, weight 1), added by the module, because Distill takes its teacher from a
  compression event of the run and Torch-Pruning's cut is not one.

Reported: MACs and params (``network_cost``), eager latency at batch ``--latency_batch`` (dense and
every row timed interleaved in this process, the median of ``--latency_rounds``), and validation
accuracy (the datamodule's seeded 10% split, 180 digits) per training seed, with mean and std over
seeds. Target (printed, never tuned for): at equal MACs ours is at least as accurate as
Torch-Pruning. A difference inside the std over seeds is not a result.

    pip install torch-pruning   # for this benchmark only: not a project dependency
    python benchmarks/resnet18_pruning.py --seeds 0,1,2 --out benchmarks/measured/resnet18_pruning_digits.json
    # smoke: python benchmarks/resnet18_pruning.py --seeds 0 --dense_epochs 1 --after_epochs 1 --reductions 4 --out /tmp/r18.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision

REPO = Path(__file__).resolve().parent.parent
WORK = tempfile.mkdtemp(prefix="resnet18_pruning_")  # the prune callback's layer tables; nothing else is written
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # run as a script, the project's packages come from the checkout
from equal_macs import bisect, macs, ours_macs_at, tp_macs_at  # noqa: E402

from callbacks.distill import Distill  # noqa: E402
from callbacks.prune import Prune  # noqa: E402
from datamodules.digits import DigitsDataModule  # noqa: E402
from gan_lightning.compress.surgery import cut_groups  # noqa: E402


class Classifier(pl.LightningModule):
    """torchvision's resnet18 as it ships; the grey digits are repeated to its three channels."""

    def __init__(self, image_size: int, lr: float) -> None:
        super().__init__()
        self.model = torchvision.models.resnet18(num_classes=10)
        self.example_input_array = torch.zeros(2, 3, image_size, image_size)
        self.lr = lr
        self.kd_teacher: list[torch.nn.Module] = []  # Torch-Pruning rows' distillation (a list: not a submodule)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if self.kd_teacher:
            with torch.no_grad():
                target = self.kd_teacher[0](x.expand(-1, 3, -1, -1))
            loss = loss + F.mse_loss(logits, target)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def fit(module: Classifier, data: DigitsDataModule, epochs: int, callbacks: list) -> Classifier:
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False, default_root_dir=WORK,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module.train(), data)  # Lightning keeps the modes modules start in: an evaluated copy would train its BatchNorms frozen
    return module


@torch.no_grad()
def accuracy(module: Classifier, data: DigitsDataModule) -> float:
    module.eval()
    right = total = 0
    for x, y in data.val_dataloader():
        right += int((module(x).argmax(1) == y).sum())
        total += len(y)
    return right / total


@torch.no_grad()
def latencies(models: dict[str, torch.nn.Module], batch: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median seconds per forward of each model, the models interleaved within every round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()(batch)  # warm-up
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model(batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def fc(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [model.fc]  # the classes stay


def run_seed(seed: int, args) -> dict:
    pl.seed_everything(seed, workers=True)
    data = DigitsDataModule(image_size=args.image_size, batch_size=64, seed=seed)
    data.setup("fit")
    dense = fit(Classifier(args.image_size, args.lr), data, args.dense_epochs, [])
    example = dense.example_input_array
    dense_macs = macs(dense.model, example)
    out = {"dense": {"accuracy": accuracy(dense, data), "macs": dense_macs, "params": sum(p.numel() for p in dense.model.parameters())}, "rows": []}
    print(f"seed {seed}: dense accuracy {out['dense']['accuracy']:.4f}, {dense_macs:,} MACs", flush=True)
    networks = {"dense": dense.model}
    for r in [float(x) for x in args.reductions.split(",") if x]:
        amount = bisect(lambda a: ours_macs_at(dense.model, example, a), dense_macs / r)
        ratio = bisect(lambda a: tp_macs_at(dense.model, example, a, fc)[0], ours_macs_at(dense.model, example, amount))
        for kd in [k == "on" for k in args.distill.split(",") if k]:
            for tool in [t for t in args.tools.split(",") if t]:
                pl.seed_everything(seed + 1000, workers=True)  # every row fine-tunes on the same batches
                module = copy.deepcopy(dense)
                if tool.startswith("ours"):
                    criterion = tool.partition(":")[2] or "l1"
                    callbacks = [Prune(networks={"model": amount}, granularity="structured", criterion=criterion, start_epoch=0, metric="none", latency_batch=2)]
                    callbacks += [Distill(network="model", output_loss="mse")] if kd else []
                else:
                    cut_groups(module.model, example, tp_macs_at(dense.model, example, ratio, fc)[1])
                    module.kd_teacher = [copy.deepcopy(dense.model).eval().requires_grad_(False)] if kd else []
                    callbacks = []
                fit(module, data, args.after_epochs, callbacks)
                name = f"{tool.replace(':', '-')}-x{r:g}{'+kd' if kd else ''}"
                row = {"name": name, "tool": tool, "reduction": r, "distill": kd, "amount": ratio if tool == "tp" else amount,
                       "accuracy": accuracy(module, data), "macs": macs(module.model, example), "params": sum(p.numel() for p in module.model.parameters())}
                row["mac_reduction"] = round(dense_macs / row["macs"], 2)
                networks[name] = module.model
                out["rows"].append(row)
                print(f"  {name:16s} {row['mac_reduction']:>5}x MACs  accuracy {row['accuracy']:.4f}", flush=True)
    latency = latencies(networks, torch.randn(args.latency_batch, 3, args.image_size, args.image_size), args.latency_rounds)
    out["dense"]["latency_s"] = latency["dense"]
    for row in out["rows"]:
        row["latency_s"], row["speedup"] = latency[row["name"]], round(latency["dense"] / latency[row["name"]], 2)
    return out


def summary(seeds: dict[str, dict]) -> list[dict]:
    """Each row's mean and std over the training seeds, and the target against Torch-Pruning's row."""
    by_name: dict[str, list[dict]] = {}
    for s in seeds.values():
        for row in s["rows"]:
            by_name.setdefault(row["name"], []).append(row)
    rows = []
    for name, runs in by_name.items():
        acc = [r["accuracy"] for r in runs]
        rows.append({**{k: runs[0][k] for k in ("name", "tool", "reduction", "distill", "mac_reduction", "params")},
                     "accuracy": statistics.mean(acc), "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                     "speedup": statistics.mean(r["speedup"] for r in runs), "seeds": len(runs)})
    tp = {(r["reduction"], r["distill"]): r for r in rows if r["tool"] == "tp"}
    for row in rows:
        other = tp.get((row["reduction"], row["distill"]))
        if row["tool"].startswith("ours") and other is not None:
            row["target"] = {"goal": f"accuracy >= Torch-Pruning's {other['accuracy']:.4f}", "pass": row["accuracy"] >= other["accuracy"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--dense_epochs", type=int, default=6)
    parser.add_argument("--after_epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reductions", default="2,4,8")
    parser.add_argument("--distill", default="off,on")
    parser.add_argument("--tools", default="ours,ours:group,tp", help="ours (the default criterion), ours:<criterion>, tp")
    parser.add_argument("--latency_batch", type=int, default=64)
    parser.add_argument("--latency_rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "resnet18_pruning.json")
    args = parser.parse_args()
    result = {"command": shlex.join(["python", "benchmarks/resnet18_pruning.py", *sys.argv[1:]]), "platform": platform.platform(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "seeds": {}}
    wall = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        result["seeds"][str(seed)] = run_seed(seed, args)
        result["summary"] = summary(result["seeds"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    result["wall_seconds"] = round(time.perf_counter() - wall, 1)
    args.out.write_text(json.dumps(result, indent=2))
    dense = [s["dense"]["accuracy"] for s in result["seeds"].values()]
    print(f"\ndense: accuracy {statistics.mean(dense):.4f} ± {statistics.stdev(dense) if len(dense) > 1 else 0:.4f}"
          f" over {len(dense)} seeds, {next(iter(result['seeds'].values()))['dense']['macs']:,} MACs, 180 validation digits")
    print(f"{'row':18s} {'x MACs':>7s} {'params':>10s} {'accuracy':>17s} {'speedup':>8s}  target")
    for r in result["summary"]:
        target = r.get("target")
        print(f"{r['name']:18s} {r['mac_reduction']:>7} {r['params']:>10,} {r['accuracy']:>8.4f} ± {r['accuracy_std']:.4f} {r['speedup']:>7.2f}x"
              f"  {'' if target is None else ('PASS ' if target['pass'] else 'MISS ') + target['goal']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
