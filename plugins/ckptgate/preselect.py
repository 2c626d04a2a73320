"""``-k`` applied while checks are parametrized: a check that ``-k`` deselects is never built.

pytest applies ``-k`` after collection, so ``pytest checks/ -k config`` over 2,000 checkpoints builds 10,000
items to run 4,000, and building the other 6,000 costs about a quarter of the run. Here, once every
parametrization of a check function is known (``trylast``), pytest's own ``-k`` expression and keyword
matcher are asked, for each parameter set, about the item pytest would build for it; parameter sets that
``-k`` cannot select are dropped before any item exists. pytest still applies ``-k`` to what is left, so
the outcome is pytest's own as long as the names ``-k`` matches are known when the item is built:

* Only pytest's, ckptgate's and a few known plugins may implement the hooks through which markers, and so
  ``-k`` names, can be added to built items before pytest selects (``ITEM_HOOKS``); with any other, a
  conftest of the user's included, nothing is pre-selected.
* One item per check function is always built (the witness); after selection its ``-k`` names are compared
  with those predicted for it, and a difference stops the run with a usage error instead of leaving a
  check out silently.

Anything unexpected in pytest's internals (they are private: ``Metafunc._calls``, ``_pytest.mark``) turns
the pre-selection off, never the run. ``-o ckpt_k_preselect=false`` turns it off by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

INI = "ckpt_k_preselect"
# Plugins whose collection hooks add no per-parameter keywords: pytest's own, ckptgate's, pytest-xdist's,
# pytest-randomly's (reorders), hypothesis' (marks whole @given functions: the witness sees that).
KNOWN_MODIFIERS = ("_pytest.", "ckptgate.", "xdist.", "pytest_randomly", "_hypothesis_pytestplugin")
# Plugins whose collection hooks add names only under options of their own: pytest-benchmark marks items
# `skip` with --benchmark-skip or --benchmark-only (its pytest_collection_modifyitems), and does nothing else.
MODIFIERS_WITH_OPTIONS = {"pytest_benchmark.": ("benchmark_skip", "benchmark_only")}


def addini(parser: pytest.Parser) -> None:
    parser.addini(
        INI,
        type="bool",
        default=True,
        help="with -k, build only the checks -k can select (pytest otherwise builds and drops the rest)",
    )


def register(config: pytest.Config) -> None:
    """Called from ckptgate's ``pytest_configure``: registers the pre-selection for runs with ``-k``."""
    expression = (config.getoption("keyword", "") or "").strip()
    if not expression or not config.getini(INI):
        return
    matching = _pytest_matching(expression)
    if matching is not None:
        config.pluginmanager.register(Preselection(config, *matching), "ckptgate-preselect")


def _pytest_matching(expression: str) -> tuple[Any, Any] | None:
    """pytest's compiled ``-k`` expression and keyword matcher; None where this pytest differs from 8/9."""
    try:
        from _pytest.mark import KeywordMatcher
        from _pytest.mark.expression import Expression

        compiled = Expression.compile(expression)
    except Exception:  # moved internals, or a bad expression: pytest reports that one itself
        return None
    if not dataclasses.is_dataclass(KeywordMatcher) or not hasattr(KeywordMatcher, "from_item"):
        return None  # the witness compares matchers by value
    return compiled, KeywordMatcher


# The hooks through which a plugin can give an item markers or keywords after it is built, before -k.
ITEM_HOOKS = ("pytest_itemcollected", "pytest_collectreport", "pytest_collection_modifyitems")


def modifiers_unknown(config: pytest.Config) -> list[str]:
    """Plugins that may give checks other ``-k`` names between their building and ``-k`` (registered names)."""
    unknown = []
    for hook in ITEM_HOOKS:
        for impl in getattr(config.hook, hook).get_hookimpls():
            plugin = impl.plugin
            module = str(plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__)
            if _adds_no_names(module, config) or impl.plugin_name in unknown:
                continue
            unknown.append(impl.plugin_name)
    return unknown


def _adds_no_names(module: str, config: pytest.Config) -> bool:
    if module.startswith(KNOWN_MODIFIERS):
        return True
    for prefix, options in MODIFIERS_WITH_OPTIONS.items():
        if module.startswith(prefix):
            return not any(config.getoption(option, default=False) for option in options)
    return False


class _Unbuilt:
    """What pytest's keyword matcher reads from an item (chain, extra keywords, function, markers), for the
    items pytest would build from ``definition``'s parameter sets; :meth:`of` points it at one of them."""

    extra_keyword_matches: frozenset[str] = frozenset()

    def __init__(self, definition: Any) -> None:
        self.definition, self.function = definition, definition.function
        self.parents = definition.listchain()[:-1]
        self.extra = set(definition.listextrakeywords())
        self.markers = list(definition.iter_markers())
        self.name, self.marks = definition.name, []

    def of(self, callspec: Any) -> _Unbuilt:
        self.name = f"{self.definition.name}[{callspec.id}]"  # as pytest names a parametrized item
        self.marks = callspec.marks
        return self

    def listchain(self) -> list[Any]:
        return [*self.parents, self]

    def listextrakeywords(self) -> set[str]:
        return set(self.extra)

    def iter_markers(self, name: str | None = None) -> Iterator[Any]:
        yield from (mark for mark in [*self.marks, *self.markers] if name is None or mark.name == name)


class Preselection:
    """The pytest plugin: prunes parameter sets of checks, then proves the prediction on one item each."""

    def __init__(self, config: pytest.Config, expression: Any, matcher: Any) -> None:
        self.config, self.expression, self.matcher = config, expression, matcher
        self.built = self.parametrized = 0  # items of checkpoint checks built, and parameter sets seen
        self.witnesses: dict[str, Any] = {}  # node id -> the matcher predicted for it
        self.witness_items: list[Any] = []
        self.off: str | None = None

    @pytest.hookimpl(trylast=True)  # after pytest's and the user's parametrizations: the calls are final
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "checkpoint" not in metafunc.fixturenames or self.off is not None:
            return
        unknown = modifiers_unknown(self.config)
        if unknown:
            self.off = f"collection hooks of {', '.join(unknown)}"
            return
        try:
            calls = list(metafunc._calls)
            unbuilt = _Unbuilt(metafunc.definition)
            base = self.matcher.from_item(unbuilt)  # the names all of this function's items share
            selected = [call for call in calls if self.expression.evaluate(_item_matcher(base, unbuilt.of(call)))]
        except Exception:  # pytest's internals differ: build everything, pytest selects as usual
            self.off = "pytest internals"
            return
        kept = calls
        if len(selected) < len(calls):
            witness = calls[0]  # built whether selected or not: pytest deselects it if need be
            kept = selected if witness in selected else [witness, *selected]
            self.witnesses[f"{metafunc.definition.nodeid}[{witness.id}]"] = self.matcher.from_item(unbuilt.of(witness))
            metafunc._calls = kept
        self.built += len(kept)
        self.parametrized += len(calls)

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        if self.witnesses and item.nodeid in self.witnesses:
            self.witness_items.append(item)

    @pytest.hookimpl(trylast=True)  # after pytest's -k selection, before ckptgate's own reordering and marks
    def pytest_collection_modifyitems(self) -> None:
        if not self.witnesses:
            return
        unknown = modifiers_unknown(self.config)
        if unknown:
            raise pytest.UsageError(_stop(f"{', '.join(unknown)} may give checks other -k names"))
        for item in self.witness_items:
            if self.matcher.from_item(item) != self.witnesses[item.nodeid]:
                raise pytest.UsageError(_stop(f"{item.nodeid} has other -k names than the ones it was built with"))

    def pytest_report_collectionfinish(self) -> str | None:
        if self.off is not None and self.config.get_verbosity() > 0:
            return f"ckptgate: -k pre-selection off ({self.off}): every check was built"
        if self.config.get_verbosity() < 0 or self.built == self.parametrized:
            return None
        return (
            f"ckptgate: -k left {self.parametrized - self.built:,} of {self.parametrized:,} checks unbuilt "
            f"({INI} = true)"
        )


def _item_matcher(base: Any, unbuilt: _Unbuilt) -> Callable[..., bool]:
    """pytest's matcher for one item, from ``base``, the one for the names all items of its function share.

    A name matches when it is a case-insensitive substring of one of the item's names (pytest's ``-k``
    rule). Of those names only the item's own (``test_x[id]``, which contains the function's, in ``base``)
    and its parameter set's marks differ between the items of one function."""
    own = [unbuilt.name.lower(), *(mark.name.lower() for mark in unbuilt.marks)]
    return lambda subname, **kwargs: base(subname, **kwargs) or any(subname.lower() in name for name in own)


def _stop(reason: str) -> str:
    return (
        f"ckptgate pre-selected checks by -k while collecting them, but {reason}: some deselected checks "
        f"might have been selected. Run again with `-o {INI}=false`."
    )
