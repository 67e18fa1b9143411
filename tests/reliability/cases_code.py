"""Battery: no code runs from a file we read. Each crafted file names ``subprocess.run`` with
arguments that would create ``PWNED`` in the workspace; the check asserts it was never created."""

from __future__ import annotations

import torch

from tests.reliability.battery import Case, Workspace

CATEGORY = "code from files"
REFUSED = r"error: .*names the class 'subprocess\.run', which is not on the allow-list.*--allow_class subprocess\.run"


def payload(ws: Workspace) -> dict:
    return {"class_path": "subprocess.run", "init_args": {"args": ["touch", str(ws.path("PWNED"))]}}


def no_code_ran(ws: Workspace) -> None:
    assert not ws.path("PWNED").exists(), "the crafted class path ran"


def crafted_checkpoint(ws: Workspace, network: str = "generator", bare: bool = False) -> str:
    """``bare``: the network as a plain class-path string, a form jsonargparse also accepts."""
    checkpoint = torch.load(ws.ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"][network] = "subprocess.run" if bare else payload(ws)
    torch.save(checkpoint, ws.ckpt)
    return str(ws.ckpt)


def crafted_export(ws: Workspace) -> str:
    from gan_lightning.deploy.export_file import export_generator
    from gan_lightning.core.module import GANModule

    out = ws.path("g.pt")
    export_generator(GANModule.load_from_checkpoint(ws.ckpt, map_location="cpu"), out)
    record = torch.load(out, weights_only=True)
    record["generator"] = payload(ws)
    torch.save(record, out)
    return str(out)


def crafted_teacher(ws: Workspace) -> str:
    teacher = ws.path("teacher.ckpt")
    ws.ckpt.rename(teacher)
    checkpoint = torch.load(teacher, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["generator"] = payload(ws)
    torch.save(checkpoint, teacher)
    return str(teacher)


def tiny(ws: Workspace, *extra: str) -> list[str]:
    from tests.reliability.cases_cli import tiny as tiny_args

    return tiny_args(ws, *extra)


CASES = [
    Case("code-ckpt-export", CATEGORY, "export", lambda ws: ["--ckpt_path", crafted_checkpoint(ws), "--out", str(ws.path("g.pt"))], REFUSED, check=no_code_ran),
    Case("code-ckpt-export-onnx-discriminator", CATEGORY, "export",
         lambda ws: ["--ckpt_path", crafted_checkpoint(ws, "discriminator"), "--out", str(ws.path("g.onnx")), "--format", "onnx"], REFUSED, check=no_code_ran),
    Case("code-ckpt-bare-string-generate", CATEGORY, "generate",
         lambda ws: ["--source", crafted_checkpoint(ws, bare=True), "--out", str(ws.path("samples"))], REFUSED, check=no_code_ran),
    Case("code-ckpt-evaluate", CATEGORY, "evaluate", lambda ws: ["--ckpt_path", crafted_checkpoint(ws), "--features", "none", "--seeds", "0"], REFUSED, check=no_code_ran),
    Case("code-ckpt-generate", CATEGORY, "generate", lambda ws: ["--source", crafted_checkpoint(ws), "--out", str(ws.path("samples"))], REFUSED, check=no_code_ran),
    Case("code-export-generate", CATEGORY, "generate", lambda ws: ["--source", crafted_export(ws), "--out", str(ws.path("samples"))], REFUSED, check=no_code_ran),
    Case("code-distill-teacher", CATEGORY, "train", lambda ws: tiny(ws, "--callbacks", "distill", "--distill.teacher_ckpt", crafted_teacher(ws)), REFUSED, check=no_code_ran, slow=True),
]
