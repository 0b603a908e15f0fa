#!/usr/bin/env python3
"""Compare an environment's `pip freeze` with a lock file: exit 1 on any difference.

    python scripts/check-lock.py [--python .venv/bin/python] [--freeze FILE] requirements.lock

Every `name==version` pin of the lock must be installed at exactly that version, and nothing
else may be installed, except the project itself (named by the pyproject.toml beside the
lock; `make` installs it editable, the image from its directory) and pip, setuptools and
wheel when the lock does not pin them: those come with the venv (ensurepip), not from the
lock, and are reported but not counted.
`--freeze FILE` reads a saved `pip freeze --all` instead of running one.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

BOOTSTRAP = {"pip", "setuptools", "wheel"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;([^\\#]*))?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_holds(marker: str | None) -> bool:
    if not marker or not marker.strip():
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # no packaging here: count the pin (a false alarm beats a miss)
        return True
    return Marker(marker.strip()).evaluate()


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line)
        if m and marker_holds(m.group(3)):
            pins[canonical(m.group(1))] = m.group(2)
        elif line and not line[0].isspace() and not line.startswith(("#", "-")):
            sys.exit(f"check-lock: {path}: not a `name==version` pin: {line!r}")
    return pins


def project_name(lock: Path) -> str | None:
    pyproject = lock.resolve().parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name")
    return canonical(name) if name else None


def read_freeze(lines: list[str], project: str | None) -> tuple[dict[str, str], list[str]]:
    installed: dict[str, str] = {}
    unpinned: list[str] = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if project and canonical(re.split(r"[=@ ]", line, maxsplit=1)[0]) == project:
            continue  # the project itself: installed from the work tree, never from the lock
        if "==" in line and " @ " not in line:
            name, version = line.split("==", 1)
            installed[canonical(name)] = version
        else:  # `name @ file://...` or `-e ...`: not a released, hashed version
            unpinned.append(line)
    return installed, unpinned


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lock", type=Path)
    ap.add_argument("--python", default=sys.executable, help="the environment's interpreter")
    ap.add_argument("--freeze", type=Path, help="a saved `pip freeze --all` to read instead")
    args = ap.parse_args()

    locked = read_lock(args.lock)
    if args.freeze:
        lines = args.freeze.read_text().splitlines()
    else:
        cmd = [args.python, "-m", "pip", "freeze", "--all", "--exclude-editable"]
        lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    installed, unpinned = read_freeze(lines, project_name(args.lock))

    problems: list[str] = []
    ignored: list[str] = []
    for name, version in sorted(locked.items()):
        have = installed.get(name)
        if have is None:
            problems.append(f"missing:   {name}=={version} is locked but not installed")
        elif have != version:
            problems.append(f"version:   {name}=={have} installed, the lock has {version}")
    for name, version in sorted(installed.items()):
        if name in locked:
            continue
        if name in BOOTSTRAP:
            ignored.append(f"{name}=={version}")
        else:
            problems.append(f"extra:     {name}=={version} is installed but not locked")
    problems += [f"unpinned:  {line}" for line in unpinned]

    print(f"check-lock: {args.lock}: {len(locked)} pins, {len(installed)} installed")
    if ignored:
        print(f"check-lock: not in the lock, from the venv itself (ignored): {', '.join(ignored)}")
    for p in problems:
        print(f"check-lock: {p}")
    if problems:
        print(f"check-lock: {len(problems)} difference(s)")
        return 1
    print("check-lock: no differences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
