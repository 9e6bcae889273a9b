"""The ``mccad`` command. Thin glue: each subcommand lives in ``mccad/commands/<name>.py`` and exposes
``register(subparsers)``; the handler it sets as ``func`` returns the process exit code."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import mccad.commands
from mccad import __version__


class UserError(Exception):
    """An error whose message is the whole story for the operator; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mccad", description="Microcalcification CAD for mammography, PACS-integrated.")
    parser.add_argument("--version", action="version", version=f"mccad {__version__}")
    parser.add_argument("--log-level", default=None, help="override MCCAD_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(mccad.commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"mccad.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mccad.config import load_settings
    from mccad.logs import configure_logging

    try:
        settings = load_settings()
    except Exception as exc:  # configuration errors are user errors
        print(f"mccad: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or settings.log_level, settings.log_format)
    try:
        return int(args.func(args, settings) or 0)
    except UserError as exc:
        print(f"mccad: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
