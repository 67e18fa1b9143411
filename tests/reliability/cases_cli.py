"""Battery: the command line and config files."""

from tests.helpers import TINY
from tests.reliability.battery import Case

CATEGORY = "command line"


def tiny(ws, *extra):
    return ["--config", TINY, "--trainer.default_root_dir", str(ws.dir / "runs"), "--trainer.logger", "CSVLogger",
            "--trainer.logger.save_dir", str(ws.dir / "runs"), *extra]


CASES = [
    Case("unknown-callback", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prun"), r"error: .*prun.*(prune|available)"),
    Case("amount-above-one", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "prune", "--prune.generator_amount", "1.5"), r"error: .*--prune.generator_amount.*1\.5"),
]


def rescue_is_finite(ws) -> None:
    import torch

    rescues = list((ws.dir / "runs").rglob("on_exception.ckpt"))
    assert rescues, "no rescue checkpoint was written"
    state = torch.load(rescues[0], map_location="cpu", weights_only=True)
    tensors = [v for v in state["state_dict"].values() if v.is_floating_point()]
    tensors += [v for o in state["optimizer_states"] for s in o["state"].values() for v in s.values() if torch.is_tensor(v) and v.is_floating_point()]
    assert all(torch.isfinite(t).all() for t in tensors), "the rescue checkpoint holds non-finite values"


CASES += [
    Case("diverging-learning-rate", "divergence", "train",
         lambda ws: tiny(ws, "--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0", "--model.lr_g", "1e7", "--model.lr_d", "1e7"),
         r"error: .* became non-finite at epoch 0, batch \d+ \(step \d+\); the last finite state .* is saved to .*on_exception\.ckpt: lower --model\.lr_g",
         check=rescue_is_finite, slow=True),
    Case("resume-other-architecture", CATEGORY, "train",
         lambda ws: tiny(ws, "--model.generator.init_args.width", "8", "--ckpt_path", str(ws.ckpt)),
         r"error: the checkpoint was saved from a different architecture than the configured model"),
    Case("evaluate-seeds-not-integers", CATEGORY, "evaluate", lambda ws: ["--ckpt_path", str(ws.ckpt), "--seeds", "a,b"],
         r"--seeds must be comma-separated integers"),
    Case("export-unknown-format", CATEGORY, "export", lambda ws: ["--ckpt_path", str(ws.ckpt), "--out", str(ws.path("g.x")), "--format", "tflite"],
         r"--format: invalid choice: 'tflite'"),
]
CASES += [
    Case("generate-source-is-a-folder", "folder as file", "generate", lambda ws: ["--source", str(ws.ckpt.parent), "--out", str(ws.path("samples"))],
         r"error: --source .*checkpoints is a folder; give a train\.py checkpoint"),
]
