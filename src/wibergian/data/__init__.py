"""Data shipped inside the package (found with :mod:`importlib.resources`, so it works from a
wheel, an editable install or a source checkout, in any working directory).

- ``h36m_cameras.json``: the real Human3.6M calibration (4 cameras x 7 subjects).
- ``cmu-mocap-sample/playground.{asf,amc}``: one real CMU motion-capture clip, unchanged; see
  ``cmu-mocap-sample/LICENSE.md`` for its terms.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def data_path(*parts: str) -> Path:
    """Filesystem path of a bundled data file, e.g. ``data_path("h36m_cameras.json")``.

    Raises ``FileNotFoundError`` naming the file when the installation lacks it.
    """
    resource = files(__name__).joinpath(*parts)
    with as_file(resource) as p:  # a real path for wheels and checkouts (no temp copy)
        path = Path(p)
    if not path.exists():
        raise FileNotFoundError(
            f"bundled data file {'/'.join(parts)!r} is missing from this installation of "
            f"wibergian ({path}); reinstall the package"
        )
    return path
