"""The argument types the subcommands share: one definition, the same refusal from every command that uses it."""
from __future__ import annotations

import argparse

import pytest

from mccad.cli import main
from mccad.argtypes import positive_int


def test_the_help_lists_every_subcommand_and_no_helper_module():
    from mccad.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"simulate", "synth", "adapt"} <= set(sub.choices) and "argtypes" not in sub.choices


def test_a_positive_whole_number_is_taken_and_anything_else_refused():
    assert positive_int("1") == 1 and positive_int("12") == 12
    for bad in ("0", "-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive whole number"):
            positive_int(bad)
    with pytest.raises(ValueError):
        positive_int("two")


@pytest.mark.parametrize("argv", [["simulate", "--out", "o", "--images", "0"],
                                  ["synth", "--out", "o", "--patients", "0"],
                                  ["adapt", "--normals", "n", "--out", "o", "--epochs", "0"]])
def test_every_command_refuses_a_count_below_one_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "must be a positive whole number, got 0" in capsys.readouterr().err
