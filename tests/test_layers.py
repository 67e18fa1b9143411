"""The house's rooms and which way imports may point: the one copy of these rules (docs/developer.md explains them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

LEAVES = ("gan_lightning.errors", "gan_lightning.dataset_tensors", "gan_lightning.networks", "gan_lightning.class_paths", "gan_lightning.cache", "gan_lightning.specs", "gan_lightning.logs", "gan_lightning.files")
OURS = ("gan_lightning", "callbacks", "datamodules", "train", "tests", "benchmarks")
# room -> the project modules it may import (by prefix), and third-party packages it may not
ROOMS = {
    "gan_lightning.errors": ((), ()),
    "gan_lightning.dataset_tensors": ((), ()),
    "gan_lightning.cache": ((), ("torch", "pytorch_lightning", "lightning")),
    "gan_lightning.logs": ((), ("torch", "pytorch_lightning", "wandb", "jsonargparse")),
    "gan_lightning.files": (("gan_lightning.errors",), ("torch", "pytorch_lightning", "lightning", "wandb", "jsonargparse")),
    "gan_lightning.specs": (("gan_lightning.errors", "gan_lightning.class_paths"), ("pytorch_lightning", "lightning", "wandb", "jsonargparse")),
    "gan_lightning.networks": (("gan_lightning.errors",), ()),
    "gan_lightning.class_paths": (("gan_lightning.errors",), ("torch", "pytorch_lightning", "lightning")),
    "gan_lightning.compress": (("gan_lightning.compress", *LEAVES), ("pytorch_lightning", "lightning", "wandb", "torch_fidelity", "jsonargparse")),
    "gan_lightning.quality": (("gan_lightning.quality", "gan_lightning.compress", *LEAVES), ("pytorch_lightning", "lightning", "wandb", "jsonargparse")),
    "gan_lightning.distill": (("gan_lightning.distill", "gan_lightning.compress", *LEAVES), ("pytorch_lightning", "lightning", "wandb", "jsonargparse")),
    "gan_lightning.synth": (("gan_lightning.synth", *LEAVES), ("pytorch_lightning", "lightning", "wandb", "jsonargparse", "torch_fidelity")),
    "gan_lightning.deploy": (("gan_lightning.deploy", "gan_lightning.compress", *LEAVES), ("pytorch_lightning", "lightning", "wandb", "jsonargparse", "torch_fidelity")),
    "gan_lightning.core": (("gan_lightning.core", "gan_lightning.compress", "gan_lightning.quality", *LEAVES), ()),
    "callbacks": (("callbacks", "gan_lightning.core", "gan_lightning.compress", "gan_lightning.quality", "gan_lightning.distill", "gan_lightning.synth", *LEAVES), ()),
    "gan_lightning.commands": (OURS, ()),
    "datamodules": (("datamodules", *LEAVES), ()),
}
PLUG_INS = ("callbacks.clip", "callbacks.diffaug", "callbacks.distill", "callbacks.grad_norm", "callbacks.lowrank", "callbacks.prune", "callbacks.quantize", "callbacks.vae")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)  # "from callbacks import prune"
    return names


def room_of(name: str) -> "str | None":
    return next((room for room in sorted(ROOMS, key=len, reverse=True) if name == room or name.startswith(room + ".")), None)


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


SOURCES = sorted(p for pkg in ("gan_lightning", "callbacks", "datamodules") for p in (REPO / pkg).rglob("*.py"))


def test_every_module_sits_in_a_room():
    homeless = [module_name(p) for p in SOURCES if module_name(p) != "gan_lightning" and room_of(module_name(p)) is None]
    assert not homeless


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down_only(path):
    name = module_name(path)
    if name == "gan_lightning":  # the lazy front door: imports only under TYPE_CHECKING
        tree = ast.parse(path.read_text())
        assert not [n for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(OURS)]
        assert not [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names if a.name.startswith(OURS)]
        return
    allowed, forbidden = ROOMS[room_of(name)]
    # "from x.y import Z" yields x.y and x.y.Z: both must lie within an allowed prefix
    wrong = sorted(m for m in imported(path) if m.split(".")[0] in OURS and not within(m, allowed))
    assert not wrong, f"{name} may not import {wrong}"
    assert not [m for m in imported(path) if m.split(".")[0] in forbidden], f"{name} imports one of {forbidden}"


@pytest.mark.parametrize("path", [p for p in SOURCES if module_name(p).startswith("callbacks.") and module_name(p) != "callbacks"], ids=lambda p: module_name(p))
def test_no_callback_imports_a_plug_in(path):
    assert not [m for m in imported(path) if within(m, PLUG_INS) and module_name(path) not in m]


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


HEAVY = ("pytorch_lightning", "lightning", "wandb", "callbacks", "datamodules", "jsonargparse")
LOADED = "sorted({m.split('.')[0] for m in sys.modules} & set(%r))" % (HEAVY,)


@pytest.mark.parametrize("package", ["gan_lightning.compress", "gan_lightning.quality", "gan_lightning.synth"])
@pytest.mark.slow
def test_importing_the_pure_torch_packages_does_not_import_lightning_or_wandb(package):
    modules = [module_name(p) for p in SOURCES if module_name(p).startswith(package)]
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + f"print({LOADED})"
    assert run_python(code).strip() == "[]"


@pytest.mark.slow
def test_loading_an_exported_generator_imports_neither_lightning_nor_wandb():
    code = (
        "import sys, torch, gan_lightning\n"
        "g = gan_lightning.load_exported('tests/fixtures/pruned_factorized_v0_export.pt')\n"
        "assert g(torch.zeros(3, g.z_dim)).shape == (3, 1, 8, 8)\n"
        f"print({LOADED})"
    )
    assert run_python(code).strip() == "[]"


@pytest.mark.slow
def test_the_front_door_resolves_its_names_on_first_use_and_refuses_others():
    out = run_python(
        "import sys, gan_lightning\n"
        "before = 'gan_lightning.core.module' in sys.modules\n"
        "cls = gan_lightning.GANModule\n"
        "print(before, cls.__module__, 'GANModule' in dir(gan_lightning))\n"
        "try:\n    gan_lightning.nope\nexcept AttributeError as e:\n    print(e)\n"
    )
    assert out.splitlines() == ["False gan_lightning.core.module True", "module 'gan_lightning' has no attribute 'nope'"]


@pytest.mark.slow
def test_the_datamodules_import_only_the_leaves_of_gan_lightning():
    code = "import sys, datamodules\nprint(' '.join(sorted(m for m in sys.modules if m.startswith('gan_lightning'))))"
    assert set(run_python(code).split()) <= {"gan_lightning", *LEAVES}


def test_every_module_of_the_package_and_the_callbacks_stays_short():
    """A file over 350 lines holds more than one thing (the house's rule): split it."""
    long = {str(p.relative_to(REPO)): n for p in SOURCES if p.parts[len(REPO.parts)] in ("gan_lightning", "callbacks") and (n := len(p.read_text().splitlines())) > 350}
    assert long == {}
