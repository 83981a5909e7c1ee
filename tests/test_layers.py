"""The package's layering: the CLI on top, plotting in one place (read from the source with ``ast``)."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import atcon
from atcon.cli import _COMMAND_MODULES, build_parser

SRC = Path(atcon.__file__).parent


def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(SRC)): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _imports(tree: ast.AST) -> set[str]:
    """Every module an ``import`` names anywhere in the file (function bodies included).

    Imports under ``if TYPE_CHECKING:`` are left out: they never run.
    """
    out: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        out |= _imports(node)
    return out


def _is_cli(rel: str) -> bool:
    return rel == "cli.py" or rel.startswith("commands/")


def test_the_library_never_imports_the_cli() -> None:
    offenders = {
        rel: sorted(m for m in _imports(tree) if m == "atcon.commands" or m.startswith("atcon.commands."))
        for rel, tree in _modules().items()
        if not _is_cli(rel)
    }
    assert {rel: mods for rel, mods in offenders.items() if mods} == {}


def test_the_walk_sees_imports_inside_functions() -> None:
    # The check above must not pass because it reads only the top of files.
    tree = ast.parse("def f():\n    from atcon.commands.evaluate import run\n")
    assert "atcon.commands.evaluate" in _imports(tree)
    typing_only = ast.parse("if TYPE_CHECKING:\n    import matplotlib\nclass A:\n    import atcon.commands\n")
    assert _imports(typing_only) == {"atcon.commands"}


def test_matplotlib_only_in_viz() -> None:
    for rel, tree in _modules().items():
        if rel.startswith("viz/"):
            continue
        assert not any(m.split(".")[0] == "matplotlib" for m in _imports(tree)), rel
    backend_calls = [
        rel
        for rel, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "use"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "matplotlib"
    ]
    assert backend_calls == ["viz/_pyplot.py"]


def test_every_command_module_is_listed_and_builds_its_subcommands() -> None:
    listed = {m.removeprefix("atcon.commands.") for m in _COMMAND_MODULES}
    on_disk = {p.stem for p in (SRC / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert listed == on_disk
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = {
        "maps",
        "data",
        "train",
        "finetune",
        "pretrain",
        "evaluate",
        "explain",
        "sanity",
        "demo",
        "experiment",
    }
    assert set(sub.choices) == expected
    for name, p in sub.choices.items():
        assert p.get_default("func") is not None, name  # dispatches to a function
        assert "%%" not in p.format_help(), name  # descriptions are not %-formatted by argparse
