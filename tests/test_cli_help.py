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


SETTINGS_COMMANDS = [
    "train",
    "finetune",
    "pretrain",
    "experiment",
    "evaluate",
    "demo",
    "maps",
    "explain",
    "sanity",
]


def test_every_command_is_reached() -> None:
    names = {p[0] for p in COMMANDS if p}
    assert set(SETTINGS_COMMANDS) <= names


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


@pytest.mark.parametrize("command", SETTINGS_COMMANDS)
def test_print_config_is_toml_of_the_setting_flags(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    import tomllib

    parser = COMMANDS[(command,)]
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--print-config"])
    text = capsys.readouterr().out
    tomllib.loads(text)
    keys = set(re.findall(r"^(?:# )?([a-z_0-9]+) =", text, flags=re.M))  # set, or commented out as unset
    options = {o for a in parser._actions for o in a.option_strings}
    assert len(keys) >= 2
    assert {f"--{k.replace('_', '-')}" for k in keys} <= options
