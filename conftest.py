"""Points this repository's own check runs at the embedded demo tree, and builds it on first use.

``pyproject.toml`` sets ``ckpt_outputs = demo/outputs`` and the demo model factory; this hook builds
``demo/`` (real Lightning training of a few steps, a few seconds) the first time ``pytest checks/``
needs it, and registers the demo family's plugin (its cross-field rules). Our own tests
(``pytest tests/``) build their trees in temporary folders and never touch it.

With an editable install the shipped checks *are* ``checks/`` here, so this file is also loaded when
another project runs ``pytest --pyargs ckptgate.checks``: it must stay inert there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
DEMO_ROOT = REPO / "demo"
CHECKS_DIR = REPO / "checks"


def _runs_checks(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == CHECKS_DIR or CHECKS_DIR in path.parents or path in CHECKS_DIR.parents:
            return True
    return False


@pytest.hookimpl(trylast=True)  # after ckptgate's own pytest_configure has read the options
def pytest_configure(config: pytest.Config) -> None:
    if config.rootpath != REPO:  # another project's run that collected our checks/ through an editable install
        return
    from fixtures import demo_plugin

    if not config.pluginmanager.is_registered(demo_plugin):
        config.pluginmanager.register(demo_plugin, "fixtures.demo_plugin")
    if hasattr(config, "workerinput"):  # xdist workers start after the controller built the tree
        return
    from ckptgate.plugin import gate_of

    if gate_of(config).settings.outputs_dir != DEMO_ROOT / "outputs" or not _runs_checks(config):
        return
    from fixtures.demo_tree import ensure_demo_tree

    ensure_demo_tree(DEMO_ROOT)
