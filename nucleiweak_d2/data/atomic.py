"""Atomic file writers: a file is written to a temporary name in its folder, then renamed, so an
interrupted run never leaves a half-written file behind. The one implementation every module uses.
"""

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["atomic_path", "write_json", "write_text", "savez_compressed"]


@contextmanager
def atomic_path(path, suffix=None):
    """Context manager yielding a temporary path next to ``path``; renamed to ``path`` on success.

    Parameters
    ----------
    path : str or Path
        Final file; its parent folders are created.
    suffix : str or None
        Suffix of the temporary file (default: ``path``'s own, so writers that pick the format
        from the extension keep working).

    Examples
    --------
    >>> with atomic_path("out/label.png") as tmp:  # doctest: +SKIP
    ...     Image.fromarray(label).save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix
    )
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj, indent=1):
    """Write ``obj`` as JSON atomically (``indent=None`` for the compact form)."""
    separators = (",", ":") if indent is None else None
    write_text(path, json.dumps(obj, indent=indent, separators=separators))


def savez_compressed(path, **arrays):
    """``numpy.savez_compressed`` to ``path`` atomically."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
