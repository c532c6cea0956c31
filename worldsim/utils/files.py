"""Files that are either whole or absent: atomic text/JSON writes, staged folders swapped into place, and JSON
objects read with an error that names the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` (creating its folder) through a temporary file and a rename, so an interrupted
    write leaves the previous file whole. Returns the path.

    Raises:
        OSError: the folder cannot be created or written (the previous file, if any, is untouched).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
    return path


def write_json(path: str | Path, data) -> Path:
    """Writes a JSON-serialisable report (indented) with :func:`write_text_atomic`; returns the path.

    Raises:
        TypeError: ``data`` holds something JSON cannot encode (nothing is written then).
    """
    return write_text_atomic(path, json.dumps(data, indent=2))


def read_json_object(path: str | Path, error: type[Exception] = ValueError) -> dict:
    """The JSON object in ``path``.

    Raises:
        ``error`` (ValueError by default; datasets pass their ``DatasetError``): the file is not valid JSON or holds
            something other than an object; the message names the file.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as decode_error:
        raise error(f"{path} is not valid JSON: {decode_error}") from decode_error
    if not isinstance(value, dict):
        raise error(f"{path} holds {type(value).__name__}; expected a JSON object")
    return value


def replace_folder(staged: str | Path, target: str | Path) -> Path:
    """Moves a fully written folder ``staged`` to ``target``, replacing any folder there.

    The old folder is first renamed aside and removed only after the new one is in place, so a crash leaves either
    the old or the new folder at ``target`` (or, in the instant between the two renames, none; never a mix).
    Returns ``target``.

    Raises:
        OSError: ``staged`` does not exist or a rename fails; ``staged`` is kept, and the old folder is at
            ``target`` or, if the first rename went through, beside it as ``.<name>.old``.
    """
    staged, target = Path(staged), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
    return target
