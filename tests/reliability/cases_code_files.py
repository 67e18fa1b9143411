"""Battery: no code runs from the files the commands hand to libraries. A pickle where the
InceptionV3 weights go (torch-fidelity and torch's hub read it with weights_only=False), a class
path in a run's config.yaml (jsonargparse imports it before checking it), a TorchScript file whose
inner pickle was swapped or that the export command did not write. Each payload would create
``PWNED`` in the workspace (or print the Zen of Python); the checks assert it never did."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import zipfile
from typing import Callable

import torch
import yaml
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from tests.reliability.battery import Case, Workspace
from tests.reliability.cases_code import tiny

CATEGORY = "code from files"
INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[-1]  # where torch's hub caches torch-fidelity's download
# the whole output may not hold the Zen of Python: ``import this`` prints it
NO_ZEN = r"^(?!.*Beautiful is better than ugly)"
DATA_REFUSED = NO_ZEN + r".*error: the data section of .*config\.yaml names the class '{}', which is not on the allow-list.*--allow_class"
CONFIG_REFUSED = NO_ZEN + r".*error: --config .*{} names the class '{}', from a module that is not the project's .* so it was not imported: if you trust"
NOT_PLAIN = r"is not a plain weights file .*torch-fidelity would run any code a pickle in it holds, so it was not read"


def write(ws: Workspace, name: str, text: str) -> str:
    ws.path(name).write_text(text)
    return str(ws.path(name))


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return subprocess.run, (["touch", self.marker],)


def evil_pickle(ws: Workspace, name: str = "weights.pth") -> str:
    path = ws.path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Payload(str(ws.path("PWNED")))))
    return str(path)


def set_config(ws: Workspace, section: str, value) -> None:
    """The run's config.yaml with ``section`` replaced (a dict value is merged into it)."""
    config = ws.ckpt.parent.parent / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data[section] = {**data[section], **value} if isinstance(value, dict) and section == "metrics" else value
    config.write_text(yaml.safe_dump(data))


def set_data(ws: Workspace, value) -> None:
    set_config(ws, "data", value)


def exported_ts(ws: Workspace) -> str:
    from gan_lightning.commands.export import export_checkpoint

    out = ws.path("g.ts")
    export_checkpoint(ws.ckpt, out, "torchscript")
    return str(out)


def swapped_ts(ws: Workspace) -> str:
    """The project's export with its inner ``data.pkl`` replaced by a pickle of code."""
    path = exported_ts(ws)
    original = ws.path("g.ts").read_bytes()
    with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            evil = info.filename.endswith("/data.pkl")
            dst.writestr(info, pickle.dumps(_Payload(str(ws.path("PWNED"))), protocol=2) if evil else src.read(info))
    return path


def resaved_ts(ws: Workspace, metadata: dict | None) -> str:
    """The project's export saved again by torch with ``metadata`` (None: none at all), as an
    export written before the hash existed, or someone else's file, would be."""
    path = exported_ts(ws)
    module = torch.jit.load(path)
    extra = {} if metadata is None else {"gan_lightning": json.dumps(metadata)}
    torch.jit.save(module, path, _extra_files=extra)
    return path


def older_ts(ws: Workspace) -> str:
    return resaved_ts(ws, {"z_dim": 8})


def foreign_ts(ws: Workspace) -> str:
    return resaved_ts(ws, None)


def no_code_ran(ws: Workspace) -> None:
    assert not ws.path("PWNED").exists(), "the payload ran (it created PWNED)"


def no_images(ws: Workspace) -> None:
    no_code_ran(ws)
    assert not list(ws.dir.rglob("*.png")), "images were written from a file that was refused"


def images_written(ws: Workspace) -> None:
    assert len(list(ws.path("samples").glob("*.png"))) == 4, "the trusted file wrote no images"


def generate(source) -> Callable[[Workspace], list[str]]:
    return lambda ws: ["--source", source(ws), "--out", str(ws.path("samples")), "--num_samples", "4", "--device", "cpu"]


def synthesize(prepare=None, source=None) -> Callable[[Workspace], list[str]]:
    def args(ws: Workspace) -> list[str]:
        if prepare is not None:
            prepare(ws)
        return ["--source", source(ws) if source else str(ws.ckpt), "--out", str(ws.path("synthetic")), "--num_samples", "4", "--labels", "none"]

    return args


def evaluate(prepare, *extra: str) -> Callable[[Workspace], list[str]]:
    def args(ws: Workspace) -> list[str]:
        return ["--ckpt_path", str(ws.ckpt), "--seeds", "0", *prepare(ws), *extra]

    return args


def inception_in_config(ws: Workspace) -> list[str]:
    set_config(ws, "metrics", {"features": "inception", "inception_weights": evil_pickle(ws)})
    return []


def cached_inception(ws: Workspace) -> list[str]:
    evil_pickle(ws, f"torch_home/hub/checkpoints/{INCEPTION_FILE}")  # TORCH_HOME=torch_home, relative to the workspace
    return ["--features", "inception"]


CASES = [
    Case("code-inception-flag-evaluate", CATEGORY, "evaluate",
         evaluate(lambda ws: ["--features", "inception", "--inception_weights", evil_pickle(ws)]),
         r"error: --inception_weights .*weights\.pth " + NOT_PLAIN, check=no_code_ran),
    Case("code-inception-config-evaluate", CATEGORY, "evaluate", evaluate(inception_in_config),
         r"error: metrics\.inception_weights in .*config\.yaml: .*weights\.pth " + NOT_PLAIN, check=no_code_ran),
    Case("code-inception-cached-evaluate", CATEGORY, "evaluate", evaluate(cached_inception),
         r"error: the cached InceptionV3 weights file .*" + INCEPTION_FILE.replace(".", r"\.") + " " + NOT_PLAIN,
         env={"TORCH_HOME": "torch_home"}, check=no_code_ran),
    Case("code-inception-not-state-dict-evaluate", CATEGORY, "evaluate",
         evaluate(lambda ws: (torch.save([1, 2], ws.path("list.pth")), ["--features", "inception", "--inception_weights", str(ws.path("list.pth"))])[1]),
         r"error: --inception_weights .*list\.pth is not a state dict of named tensors"),
    Case("code-inception-flag-train", CATEGORY, "train",
         lambda ws: tiny(ws, "--metrics.features", "inception", "--metrics.inception_weights", evil_pickle(ws), "--checkpoint.monitor", "null"),
         r"error: --metrics\.inception_weights .*weights\.pth " + NOT_PLAIN, check=no_code_ran),
    Case("code-config-data-this-evaluate", CATEGORY, "evaluate",
         evaluate(lambda ws: (set_data(ws, {"class_path": "this.Foo", "init_args": {"image_size": 8}}), ["--features", "none"])[1]),
         DATA_REFUSED.format(r"this\.Foo")),
    Case("code-config-data-this-synthesize", CATEGORY, "synthesize",
         synthesize(lambda ws: set_data(ws, {"class_path": "this.Foo"})), DATA_REFUSED.format(r"this\.Foo")),
    Case("code-config-data-bare-string-synthesize", CATEGORY, "synthesize",
         synthesize(lambda ws: set_data(ws, "this.Foo")), DATA_REFUSED.format(r"this\.Foo")),
    Case("code-config-data-nested-yaml-evaluate", CATEGORY, "evaluate",  # jsonargparse reads a YAML file named in place of the class
         evaluate(lambda ws: (ws.path("data.yaml").write_text("class_path: this.Foo\n"), set_data(ws, str(ws.path("data.yaml"))), ["--features", "none"])[2]),
         DATA_REFUSED.format(r".*data\.yaml")),
    Case("code-config-generator-this-train", CATEGORY, "train",
         lambda ws: tiny(ws, "--config", write(ws, "g.yaml", "model:\n  generator:\n    class_path: this.Foo\n")),
         CONFIG_REFUSED.format(r"g\.yaml", r"this\.Foo")),
    Case("code-config-data-bare-string-train", CATEGORY, "train", lambda ws: tiny(ws, "--config", write(ws, "d.yaml", "data: this.Foo\n")),
         CONFIG_REFUSED.format(r"d\.yaml", r"this\.Foo")),
    Case("code-config-nested-yaml-train", CATEGORY, "train",  # jsonargparse reads a YAML file named in place of the class
         lambda ws: tiny(ws, "--config", write(ws, "run.yaml", f"data: {write(ws, 'data.yaml', 'class_path: this.Foo')}\n")),
         CONFIG_REFUSED.format(r"run\.yaml \(through .*data\.yaml\)", r"this\.Foo")),
    Case("code-config-allowed-class-train", CATEGORY, "train",
         lambda ws: tiny(ws, "--config", write(ws, "g.yaml", "model:\n  generator:\n    class_path: this.Foo\n")),
         r"error: --model\.generator: Problem with given class_path 'this\.Foo'", env={"GAN_LIGHTNING_ALLOW_CLASSES": "this.Foo"}),
    Case("code-ts-swapped-pickle-generate", CATEGORY, "generate", generate(swapped_ts),
         r"error: .*g\.ts was changed after it was exported .* so it was not run: .*--trust_torchscript", check=no_images),
    Case("code-ts-swapped-pickle-trusted-generate", CATEGORY, "generate",
         lambda ws: [*generate(swapped_ts)(ws), "--trust_torchscript"],
         r"error: .*g\.ts is not a TorchScript file torch can load", check=no_images),
    Case("code-ts-swapped-pickle-synthesize", CATEGORY, "synthesize", synthesize(source=swapped_ts),
         r"error: .*g\.ts was changed after it was exported .* so it was not run", check=no_images),
    Case("code-ts-foreign-generate", CATEGORY, "generate", generate(foreign_ts),
         r"error: .*g\.ts is a TorchScript file without gan-lightning metadata, so it was not run", check=no_images),
    Case("code-ts-foreign-trusted-generate", CATEGORY, "generate", lambda ws: [*generate(foreign_ts)(ws), "--trust_torchscript"],
         r"error: .*g\.ts is a TorchScript file without gan-lightning metadata, so it was not run", check=no_images),
    Case("code-ts-unhashed-generate", CATEGORY, "generate", generate(older_ts),
         r"error: .*g\.ts is a TorchScript file \(a program\) without the hash .* pass --trust_torchscript if you trust where it came from",
         check=no_images),
    Case("code-ts-unhashed-trusted-generate", CATEGORY, "generate", lambda ws: [*generate(older_ts)(ws), "--trust_torchscript"],
         r"wrote 4 PNG files", rc=0, check=images_written),
]
