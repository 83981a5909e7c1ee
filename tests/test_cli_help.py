"""``atcon <cmd> --help`` for every subcommand: every flag and operand is explained."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from atcon.cli import build_parser
from atcon.experiments.registry import NAMES


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(build_parser()))


def test_every_command_is_reached() -> None:
    names = {p[0] for p in COMMANDS if p}
    assert {
        "train",
        "finetune",
        "pretrain",
        "experiment",
        "evaluate",
        "demo",
        "maps",
        "explain",
        "sanity",
    } <= names


@pytest.mark.parametrize("path", [p for p in COMMANDS if p], ids=" ".join)
def test_every_flag_has_a_sentence(path: tuple[str, ...]) -> None:
    parser = COMMANDS[path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help.split()) >= 2, f"atcon {' '.join(path)} {label}: no help"
    parser.format_help()  # every help string %-formats


def test_experiment_help_lists_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["experiment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in NAMES:
        assert f"{name}:" in text, name
