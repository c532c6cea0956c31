"""The project's docs and code cite only files that exist in the repository."""

from __future__ import annotations

import re
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


def test_no_file_cites_notes_outside_the_repository():
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "checkpoints").glob("*/README.md")),
               *sorted((ROOT / "worldsim").rglob("*.py")), *sorted((ROOT / "tools").glob("*")),
               *sorted((ROOT / "configs").glob("*.yaml")), *sorted((ROOT / "tests").glob("*.py"))]
    outside = re.compile(r"\.\./shared|shared/|(?:DESIGN|MACHINE|STYLE)\.md")
    offenders = sorted(str(path.relative_to(ROOT)) for path in sources if path.is_file() and path != Path(__file__)
                       and outside.search(path.read_text(errors="ignore")))
    assert not offenders, offenders

