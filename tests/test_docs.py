"""The project's docs and code cite only files that exist in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# code, configs and scripts (outputs that commands write, under docs/media, data/ or outputs/, are not checked)
CITED = re.compile(r"(?<![\w./-])((?:worldsim|tools|configs|examples|tests)/[\w./-]*\.(?:py|sh|yaml|md))")


def test_cited_code_paths_exist():
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "checkpoints").glob("*/README.md")),
               *sorted((ROOT / "worldsim").rglob("*.py")), *sorted((ROOT / "tools").glob("*")),
               *sorted((ROOT / "configs").glob("*.yaml"))]
    missing = sorted({f"{path.relative_to(ROOT)} cites {match.group(1)}" for path in sources if path.is_file()
                      for match in CITED.finditer(path.read_text(errors="ignore"))
                      if not (ROOT / match.group(1)).exists()})
    assert not missing, missing


# a markdown file named anywhere (``results.md``, ``docs/log.md``, ``../../docs/results.md``, a link's target)
MARKDOWN = re.compile(r"(?<![\w.-])((?:\.\./|\./)*[\w/-]*\w\.md)\b")


def test_no_file_cites_notes_outside_the_repository():
    """Every markdown file a doc, a model card, a script or a module names is one of the repository's own: a path that
    resolves inside the repository from the citing file or from the root, or the name of a markdown file the
    repository holds. So nothing leans on notes that travel beside the repository rather than in it."""
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "checkpoints").glob("*/README.md")),
               *sorted((ROOT / "worldsim").rglob("*.py")), *sorted((ROOT / "tools").glob("*")),
               *sorted((ROOT / "configs").glob("*.yaml")), *sorted((ROOT / "tests").glob("*.py"))]
    # only what a fresh clone has counts (a local ``make demo`` leaves outputs/ behind), plus the markdown files the
    # package itself writes (``out_dir / "metrics.md"``) and anything under outputs/, where commands write
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = {ROOT / line for line in tracked.stdout.splitlines()}
    written = {match.group(1) for path in (ROOT / "worldsim").rglob("*.py")
               for match in re.finditer(r'/ "(\w+\.md)"', path.read_text())}
    own = {path.name for path in files} | written

    def inside(cited: str, source: Path) -> bool:
        if cited.startswith("outputs/"):
            return True
        for base in (source.parent, ROOT):
            if (base / cited).resolve() in files:
                return True
        return "/" not in cited and cited in own

    offenders = sorted({f"{path.relative_to(ROOT)} names {match.group(1)}" for path in sources if path.is_file()
                        if path != Path(__file__)  # its own examples above
                        for match in MARKDOWN.finditer(path.read_text(errors="ignore"))
                        if not inside(match.group(1), path)})
    assert not offenders, offenders
