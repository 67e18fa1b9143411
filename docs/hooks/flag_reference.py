"""MkDocs hook: the flag reference page, written at build time from the commands' own ``--help``.

The page is never committed, so it cannot drift from what a user's ``--help`` prints: a flag
added, renamed or documented differently shows up in the next build, and a command whose
``--help`` fails fails the build.

Run as a script, this file prints the help texts as JSON; the hook runs it once in a child
process, so torch and Lightning are imported once for all five commands rather than five times
(the docs test builds the site and must stay fast), and the build's own process stays free of them.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = "reference/flags.md"
# (anchor, what the user types, module whose main() parses the flags, sys.argv[0] as the user has it)
COMMANDS = (
    ("train", "python train.py --help", "gan_lightning.commands.train", "train.py"),
    ("evaluate", "python -m gan_lightning.commands.evaluate --help", "gan_lightning.commands.evaluate", "evaluate.py"),
    ("export", "python -m gan_lightning.commands.export --help", "gan_lightning.commands.export", "export.py"),
    ("generate", "python -m gan_lightning.commands.generate --help", "gan_lightning.commands.generate", "generate.py"),
    ("synthesize", "python -m gan_lightning.commands.synthesize --help", "gan_lightning.commands.synthesize", "synthesize.py"),
)
# a group of train.py's help starts with an unindented line ending in ":" (its class's docstring)
GROUP_HEADER = re.compile(r"^\S.*:$")
FIRST_FLAG = re.compile(r"^\s+--([\w.]+)", re.M)


def capture() -> dict[str, str]:
    """Each command's --help exactly as ``main()`` prints it for ``sys.argv = [prog, "--help"]``."""
    texts = {}
    for anchor, _, module, prog in COMMANDS:
        sys.argv = [prog, "--help"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                importlib.import_module(module).main()
            except SystemExit as stop:
                if stop.code not in (0, None):
                    raise RuntimeError(f"{prog} --help exited with {stop.code}") from stop
        texts[anchor] = out.getvalue().replace(str(REPO), "<checkout>")
    return texts


def help_texts() -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "100", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        # a file rather than stdout: whatever an import prints cannot corrupt the JSON
        out = Path(tmp) / "help.json"
        proc = subprocess.run([sys.executable, __file__, str(out)], cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            from mkdocs.exceptions import PluginError

            raise PluginError(f"the flag reference could not capture --help: {proc.stderr[-2000:]}")
        return json.loads(out.read_text())


def fenced(text: str) -> str:
    return f"```text\n{text.strip()}\n```\n"


def train_sections(text: str) -> str:
    """train.py's help cut at its option groups, one heading each, so the page has a table of contents."""
    lines = text.strip().split("\n")
    starts = [i for i, line in enumerate(lines) if GROUP_HEADER.match(line) and not line.startswith("usage:")]
    out = ["### Usage {#train-usage}\n", fenced("\n".join(lines[: starts[0]] if starts else lines))]
    for start, end in zip(starts, starts[1:] + [len(lines)]):
        group = "\n".join(lines[start:end])
        flag = FIRST_FLAG.search(group)
        name = flag.group(1).split(".")[0] if flag else None
        # a group of dotted flags is named by its prefix (a plug-in's options are --NAME.*), any other by its header
        dotted = name is not None and f"--{name}." in group
        title = f"`--{name}.*`" if dotted else lines[start].rstrip(":").capitalize()
        anchor = name if dotted else re.sub(r"\W+", "-", lines[start].rstrip(":").lower()).strip("-")
        out += [f"### {title} {{#{anchor}}}\n", fenced(group)]
    return "\n".join(out)


def render(texts: dict[str, str]) -> str:
    parts = [
        "# Flag reference\n",
        "Written when this site is built, from the output of the commands below (the hook "
        "`docs/hooks/flag_reference.py` runs them), so it is the `--help` of the code the site was "
        "built from. Every `--trainer.*`, `--model.*` and `--data.*` flag is typed; each plug-in's "
        "options (`--prune.*`, `--distill.*`, ...) apply only when `--callbacks` switches it on.\n",
    ]
    for anchor, typed, _, _ in COMMANDS:
        parts.append(f"## {anchor} {{#{anchor}-command}}\n\n`{typed}`\n")
        parts.append(train_sections(texts[anchor]) if anchor == "train" else fenced(texts[anchor]))
    return "\n".join(parts)


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render(help_texts())))
    return files


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    target = Path(sys.argv[1])  # read before capture() rewrites sys.argv
    target.write_text(json.dumps(capture()))
