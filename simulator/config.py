"""Start-up settings of the simulator: command-line flags, each also readable from ``SIM_*``.

Precedence: a flag on the command line wins over its ``SIM_<FLAG>`` environment variable,
which wins over the default. The result is a frozen ``SimConfig`` built once and passed in;
nothing else in the package reads the environment.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.faults import validate_faults


@dataclass(frozen=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    keys: tuple[str, ...] = ("sim-key",)
    seed: int = 0
    render_mean: float = 6.0
    render_spread: float = 0.5
    eta_noise: float = 0.0
    instant_share: float = 0.0
    queue_limit: int = 5
    media_dir: str | None = None  # None: a temp dir made at start
    public_url: str | None = None  # None: http://<host>:<port> (loopback if host is 0.0.0.0)
    faults: Mapping[str, Any] = field(default_factory=dict)
    render_workers: int = 1
    access_log: bool = False

    def base_url(self, port: int | None = None) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host  # noqa: S104
        return f"http://{host}:{port if port is not None else self.port}"


# flag name -> (type converter, help)
_FLAGS: dict[str, tuple[Any, str]] = {
    "host": (str, "interface to bind (default 127.0.0.1)"),
    "port": (int, "port to bind; 0 picks a free one (default 8765)"),
    "keys": (str, "comma-separated API keys accepted (default sim-key)"),
    "seed": (int, "seed of every random choice (default 0)"),
    "render-mean": (float, "mean simulated render time in seconds (default 6.0)"),
    "render-spread": (float, "relative spread (lognormal sigma) of render times (default 0.5)"),
    "eta-noise": (float, "eta = true render time * (1 + noise * U(-1,1)) (default 0)"),
    "instant-share": (float, "share of submits answered success at once (default 0)"),
    "queue-limit": (int, "jobs still processing allowed per key before 429 (default 5)"),
    "media-dir": (str, "where rendered files are cached (default: a temp dir)"),
    "public-url": (str, "base of URLs in answers (default http://HOST:PORT)"),
    "faults": (str, "JSON object of faults at start, e.g. '{\"http_500_share\":0.2}'"),
    "render-workers": (int, "render worker processes (default 1)"),
    "access-log": (str, "1 to log every request (default 0: logging costs throughput)"),
}


def _env_name(flag: str) -> str:
    return "SIM_" + flag.upper().replace("-", "_")


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_config(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> SimConfig:
    """Build the config from ``argv`` (flags) over ``environ`` (``SIM_*``) over defaults."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A ModelsLab text-to-video API stand-in that renders real videos.",
        epilog="Every flag can also be set as SIM_<FLAG>, e.g. SIM_KEYS, SIM_RENDER_MEAN.",
    )
    for flag, (conv, help_text) in _FLAGS.items():
        parser.add_argument(
            f"--{flag}", type=conv, default=None, help=f"{help_text} [env {_env_name(flag)}]"
        )
    ns = vars(parser.parse_args(list(argv) if argv is not None else None))
    values: dict[str, Any] = {}
    for flag, (conv, _help) in _FLAGS.items():
        attr = flag.replace("-", "_")
        raw = ns.get(attr)
        if raw is None and _env_name(flag) in env:
            try:
                raw = conv(env[_env_name(flag)])
            except ValueError:
                parser.error(f"{_env_name(flag)}: not a valid {conv.__name__}")
        if raw is not None:
            values[attr] = raw
    if "keys" in values:
        keys = tuple(k.strip() for k in str(values["keys"]).split(",") if k.strip())
        values["keys"] = keys or SimConfig.keys
    if "access_log" in values:
        values["access_log"] = _truthy(str(values["access_log"]))
    if "faults" in values:
        try:
            faults = json.loads(values["faults"]) if str(values["faults"]).strip() else {}
            values["faults"] = validate_faults(faults)
        except (ValueError, TypeError) as exc:
            parser.error(f"--faults: {exc}")
    for name in ("render_mean", "render_spread", "eta_noise"):
        if values.get(name, 0) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if not 0 <= values.get("instant_share", 0) <= 1:
        parser.error("--instant-share must be within 0..1")
    if values.get("queue_limit", 1) < 1 or values.get("render_workers", 1) < 1:
        parser.error("--queue-limit and --render-workers must be >= 1")
    return SimConfig(**values)
