"""The ``mccad`` command. Thin glue: each subcommand lives in ``mccad/commands/<name>.py`` and exposes
``register(subparsers)``; the handler it sets as ``func`` returns the process exit code."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import mccad.commands
from settings.config import load_settings
from settings.logs import configure_logging
from settings.version import __version__


class UserError(Exception):
    """An error whose message is the whole story for the operator; printed without a traceback."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or of ``only`` (when it names one): importing a command module can be slow
    (training modules load scipy), and an operator's ``mccad status`` should not wait for the others."""
    parser = argparse.ArgumentParser(prog="mccad",
                                     description="Microcalcification CAD for mammography, PACS-integrated.")
    parser.add_argument("--version", action="version", version=f"mccad {__version__}")
    parser.add_argument("--log-level", default=None, help="override MCCAD_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = sorted(info.name for info in pkgutil.iter_modules(mccad.commands.__path__))
    for name in [only] if only in names else names:
        module = importlib.import_module(f"mccad.commands.{name}")
        module.register(sub)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The subcommand in ``argv`` (the first word that is not an option or the value of ``--log-level``)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--log-level":
            skip = True
        elif not word.startswith("-"):
            return word
        elif word in ("-h", "--help", "--version"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_command_named(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
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
