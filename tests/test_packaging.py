"""What ``pip install pytest-ckptgate`` (not ``-e``) ships: setuptools lists the packages by hand here, and a
subpackage missing from the list installs a plugin that fails to load (``No module named
'ckptgate.recovery'``, seen on a machine that installed the wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[1]


def test_every_module_of_the_plugin_and_the_checks_is_in_a_shipped_package() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(setuptools["packages"])
    modules: dict[str, str] = {}
    for package, folder in setuptools["package-dir"].items():
        for source in sorted((REPO / folder).rglob("*.py")):
            inner = source.parent.relative_to(REPO / folder).parts
            modules[str(source.relative_to(REPO))] = ".".join([package, *inner])
    assert len(modules) > 20  # the plugin's modules and the checks were found
    missing = {path: package for path, package in modules.items() if package not in shipped}
    assert missing == {}, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"
