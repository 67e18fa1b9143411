"""Battery: data folders and files, YAML config files, output folders, and folders given where a
file is wanted (or the other way round)."""

from __future__ import annotations

import pickle
import subprocess

import numpy as np
from PIL import Image

from tests.reliability.battery import Case, Workspace
from tests.reliability.cases_cli import tiny

DATA, YAML, OUTPUT, FOLDER = "data folders", "config files", "output folders", "folder as file"
QUICK = ("--checkpoint.monitor", "null", "--metrics.every_n_epochs", "0")
NO_ERROR = r"^(?!.*error:)"  # searched from the start: no "error:" anywhere in the output
BROKEN_YAML = "trainer:\n  max_epochs: 1\n  limit_train_batches: [3\nmodel:\n  loss: hinge\n"


# --- builders ----------------------------------------------------------------------------------


def images(ws: Workspace, damage=None, n: int = 5) -> str:
    """A folder of ``n`` small PNGs; ``damage(path)`` spoils ``bad.png`` among them."""
    folder = ws.path("images")
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (12, 12), (50 * i, 0, 0)).save(folder / f"ok{i}.png")
    if damage is not None:
        Image.new("RGB", (64, 64), (9, 9, 9)).save(folder / "bad.png")
        damage(folder / "bad.png")
    return str(folder)


def truncate(path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])


def every_mode(ws: Workspace) -> str:
    """Images in the modes and bit depths users' folders hold."""
    folder = images(ws, n=2)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    rgb.convert("P").save(f"{folder}/palette.png")
    Image.fromarray(rng.integers(0, 256, (12, 12, 4), dtype=np.uint8), "RGBA").save(f"{folder}/alpha.png")
    rgb.convert("LA").save(f"{folder}/grey_alpha.png")
    Image.fromarray(rng.integers(0, 65536, (12, 12), dtype=np.uint16)).save(f"{folder}/grey16.png")
    rgb.convert("CMYK").save(f"{folder}/print.jpg")
    rgb.convert("1").save(f"{folder}/bilevel.bmp")
    return folder


def image_run(ws: Workspace, root: str, *extra: str) -> list[str]:
    return tiny(ws, "--data", "datamodules.ImageFolderDataModule", "--data.root", root, "--data.image_size", "8",
                "--data.channels", "1", "--data.batch_size", "4", *QUICK, *extra)


def checkpoint_written(ws: Workspace) -> None:
    assert list(ws.path("runs").rglob("last.ckpt")), "the run wrote no last.ckpt"


class Run:
    """Pickles as ``subprocess.run(args)``: what a crafted CIFAR-10 batch would do while it loads."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)

    def __reduce__(self):
        return subprocess.run, (self.args,)


def cifar(ws: Workspace, spoil=None) -> str:
    """A CIFAR-10 folder of small genuine batches; ``spoil(folder)`` then changes one."""
    folder = ws.path("cifar") / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4], b"batch_label": name.encode()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    if spoil is not None:
        spoil(ws, folder)
    return str(folder.parent)


def code_in_batch(ws: Workspace, folder) -> None:
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Run("touch", str(ws.path("PWNED"))), b"labels": [0]}, protocol=2))


def no_code_ran(ws: Workspace) -> None:
    assert not ws.path("PWNED").exists(), "the crafted batch ran its code"


def cifar_run(ws: Workspace, root: str, *extra: str) -> list[str]:
    return tiny(ws, "--data", "datamodules.CIFAR10DataModule", "--data.root", root, "--data.image_size", "8",
                "--model.generator.init_args.channels", "3", "--model.discriminator.init_args.channels", "3", *QUICK, *extra)


def config(ws: Workspace, text: str | bytes, name: str = "preset.yaml") -> str:
    path = ws.path(name)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def a_file(ws: Workspace, name: str = "notes.txt") -> str:
    ws.path(name).write_text("a file where a folder belongs\n")
    return str(ws.path(name))


def run_config(ws: Workspace) -> None:
    """The config.yaml that train.py writes beside checkpoints/, which evaluate reads."""
    (ws.ckpt.parent.parent / "config.yaml").write_text(
        "data:\n  class_path: datamodules.DigitsDataModule\n  init_args: {image_size: 8, batch_size: 16}\n"
    )


def evaluation(ws: Workspace, *extra: str) -> list[str]:
    run_config(ws)
    return ["--ckpt_path", str(ws.ckpt), "--features", "none", "--seeds", "0", *extra]


def folder(ws: Workspace, name: str) -> str:
    ws.path(name).mkdir()
    return str(ws.path(name))


UNREADABLE = r"error: The image file .*images/bad\.png \(under --data\.root\) is unreadable \(.+\); remove or replace it\.$"

CASES = [
    # data folders: bad files are found at the first batch that reads them
    Case("data-image-truncated", DATA, "train", lambda ws: image_run(ws, images(ws, truncate)), UNREADABLE.replace(r"\(.+\)", r"\(image file is truncated\)"), slow=True),
    Case("data-image-html-saved-as-png", DATA, "train", lambda ws: image_run(ws, images(ws, lambda p: p.write_text("<html>404</html>"))), UNREADABLE, slow=True),
    Case("data-image-empty-file", DATA, "train", lambda ws: image_run(ws, images(ws, lambda p: p.write_bytes(b""))), UNREADABLE, slow=True),
    Case("data-image-truncated-in-a-worker", DATA, "train", lambda ws: image_run(ws, images(ws, truncate), "--data.num_workers", "1"),
         r"error: The image file .*images/bad\.png \(under --data\.root\) is unreadable \(image file is truncated\); remove or replace it\.\n", slow=True),
    Case("data-image-every-mode-trains", DATA, "train", lambda ws: image_run(ws, every_mode(ws)), NO_ERROR, rc=0, check=checkpoint_written, slow=True),
    Case("data-image-folder-without-images", DATA, "train", lambda ws: image_run(ws, folder(ws, "images")),
         r"error: The image folder .*images given by --data\.root holds 0 images"),
    Case("data-root-is-a-file", DATA, "train", lambda ws: image_run(ws, a_file(ws, "images.zip")),
         r"error: --data\.root .*images\.zip is a file; give the folder that holds the images\."),
    Case("data-cifar-root-is-a-file", DATA, "train", lambda ws: cifar_run(ws, a_file(ws, "cifar-10-python.tar.gz")),
         r"error: --data\.root .*cifar-10-python\.tar\.gz is a file; give the folder that holds cifar-10-batches-py/\."),
    Case("data-cifar-batch-runs-code", DATA, "train", lambda ws: cifar_run(ws, cifar(ws, code_in_batch)),
         r"error: .*cifar-10-batches-py/data_batch_1 asks to load subprocess\.run, which a CIFAR-10 batch never contains; it is refused",
         check=no_code_ran),
    Case("data-cifar-batch-truncated", DATA, "train",
         lambda ws: cifar_run(ws, cifar(ws, lambda ws, f: (f / "test_batch").write_bytes((f / "test_batch").read_bytes()[:500]))),
         r"error: The CIFAR-10 test files in .*cifar-10-batches-py .*are unreadable \(.*\); delete them"),
    Case("data-cifar-genuine-batches-train", DATA, "train", lambda ws: cifar_run(ws, cifar(ws)), NO_ERROR, rc=0, check=checkpoint_written),
    # YAML config files: the file and the line
    Case("yaml-syntax-error", YAML, "train", lambda ws: tiny(ws, "--config", config(ws, BROKEN_YAML)),
         r"error: --config .*preset\.yaml is not valid YAML: .* at line 4, column 6 \(while parsing a flow sequence that starts at line 3\)"),
    Case("yaml-tab-indent", YAML, "train", lambda ws: tiny(ws, "--config", config(ws, "trainer:\n\tmax_epochs: 3\n")),
         r"error: --config .*preset\.yaml is not valid YAML: .* at line 2, column 1 .*YAML indents with spaces, not tabs"),
    Case("yaml-key-twice", YAML, "train", lambda ws: tiny(ws, "--config", config(ws, "trainer:\n  max_epochs: 1\n  max_epochs: 50\n")),
         r"error: --config .*preset\.yaml sets 'max_epochs' twice in the same section \(lines 2 and 3\)"),
    Case("yaml-empty", YAML, "train", lambda ws: tiny(ws, "--config", config(ws, "")), r"error: --config .*preset\.yaml is empty"),
    Case("yaml-not-text", YAML, "train", lambda ws: tiny(ws, "--config", config(ws, b"\x89PNG\r\n\x1a\n\x00\x00")),
         r"error: --config .*preset\.yaml is not a text file \(byte 0x89 at offset 0 is not UTF-8\)"),
    Case("yaml-evaluate-run-config-broken", YAML, "evaluate", lambda ws: evaluation(ws, "--config", config(ws, BROKEN_YAML)),
         r"error: --config .*preset\.yaml is not valid YAML: .* at line 4, column 6"),
    # a folder where a file is wanted
    Case("folder-as-config", FOLDER, "train", lambda ws: tiny(ws, "--config", folder(ws, "presets")),
         r"error: --config .*presets is a folder; pass a YAML file"),
    Case("folder-as-evaluate-config", FOLDER, "evaluate", lambda ws: evaluation(ws, "--config", folder(ws, "presets")),
         r"error: --config .*presets is a folder; pass a YAML file"),
    # output folders the file system refuses (a read-only folder is in tests/commands/test_config_files.py:
    # chmod does not stop root, who runs these in CI)
    Case("output-folder-under-a-file-train", OUTPUT, "train",
         lambda ws: [*tiny(ws, *QUICK)[:2], "--trainer.default_root_dir", f"{a_file(ws)}/runs", "--trainer.logger", "CSVLogger",
                     "--trainer.logger.save_dir", f"{ws.path('notes.txt')}/runs", *QUICK],
         r"error: .*notes\.txt/runs cannot be created because .*notes\.txt is a file, not a folder; choose another path"),
    Case("output-folder-is-a-file-train", OUTPUT, "train",
         lambda ws: [*tiny(ws, *QUICK)[:2], "--trainer.default_root_dir", a_file(ws), "--trainer.logger", "CSVLogger",
                     "--trainer.logger.save_dir", str(ws.path("notes.txt")), *QUICK],
         r"error: .*notes\.txt is a file where a folder is needed; choose another path or move the file"),
    Case("output-folder-under-a-file-generate", OUTPUT, "generate",
         lambda ws: ["--source", str(ws.ckpt), "--out", f"{a_file(ws)}/samples", "--num_samples", "2"],
         r"error: .*notes\.txt/samples cannot be created because .*notes\.txt is a file, not a folder"),
    Case("output-folder-under-a-file-generate-grid", OUTPUT, "generate",
         lambda ws: ["--source", str(ws.ckpt), "--out", f"{a_file(ws)}/grid.png", "--grid", "--num_samples", "2"],
         r"error: .*notes\.txt is a file where a folder is needed"),
    Case("output-folder-under-a-file-evaluate", OUTPUT, "evaluate", lambda ws: evaluation(ws, "--out", f"{a_file(ws)}/evaluation.json"),
         r"error: .*notes\.txt/evaluation\.json cannot be created because .*notes\.txt is a file, not a folder"),
]
