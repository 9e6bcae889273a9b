"""``mccad version``: the software and the model bundle in use."""
from __future__ import annotations

import argparse
import json

from settings.version import __version__


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("version", help="print the software version and the models it would use")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    info = {"mccad": __version__, "model_dir": str(settings.model_dir)}
    manifests = sorted(settings.model_dir.glob("*/manifest.json")) if settings.model_dir.is_dir() else []
    for path in manifests:
        m = json.loads(path.read_text())
        info[path.parent.name] = f"{m.get('name')} {m.get('version')}"
    print(json.dumps(info, indent=2))
    return 0
