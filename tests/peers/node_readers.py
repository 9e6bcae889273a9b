"""The Node readers of DICOM SR that OHIF is built on (``@cornerstonejs/adapters``, ``dcmjs``), run on our objects.

The packages are pinned in ``tests/peers/node/package.json`` and its lockfile and installed there, outside the
product, by ``make node-peers`` or, where that has not run, by ``install_node_readers`` (``npm ci``) the first time a
test needs them. Node itself is Debian's (or any Node >= 20 on the PATH).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"
_MARKER = NODE_DIR / "node_modules" / "@cornerstonejs" / "adapters" / "package.json"


def install_node_readers() -> Path:
    """``tests/peers/node`` with its packages installed (``npm ci`` from the lockfile when they are missing)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is not on the PATH: apt-get install nodejs npm (make system-deps)")
    if not _MARKER.exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True,
                       timeout=600)
    return NODE_DIR


def cornerstone_annotations(sr_path: Path) -> list[dict]:
    """What Cornerstone3D's ``MeasurementReport.generateToolState`` makes of the SR at ``sr_path``: one dict per
    annotation with ``tool``, ``sopInstanceUid``, ``label``, ``description``, ``trackingUid`` and ``points`` (the
    handles in image pixels, (column, row))."""
    node_dir = install_node_readers()
    done = subprocess.run(["node", "hydrate_sr.mjs", str(Path(sr_path).resolve())], cwd=node_dir,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)
