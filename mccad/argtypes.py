"""Argument types shared by the ``mccad`` subcommands: each turns one command-line text into a value or refuses it
with ``argparse.ArgumentTypeError``, which argparse reports as a usage error naming the option."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value
