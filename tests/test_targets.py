"""ckptgate.targets: which `_target_` import paths a config may name, decided before anything is imported."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from ckptgate.targets import ALWAYS_REFUSED, find_targets, matches, target_errors
from hypothesis import given
from hypothesis import strategies as st

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=0, max_size=6)
DOTTED = st.lists(SEGMENT, min_size=1, max_size=4).map(".".join)


# ------------------------------------------------------------------------------------------ matches


@given(dotted=DOTTED, prefix=DOTTED)
def test_matches_is_segment_wise_prefix(dotted: str, prefix: str) -> None:
    parts, head = dotted.split("."), prefix.split(".")
    assert matches(dotted, prefix) == (parts[: len(head)] == head)


@given(prefix=DOTTED, rest=st.lists(SEGMENT, max_size=3))
def test_a_prefix_covers_everything_below_it(prefix: str, rest: list[str]) -> None:
    assert matches(".".join([prefix, *rest]), prefix)


@given(prefix=DOTTED.filter(bool), glued=SEGMENT.filter(bool))
def test_a_prefix_never_covers_a_longer_name(prefix: str, glued: str) -> None:
    """``pkg`` must not admit ``pkgevil``: matching is on whole segments."""
    assert not matches(prefix + glued, prefix)
    assert not matches(prefix + glued + ".Model", prefix)


@given(st.text(max_size=20), st.text(max_size=20))
def test_matches_never_crashes(dotted: str, prefix: str) -> None:
    assert matches(dotted, prefix) == (dotted == prefix or dotted.startswith(prefix + "."))


@pytest.mark.parametrize(
    ("dotted", "prefix", "expected"),
    [
        ("fixtures.demo_models.DBNetLike", "fixtures", True),
        ("fixtures.demo_models.DBNetLike", "fixtures.demo_models", True),
        ("fixtures.demo_models.DBNetLike", "fixtures.demo_models.DBNetLike", True),
        ("fixtures.demo_models.DBNetLike", "fixtures.demo", False),
        ("fixturesevil.Model", "fixtures", False),
        ("fixtures", "fixtures.demo_models", False),
        ("os.system", "os", True),
        ("osmosis.Model", "os", False),
    ],
)
def test_matches_examples(dotted: str, prefix: str, expected: bool) -> None:
    assert matches(dotted, prefix) is expected


# -------------------------------------------------------------------------------------- find_targets


def test_find_targets_finds_every_target_with_its_path() -> None:
    section = {
        "_target_": "mypkg.Net",
        "encoder": {"_target_": "mypkg.enc.Encoder", "params": {"act": {"_target_": "torch.nn.ReLU"}}},
        "heads": [{"_target_": "mypkg.Head"}, {"name": "plain"}, [{"_target_": "mypkg.Deep"}]],
        "my key": {"_target_": "mypkg.Odd"},
        "name": "_target_",  # a value, not a key
    }
    assert find_targets(section, "$.model") == [
        ("$.model._target_", "mypkg.Net"),
        ("$.model.encoder._target_", "mypkg.enc.Encoder"),
        ("$.model.encoder.params.act._target_", "torch.nn.ReLU"),
        ("$.model.heads[0]._target_", "mypkg.Head"),
        ("$.model.heads[2][0]._target_", "mypkg.Deep"),
        ('$.model["my key"]._target_', "mypkg.Odd"),
    ]


def test_find_targets_on_non_containers() -> None:
    assert find_targets("os.system") == []
    assert find_targets(None) == []
    assert find_targets([]) == []


# ------------------------------------------------------------------------------------- target_errors

DANGEROUS = [
    "os.system",
    "subprocess.Popen",
    "subprocess.run",
    "builtins.eval",
    "builtins.exec",
    "builtins.open",
    "torch.save",
    "torch.load",
    "torch.hub.load",
    "torch.serialization.save",
    "torch.utils.cpp_extension.load_inline",
    "torch.utils.collect_env.run",
    "torch.package.PackageImporter",
    "torch.utils.model_zoo.load_url",
    "shutil.copyfile",
    "shutil.rmtree",
    "importlib.import_module",
    "logging.FileHandler",
    "pathlib.Path.touch",
    "io.open",
    "pickle.loads",
    "runpy.run_path",
    "hydra.utils.instantiate",
]


@pytest.mark.parametrize("target", DANGEROUS)
def test_dangerous_targets_are_refused_even_under_a_broad_prefix(target: str) -> None:
    top = target.split(".")[0]
    allowed = [top, "os", "torch", "builtins", "hydra", "shutil", "mypkg"]

    errors = target_errors({"encoder": {"_target_": target}}, allowed, base="$.model")

    (message,) = errors
    assert message.startswith(f"$.model.encoder._target_: `_target_` {target!r} is refused: ")
    assert "Nothing was imported." in message


@pytest.mark.parametrize("target", DANGEROUS)
def test_dangerous_targets_are_refused_with_no_allowlist(target: str) -> None:
    (message,) = target_errors({"_target_": target}, [])
    assert "is refused" in message


def test_every_refused_prefix_is_refused_whatever_is_allowed() -> None:
    for prefix in ALWAYS_REFUSED:
        (message,) = target_errors({"_target_": f"{prefix}.anything"}, [prefix, prefix.split(".")[0]])
        assert f"`{prefix}`" in message


def test_target_outside_the_allowlist_names_the_ini_option() -> None:
    errors = target_errors({"_target_": "evilpkg.models.Net"}, ["fixtures", "mypkg"], base="$.model")

    assert errors == [
        "$.model._target_: `_target_` 'evilpkg.models.Net' is outside the allowed module prefixes "
        "(fixtures, mypkg). Nothing was imported. If you trust it, add `ckpt_target_allow = evilpkg` to your "
        "pytest ini or pass --ckpt-target-allow evilpkg."
    ]


def test_no_allowlist_says_none_configured() -> None:
    (message,) = target_errors({"_target_": "fixtures.demo_models.DBNetLike"}, ["", ""])
    assert "(none configured)" in message
    assert "ckpt_target_allow = fixtures" in message


def test_allowed_targets_pass() -> None:
    section = {
        "_target_": "fixtures.demo_models.DBNetLike",
        "encoder": {"_target_": "torch.nn.Identity"},
        "layers": [{"_target_": "mypkg.blocks.Block"}],
    }
    assert target_errors(section, ["fixtures", "torch.nn", "mypkg"]) == []
    assert target_errors({"name": "no targets at all"}, []) == []


def test_lookalike_prefix_is_not_allowed() -> None:
    (message,) = target_errors({"_target_": "fixturesevil.Net"}, ["fixtures"])
    assert "outside the allowed module prefixes" in message


def test_every_bad_target_is_reported_once() -> None:
    section = {
        "_target_": "os.system",
        "encoder": {"_target_": "other.Enc"},
        "head": {"_target_": "mypkg.Head"},
        "decoder": {"_target_": 42},
        "neck": {"_target_": None},
        "extra": [{"_target_": ["os", "system"]}],
    }
    errors = target_errors(section, ["mypkg"], base="$.model")
    assert [e.split(":")[0] for e in errors] == [
        "$.model._target_",
        "$.model.encoder._target_",
        "$.model.decoder._target_",
        "$.model.neck._target_",
        "$.model.extra[0]._target_",
    ]
    assert errors[2] == "$.model.decoder._target_: `_target_` must be a dotted import path string, found int"
    assert errors[3].endswith("found NoneType")
    assert errors[4].endswith("found list")


@given(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3))
def test_target_errors_never_crash(target: str, allowed: list[str]) -> None:
    errors = target_errors({"_target_": target}, allowed)
    assert len(errors) <= 1
    assert all(e.startswith("$._target_: ") for e in errors)


@given(st.sampled_from(ALWAYS_REFUSED), st.lists(SEGMENT.filter(bool), max_size=2))
def test_refused_prefixes_win_over_any_allowlist(prefix: str, rest: list[str]) -> None:
    target = ".".join([prefix, *rest])
    (message,) = target_errors({"_target_": target}, [target, prefix, prefix.split(".")[0]])
    assert "is refused" in message


def test_checking_targets_imports_nothing() -> None:
    name = "some_never_installed_pkg_xyz"
    before = set(sys.modules)
    section: dict[str, Any] = {
        "_target_": f"{name}.Model",
        "encoder": {"_target_": f"{name}.sub.Encoder"},
        "head": {"_target_": "colorsys.rgb_to_hls"},  # importable, and not imported by checking it
    }
    had_colorsys = "colorsys" in sys.modules

    errors = target_errors(section, [name])  # allowed, so only the allowlist decides: no import needed

    assert errors == [
        "$.head._target_: `_target_` 'colorsys.rgb_to_hls' is outside the allowed module prefixes "
        f"({name}). Nothing was imported. If you trust it, add `ckpt_target_allow = colorsys` to your "
        "pytest ini or pass --ckpt-target-allow colorsys."
    ]
    assert name not in sys.modules
    assert f"{name}.sub" not in sys.modules
    assert ("colorsys" in sys.modules) == had_colorsys
    assert set(sys.modules) - before == set()

    (message,) = target_errors({"_target_": f"{name}.Model"}, [])
    assert "Nothing was imported" in message
    assert name not in sys.modules


# ------------------------------------------------- what Hydra would resolve after the check (issue 6)


@pytest.mark.parametrize(
    "value",
    [
        "${oc.create:{_target_: builtins.open, _args_: [x, w]}}",  # an escaped `\${` in a sidecar leaves this
        "${oc.decode:'{_target_: os.system}'}",
        "prefix ${oc.env:HOME} suffix",
        "${${name}:x}",
    ],
)
def test_a_string_still_holding_an_interpolation_is_refused(value: str) -> None:
    (message,) = target_errors({"_target_": "mypkg.Net", "extra": {"deep": [value]}}, ["mypkg"], base="$.model")
    assert message.startswith("$.model.extra.deep[0]: ")
    assert "is an interpolation that would be resolved only when the model is built" in message
    assert "Nothing was imported." in message


def test_an_interpolated_target_is_refused_once() -> None:
    (message,) = target_errors({"_target_": "mypkg.${oc.env:T}"}, ["mypkg"])
    assert message == (
        "$._target_: `_target_` 'mypkg.${oc.env:T}' is an interpolation: what it names would be known only when "
        "the model is built, after this check. Nothing was imported."
    )


@pytest.mark.parametrize(
    ("target", "reached"),
    [
        ("mypkg.torch.save", "torch.save"),
        ("mypkg.models.os.system", "os.system"),
        ("mypkg.subprocess.Popen", "subprocess.Popen"),
        ("mypkg.nets.builtins.eval", "builtins.eval"),
        ("mypkg.hydra.utils.instantiate", "hydra.utils.instantiate"),
    ],
)
def test_a_refused_module_reached_through_an_allowed_package_is_refused(target: str, reached: str) -> None:
    """Hydra resolves ``mypkg.torch.save`` as ``getattr(mypkg, "torch").save`` when mypkg imports torch."""
    (message,) = target_errors({"_target_": target}, ["mypkg"])
    assert f"reaches `{reached}` through the allowed package `mypkg`" in message
    assert "Nothing was imported." in message


def test_a_module_of_your_own_with_a_refused_name_is_allowed_by_name() -> None:
    """``mypkg.io`` may be your own module: allowing it by name admits what lies below it."""
    (message,) = target_errors({"_target_": "mypkg.io.Reader"}, ["mypkg"])
    assert "allow it by name (ckpt_target_allow = mypkg.io)" in message
    assert target_errors({"_target_": "mypkg.io.Reader"}, ["mypkg", "mypkg.io"]) == []
    assert target_errors({"_target_": "mypkg.models.Net"}, ["mypkg"]) == []  # an ordinary path stays allowed


def test_a_dunder_attribute_is_refused() -> None:
    (message,) = target_errors({"_target_": "mypkg.__builtins__.get"}, ["mypkg"])
    assert "goes through the private attribute `__builtins__`" in message


@given(st.sampled_from(ALWAYS_REFUSED), st.lists(SEGMENT.filter(lambda s: s and not s.startswith("__")), max_size=2))
def test_anything_refused_stays_refused_below_an_allowed_package(refused: str, rest: list[str]) -> None:
    target = ".".join(["mypkg", "models", refused, *rest])
    (message,) = target_errors({"_target_": target}, ["mypkg"])
    assert f"`{refused}` is refused" in message
