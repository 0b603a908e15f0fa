"""The ``t2v`` commands other packages bring: the ``t2v.commands`` entry point group.

``up``, ``demo`` and ``simulator`` are not defined in the client: the packages that own
them register them under ``t2v.commands`` (see ``pyproject.toml``), and ``t2v`` finds them
here when asked for one (``command``). Each entry point names a ``main(argv) -> int`` whose
docstring's first line is its help; it parses its own arguments. Installed without them,
``t2v up`` says which extra brings it (exit 2).

This module must never import ``worker`` or ``simulator`` by name, nor load an entry point
before its command is asked for: ``t2v submit`` must work, and start fast, without them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import NoReturn

import click
from rich.markup import escape

from producer.cli_common import EXIT_USAGE, err

PLUGIN_GROUP = "t2v.commands"
# The commands the project's other packages bring, and the extra that installs each: named
# here only to say what to install when one is missing.
PLUGIN_EXTRAS = {"up": "worker", "demo": "worker", "simulator": "simulator", "web": "web"}
PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


def names() -> set[str]:
    """The plugin commands to list: those registered, and those an extra would bring."""
    return set(_plugins()) | set(PLUGIN_EXTRAS)


def command(name: str) -> click.Command | None:
    """The command ``name`` as a plugin: the registered one, or one that names the extra
    to install; None if no package brings such a command."""
    entry = _plugins().get(name)
    if entry is None:
        return _not_installed(name, "not installed") if name in PLUGIN_EXTRAS else None
    try:
        target = entry.load()
    except ImportError as exc:  # registered, but its package's dependencies are missing
        return _not_installed(name, f"{type(exc).__name__}: {exc}")
    return _passthrough(name, target)


def _plugins() -> dict[str, EntryPoint]:
    """Each entry point names a ``main(argv) -> int`` whose docstring's first line is its
    help; it parses its own arguments."""
    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def _passthrough(name: str, target: Callable[[list[str]], int | None]) -> click.Command:
    def run(args: tuple[str, ...]) -> NoReturn:
        sys.exit(int(target(list(args)) or 0))

    doc = (target.__doc__ or "").strip().splitlines()
    return click.Command(
        name,
        callback=run,
        context_settings=PASSTHROUGH,
        add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=(doc[0] if doc else name) + " (arguments go to it; try --help)",
    )


def _not_installed(name: str, why: str) -> click.Command:
    extra = PLUGIN_EXTRAS.get(name, name)

    def run(args: tuple[str, ...]) -> NoReturn:
        hint = escape(f"pip install 't2v-queue[{extra}]' ({why})")
        err.print(f"[red]t2v:[/] `t2v {name}` comes with the {extra} extra: {hint}", soft_wrap=True)
        sys.exit(EXIT_USAGE)

    return click.Command(
        name,
        callback=run,
        context_settings=PASSTHROUGH,
        add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=f"(needs pip install 't2v-queue[{extra}]')",
    )
