"""Static checks that the README states what the code does."""

from __future__ import annotations

import re

from service.config import _OPTIONS, Settings
from tests.conftest import ROOT

# Defaults that the README states in words: they depend on the machine or on other settings.
DERIVED_DEFAULTS = {"POOL_WORKERS": "CPUs available", "MAX_PENDING": "4 × workers"}


def readme_settings() -> dict[str, str]:
    """The README's configuration table: variable -> default column."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_0-9]+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_readme_lists_every_setting_with_its_default() -> None:
    documented = readme_settings()
    assert sorted(documented) == sorted(option.name.upper() for option in _OPTIONS)
    defaults = Settings()
    for option in _OPTIONS:
        name, written = option.name.upper(), documented[option.name.upper()]
        if name in DERIVED_DEFAULTS:
            assert written == DERIVED_DEFAULTS[name]
            continue
        literal = re.match(r"`([^`]+)`", written)
        assert literal, (name, written)
        assert option.parse(literal.group(1)) == getattr(defaults, option.name), name
