"""The README's configuration table names every setting a user can set."""

from __future__ import annotations

import re
from pathlib import Path

from t2v_core.settings import Settings
from worker.settings import WorkerSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def _documented() -> set[str]:
    text = README.read_text()
    start = text.index("## Configuration")
    table = text[start : text.index("\n## ", start + 1)]
    return set(re.findall(r"`(T2V_[A-Z0-9_]+)`", table))


def test_every_setting_is_in_the_configuration_table() -> None:
    fields = {**Settings.model_fields, **WorkerSettings.model_fields}
    missing = sorted(f"T2V_{name.upper()}" for name in fields)
    missing = [var for var in missing if var not in _documented()]
    assert missing == [], f"add these to README 'Configuration': {missing}"


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    fields = {f"T2V_{n.upper()}" for n in {**Settings.model_fields, **WorkerSettings.model_fields}}
    # Read by processes outside the two settings classes (the web server, the simulator).
    elsewhere = {"T2V_WEB_TOKEN", "T2V_WEB_PAGE_SIZE", "T2V_WEB_COUNTS_TTL"}
    assert sorted(_documented() - fields - elsewhere) == []
