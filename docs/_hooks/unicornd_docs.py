"""MkDocs hooks for the unicornd site.

- ``settings.md`` is rendered from the settings table (``unicornd.config.docs.render``) at
  every build, so the reference can never be stale or edited by hand.
- Pages link to repository files outside ``docs/`` as GitHub shows them (``../examples/x``);
  those files are published under ``repo/`` in the site and the links pointed there, so that
  links work in both places and a link to a missing file still fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

from unicornd.config.docs import render

REPO = Path(__file__).resolve().parents[2]
_OUTSIDE = re.compile(r"\]\(\.\./(?!\.\.)([^)#\s]+)(#[^)\s]*)?\)")


def _outside_links(markdown: str):
    return {m.group(1) for m in _OUTSIDE.finditer(markdown)}


def on_files(files, config):
    files.append(File.generated(config, "settings.md", content=render()))
    docs = Path(config["docs_dir"])
    wanted = set()
    for page in docs.glob("*.md"):
        wanted |= _outside_links(page.read_text())
    for rel in sorted(wanted):
        source = REPO / rel
        if source.is_file():  # a missing one stays a broken link, which fails the build
            name = rel if not rel.endswith(".md") else rel[:-3] + ".txt"
            files.append(File.generated(config, f"repo/{name}", abs_src_path=str(source)))
    return files


def on_page_markdown(markdown, page, config, files):
    def repl(m):
        rel, anchor = m.group(1), m.group(2) or ""
        if not (REPO / rel).is_file():
            return m.group(0)
        name = rel if not rel.endswith(".md") else rel[:-3] + ".txt"
        return f"](repo/{name}{anchor})"
    return _OUTSIDE.sub(repl, markdown)
