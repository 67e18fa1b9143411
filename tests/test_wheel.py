"""The wheel: a plain ``pip install`` carries every preset and the W&B sweep, and its console
script trains from a folder that has no configs/ of its own.

The wheel is built offline (``pip wheel --no-build-isolation --no-index``) from a copy of what a
clone plus the working changes hold, so the checkout gets no build/ folder and untracked junk
never reaches the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, TINY


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _copy_source(dest: Path) -> None:
    """Tracked files and the untracked ones git does not ignore, symlinks kept as symlinks
    (gan_lightning/configs is one)."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        source, target = REPO / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        elif source.is_file():  # a file deleted in the working tree is still listed by git
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    _copy_source(root / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--disable-pip-version-check",
          "--wheel-dir", root / "dist", root / "src"], cwd=root)
    (built,) = (root / "dist").glob("gan_lightning-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_holds_every_yaml_under_configs(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in archive.namelist() if name.endswith((".yaml", ".yml"))}
    sources = sorted((REPO / "configs").rglob("*.y*ml"))
    assert {p.relative_to(REPO / "configs").as_posix() for p in sources} >= {"default.yaml", "sweeps/prune_distill.yaml"}
    # inside the package only: a top-level configs/ would land in every user's site-packages
    assert shipped == {f"gan_lightning/configs/{p.relative_to(REPO / 'configs').as_posix()}": p.read_bytes() for p in sources}


@pytest.mark.slow
def test_the_installed_console_script_trains_from_an_unrelated_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    # torch & co. come from the system site-packages; pip too, run by the venv's python, so that
    # it installs into the venv (--ignore-installed: the checkout's editable install is visible)
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--disable-pip-version-check", wheel], env=env)

    elsewhere = tmp_path / "elsewhere"  # no configs/, no checkout on sys.path
    elsewhere.mkdir()
    shutil.copy(TINY, elsewhere / "tiny.yaml")
    where = "import callbacks, datamodules, gan_lightning; from gan_lightning.commands.presets import preset_dir;" \
            " print(gan_lightning.__file__, callbacks.__file__, datamodules.__file__, preset_dir(), sep='\\n')"
    paths = _run([python, "-I", "-c", where], cwd=elsewhere, env=env).stdout.split()
    assert len(paths) == 4 and all(Path(p).resolve().is_relative_to(venv.resolve()) for p in paths), paths

    run = elsewhere / "run"
    _run([bin_dir / "gan-lightning-train", "--config", "configs/wgan_gp.yaml", "--config", "tiny.yaml",
          "--trainer.default_root_dir", run, "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", run,
          "--trainer.limit_train_batches", "2", "--metrics.every_n_epochs", "0", "--checkpoint.monitor", "val/swd"],
         cwd=elsewhere, env=env)
    assert list(run.rglob("last.ckpt"))
    (config,) = run.rglob("config.yaml")
    saved = yaml.safe_load(config.read_text())
    # the shipped default (its seed), the shipped wgan_gp preset on top, then the user's own file
    assert (saved["seed_everything"], saved["model"]["loss"], saved["model"]["lr_g"], saved["model"]["generator"]["init_args"]["width"]) == (0, "wasserstein", 0.0001, 4)
