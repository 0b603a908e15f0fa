"""A ModelsLab text-to-video API stand-in that answers as documented and renders real videos.

Its own product: it shares no code with ``producer`` or ``worker``. Public face:

- ``main(argv)``: the ``python -m simulator`` / ``t2v simulator`` command; returns an exit code.
- ``create_app(config)``: the ASGI app for in-process use.
- ``SimConfig``, ``parse_config(argv, environ)``: start-up settings (flags and ``SIM_*``).

Imports are lazy so render worker processes, which import ``simulator.render``, stay light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from simulator.config import SimConfig

__all__ = ["SimConfig", "create_app", "main", "parse_config"]


def main(argv: Sequence[str] | None = None) -> int:
    """The local ModelsLab stand-in (`t2v simulator`)."""
    from simulator.server import main as _main

    return _main(argv)


def create_app(config: SimConfig | None = None) -> Starlette:
    from simulator.app import create_app as _create_app

    return _create_app(config)


def __getattr__(name: str) -> Any:
    if name in ("SimConfig", "parse_config"):
        from simulator import config

        return getattr(config, name)
    raise AttributeError(name)
