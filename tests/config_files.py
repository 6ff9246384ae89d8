"""Tests that edit the configuration: a copy of the shipped ``config/`` (the ``config_dir``
fixture in ``tests/conftest.py``), an edit in place, and the problems loading it reports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG_DIR, ConfigError, load_settings


def copy_config(tmp_path: Path) -> Path:
    """A copy of the shipped configuration directory under ``tmp_path``."""
    target = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old``, which the file holds exactly once, by ``new``."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new))


def problems_of(directory: Path) -> list[str]:
    """The problems loading ``directory`` reports (it must fail)."""
    with pytest.raises(ConfigError) as err:
        load_settings(directory)
    return err.value.problems
