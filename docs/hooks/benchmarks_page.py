"""MkDocs hook: benchmarks/README.md and the measurements beside it become the site's benchmarks page.

The tables live in benchmarks/ next to the scripts and JSON they came from (where someone who
reruns a benchmark looks); the site shows that same file at ``benchmarks/`` instead of a copy.
Pages link to it as ``/benchmarks/README.md``: the site resolves that against the docs folder
(``validation.links.absolute_links: relative_to_docs``) and GitHub against the repository root.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MOUNTED = ("benchmarks/README.md", "benchmarks/measured/*.json")


def on_files(files, config):
    from mkdocs.structure.files import File

    for pattern in MOUNTED:
        for path in sorted(REPO.glob(pattern)):
            files.append(File.generated(config, path.relative_to(REPO).as_posix(), abs_src_path=str(path)))
    return files
