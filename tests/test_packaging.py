"""What ``pip install pytest-ckptgate`` (not ``-e``) ships: setuptools lists the packages and their data files
by hand here, and a subpackage missing from the list installs a plugin that fails to load (``No module named
'ckptgate.recovery'``, seen on a machine that installed the wheel); a data file missing, one that fails at its
first use (the JSON Schemas)."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[1]


def setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_module_of_the_plugin_and_the_checks_is_in_a_shipped_package() -> None:
    config = setuptools()
    shipped = set(config["packages"])
    modules: dict[str, str] = {}
    for package, folder in config["package-dir"].items():
        for source in sorted((REPO / folder).rglob("*.py")):
            inner = source.parent.relative_to(REPO / folder).parts
            modules[str(source.relative_to(REPO))] = ".".join([package, *inner])
    assert len(modules) > 20  # the plugin's modules and the checks were found
    missing = {path: package for path, package in modules.items() if package not in shipped}
    assert missing == {}, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_data_file_of_the_plugin_is_shipped() -> None:
    config = setuptools()
    folder = REPO / config["package-dir"]["ckptgate"]
    patterns = config["package-data"]["ckptgate"]
    data = [
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert "schemas/model_config.schema.json" in data  # the files were found
    missing = [name for name in data if not any(fnmatch(name, pattern) for pattern in patterns)]
    assert missing == [], f"add these to [tool.setuptools.package-data] ckptgate in pyproject.toml: {missing}"


def test_the_demo_family_schema_is_not_shipped() -> None:
    """The demo's schema is the example of a team's own, passed with --ckpt-schema: it stays in the repository."""
    config = setuptools()
    demo = REPO / "fixtures" / "demo_model.schema.json"
    assert demo.is_file()
    shipped = [(REPO / folder).resolve() for folder in config["package-dir"].values()]
    assert not any(folder in demo.resolve().parents for folder in shipped)
    assert not any(package.split(".")[0] == "fixtures" for package in config["packages"])


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirement_names(requirements: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in requirements]
    return {canonicalize_name(requirement.name): requirement for requirement in parsed}


def test_pytest_xdist_is_a_runtime_dependency() -> None:
    """The README's commands run the checks with ``-n auto``: the plugin's own install must bring pytest-xdist,
    not only the ``dev`` extra (a user who installs the wheel has no extra)."""
    runtime = requirement_names(project()["dependencies"])
    assert "pytest-xdist" in runtime, "add pytest-xdist to [project] dependencies in pyproject.toml"
    assert runtime["pytest-xdist"].marker is None  # on every platform and Python


def test_no_extra_repeats_a_runtime_dependency() -> None:
    """One place per requirement: an extra repeating a runtime dependency would pin it twice, differently."""
    runtime = set(requirement_names(project()["dependencies"]))
    for extra, requirements in project()["optional-dependencies"].items():
        repeated = runtime & set(requirement_names(requirements))
        assert repeated == set(), f"extra {extra!r} repeats runtime dependencies: {sorted(repeated)}"


def test_torch_is_unpinned_at_runtime_and_installed_pinned_first() -> None:
    """torch's build is the user's choice (CPU, CUDA): the package only sets a floor; the README and CI install
    the same pinned version first, before anything can pull an unpinned one (GBs of CUDA builds)."""
    torch = requirement_names(project()["dependencies"])["torch"]
    assert not any(spec.operator in ("==", "===", "~=") for spec in torch.specifier), str(torch)
    readme_pins = set(re.findall(r"pip install (torch==[\w.+]+)", (REPO / "README.md").read_text()))
    ci_pins = set(re.findall(r"(torch==[\w.+]+)", (REPO / ".ci" / "run").read_text()))
    assert len(readme_pins) == 1, readme_pins
    assert ci_pins == readme_pins
