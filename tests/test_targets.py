"""ckptgate.targets: which `_target_` / `class_path` import paths a config may name, decided before anything is
imported (by name), then checked again on what the name really is (resolved, just before building)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from ckptgate.targets import (
    ALWAYS_REFUSED,
    DEFAULT_ALLOWED,
    PRIVATE_REFUSED,
    TARGET_KEYS,
    Target,
    find_interpolations,
    find_targets,
    matches,
    name_errors,
    narrowest_prefix,
    refused_prefix,
    resolve,
    resolved_errors,
    target_errors,
)
from hypothesis import given
from hypothesis import strategies as st

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=0, max_size=6)
DOTTED = st.lists(SEGMENT, min_size=1, max_size=4).map(".".join)
NOTHING_IMPORTED = "Nothing was imported."
NOTHING_CALLED = "Nothing was called."


def checked(section: Any, allowed: Any, **kwargs: Any) -> list[str]:
    """``target_errors``, asserting it imported nothing (the by-name check never needs to)."""
    before = set(sys.modules)
    errors = target_errors(section, allowed, **kwargs)
    assert set(sys.modules) - before == set(), "the by-name check imported something"
    return errors


def _codes_of(obj: Any) -> set[Any]:
    """The code objects a call to ``obj`` would run first (a function, a method, a class's constructors)."""
    candidates = [obj, getattr(obj, "__func__", None)]
    for klass in getattr(obj, "__mro__", ())[:-1]:  # a class: its own and inherited constructors, not object's
        candidates += [vars(klass).get(name) for name in ("__init__", "__new__", "__call__")]
    return {code for c in candidates if (code := getattr(getattr(c, "__func__", c), "__code__", None)) is not None}


@contextmanager
def calls_to(obj: Any) -> Iterator[list[str]]:
    """Records every call of ``obj`` (Python code or a C function) made while the block runs."""
    codes, seen, previous = _codes_of(obj), [], sys.getprofile()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if (event == "call" and frame.f_code in codes) or (event == "c_call" and arg is obj):
            seen.append(event)

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def test_the_call_spy_sees_calls() -> None:
    """The positive control of every "nothing was called" below: a Python function, a C function and a class."""
    import json
    import subprocess

    with calls_to(json.dumps) as python:
        json.dumps(1)
    with calls_to(sorted) as native:
        sorted([2, 1])
    with calls_to(subprocess.CompletedProcess) as klass:
        subprocess.CompletedProcess(["true"], 0)
    with calls_to(json.dumps) as not_called:
        json.loads("1")
    assert (python, native, klass, not_called) == (["call"], ["c_call"], ["call"], [])


@pytest.fixture
def make_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """An importable package of a fresh name whose ``__init__`` is the given source; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str) -> str:
        name = f"ckg_targets_{uuid.uuid4().hex[:8]}"
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(source)
        return name

    yield make
    for name in [name for name in sys.modules if name.startswith("ckg_targets_")]:
        del sys.modules[name]


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


def test_find_targets_finds_every_target_and_class_path_with_its_path() -> None:
    section = {
        "_target_": "mypkg.Net",
        "encoder": {"_target_": "mypkg.enc.Encoder", "params": {"act": {"_target_": "torch.nn.ReLU"}}},
        "heads": [{"_target_": "mypkg.Head"}, {"name": "plain"}, [{"_target_": "mypkg.Deep"}]],
        "my key": {"_target_": "mypkg.Odd"},
        "name": "_target_",  # a value, not a key
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}},
        "decoder": {"class_path": "mypkg.Dec", "init_args": {"block": {"class_path": "mypkg.Block"}}},
        "label": "class_path",  # a value, not a key
    }
    found = find_targets(section, "$.model")
    assert found == [
        ("$.model._target_", "mypkg.Net"),
        ("$.model.encoder._target_", "mypkg.enc.Encoder"),
        ("$.model.encoder.params.act._target_", "torch.nn.ReLU"),
        ("$.model.heads[0]._target_", "mypkg.Head"),
        ("$.model.heads[2][0]._target_", "mypkg.Deep"),
        ('$.model["my key"]._target_', "mypkg.Odd"),
        ("$.model.optimizer.class_path", "torch.optim.AdamW"),
        ("$.model.decoder.class_path", "mypkg.Dec"),
        ("$.model.decoder.init_args.block.class_path", "mypkg.Block"),
    ]
    assert [item.key for item in found] == ["_target_"] * 6 + ["class_path"] * 3


def test_found_targets_unpack_as_path_and_value() -> None:
    """Callers that only want the values (resultcache hashes their packages) unpack two items."""
    ((path, value),) = find_targets({"class_path": "mypkg.Net"})
    assert (path, value) == ("$.class_path", "mypkg.Net")
    assert Target("$._class_path", "mypkg.Net").key == "_class_path"  # a target found elsewhere names its own key


def test_find_targets_on_non_containers() -> None:
    assert find_targets("os.system") == []
    assert find_targets(None) == []
    assert find_targets([]) == []


def test_find_interpolations_leaves_target_and_class_path_values_to_the_name_check() -> None:
    section = {
        "_target_": "mypkg.${oc.env:T}",
        "optimizer": {"class_path": "torch.optim.${oc.env:O}", "init_args": {"lr": "${oc.env:LR}"}},
    }
    assert find_interpolations(section) == [("$.optimizer.init_args.lr", "${oc.env:LR}")]
    errors = checked(section, (*DEFAULT_ALLOWED, "mypkg"))
    assert [error.split(":")[0] for error in errors] == [
        "$.optimizer.init_args.lr",
        "$._target_",
        "$.optimizer.class_path",
    ]
    assert "`class_path` 'torch.optim.${oc.env:O}' is an interpolation" in errors[2]
    assert all(NOTHING_IMPORTED in error for error in errors)


# ------------------------------------------------------------------------- the narrowest allowed prefix


@pytest.mark.parametrize(
    ("target", "narrowest"),
    [
        ("torch.optim.AdamW", "torch.optim"),
        ("torch.optim.lr_scheduler.OneCycleLR", "torch.optim.lr_scheduler"),
        ("evilpkg.models.Net", "evilpkg.models"),
        ("foo.Bar", "foo"),
        ("mypkg.models.Net.from_config", "mypkg.models.Net"),
        ("single", "single"),
    ],
)
def test_narrowest_prefix_is_the_module_path(target: str, narrowest: str) -> None:
    assert narrowest_prefix(target) == narrowest


def test_target_outside_the_allowlist_names_the_narrowest_prefix() -> None:
    errors = checked({"_target_": "evilpkg.models.Net"}, ["fixtures", "mypkg"], base="$.model")

    assert errors == [
        "$.model._target_: `_target_` 'evilpkg.models.Net' is outside the allowed module prefixes "
        "(fixtures, mypkg). Nothing was imported. If you trust it, add `ckpt_target_allow = evilpkg.models` to "
        "your pytest ini or pass --ckpt-target-allow evilpkg.models."
    ]


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_a_torch_target_outside_the_allowlist_never_invites_allowing_all_of_torch(key: str) -> None:
    (message,) = checked({key: "torch.utils.data.DataLoader"}, ["mypkg"])
    assert message == (
        f"$.{key}: `{key}` 'torch.utils.data.DataLoader' is outside the allowed module prefixes (mypkg). Nothing "
        "was imported. If you trust it, add `ckpt_target_allow = torch.utils.data` to your pytest ini or pass "
        "--ckpt-target-allow torch.utils.data."
    )
    assert "`ckpt_target_allow = torch`" not in message


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_resolved_hint_names_the_module_that_defines_it(key: str, make_package: Callable[[str], str]) -> None:
    """``mypkg.make = json.decoder.JSONDecoder`` passes by name; once resolved, the hint names json.decoder."""
    import json.decoder

    package = make_package("from json.decoder import JSONDecoder as make\n")
    assert checked({key: f"{package}.make"}, [package]) == []

    with calls_to(json.decoder.JSONDecoder) as calls:
        (message,) = resolved_errors({key: f"{package}.make"}, [package], base="$.model")

    assert message == (
        f"$.model.{key}: `{key}` '{package}.make' is really 'json.decoder.JSONDecoder', outside the allowed module "
        "prefixes. Nothing was called. If you trust it, allow its module (ckpt_target_allow = json.decoder)."
    )
    assert calls == []


# ------------------------------------------------------------------------- the defaults: real configs pass


def test_default_allowed_is_the_standard_constructor_namespaces() -> None:
    assert DEFAULT_ALLOWED == ("torch.optim", "torch.optim.lr_scheduler", "torch.nn")


def ocr_config(package: str) -> dict[str, Any]:
    """A real OCR model section: the model's own package, then torch's optimizer, scheduler, loss, activation."""
    return {
        "_target_": f"{package}.Net",
        "encoder": {"act": {"_target_": "torch.nn.functional.gelu", "_partial_": True}, "norm": "bn"},
        "loss": {"_target_": "torch.nn.CTCLoss", "blank": 0, "zero_infinity": True},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 0.001, "weight_decay": 0.0001, "_partial_": True},
        "scheduler": {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.01, "_partial_": True},
        "head": {"class_path": "torch.nn.Linear", "init_args": {"in_features": 8, "out_features": 2}},
        "warmup": {"class_path": "torch.optim.lr_scheduler.LinearLR", "init_args": {"start_factor": 0.1}},
    }


def test_a_real_config_passes_with_the_defaults(make_package: Callable[[str], str]) -> None:
    package = make_package("import torch\n\nclass Net(torch.nn.Module):\n    pass\n")
    section = ocr_config(package)

    assert checked(section, (*DEFAULT_ALLOWED, package)) == []
    assert resolved_errors(section, (*DEFAULT_ALLOWED, package)) == []


def test_without_the_defaults_the_optimizer_is_refused_with_a_narrow_hint(make_package: Callable[[str], str]) -> None:
    package = make_package("class Net:\n    pass\n")
    errors = checked(ocr_config(package), [package])
    assert len(errors) == 6
    assert "`_target_` 'torch.optim.AdamW' is outside the allowed module prefixes" in errors[2]
    assert errors[2].endswith(
        "`ckpt_target_allow = torch.optim` to your pytest ini or pass --ckpt-target-allow torch.optim."
    )


def _public_constructors() -> list[str]:
    """Every public class and function torch exposes in the default namespaces (as a config names them)."""
    import inspect

    import torch.nn.functional
    import torch.optim.lr_scheduler

    names = [f"torch.nn.{name}" for name in torch.nn.modules.__all__]
    names += [f"torch.optim.{name}" for name in torch.optim.__all__ if inspect.isclass(getattr(torch.optim, name))]
    names += [f"torch.optim.lr_scheduler.{name}" for name in torch.optim.lr_scheduler.__all__]
    names += [f"torch.nn.init.{name}" for name in ("kaiming_normal_", "xavier_uniform_", "trunc_normal_", "zeros_")]
    names += [f"torch.nn.functional.{name}" for name in ("relu", "gelu", "silu", "softmax", "leaky_relu", "elu")]
    return names


def test_every_public_constructor_of_the_default_namespaces_passes_both_checks() -> None:
    """The defaults admit what real configs name: ~150 classes of torch.nn, torch.optim and its schedulers,
    and the functional activations (a C kernel's module is private: gelu is torch._C._nn.gelu)."""
    names = _public_constructors()
    assert len(names) > 100
    refused = {
        name: target_errors({"_target_": name}, DEFAULT_ALLOWED) + resolved_errors({"_target_": name}, DEFAULT_ALLOWED)
        for name in names
    }
    assert {name: errors for name, errors in refused.items() if errors} == {}


def test_resolving_follows_hydra() -> None:
    """``resolve`` finds what ``hydra.utils.instantiate`` would build: an attribute before a submodule
    (``torch.nn.utils.spectral_norm`` is the function; the module of that name sits beside it)."""
    from hydra._internal.utils import _locate

    for path in (
        "torch.nn.utils.spectral_norm",
        "torch.optim.AdamW",
        "torch.nn.functional.gelu",
        "json.decoder.JSONDecoder",
        "os.path.join",
    ):
        assert resolve(path) is _locate(path), path
    assert resolved_errors({"_target_": "torch.nn.utils.spectral_norm"}, DEFAULT_ALLOWED) == []


# ----------------------------------------------------------------- the defaults open no door (issue 1)

WALKS_OUT_OF_THE_DEFAULTS = [
    ("torch.nn.modules.module.torch.save", "torch.save"),
    ("torch.optim.optimizer.torch.load", "torch.load"),
    ("torch.nn.modules.module.torch.hub.load", "torch.hub"),
    ("torch.optim.lr_scheduler.torch.jit.load", "torch.jit.load"),
    ("torch.nn.functional.importlib.import_module", "importlib"),
    ("torch.nn.parallel.distributed.os.system", "os"),
    ("torch.nn.modules.module.torch.ops.load_library", "torch.ops"),
    ("torch.nn.modules.module.torch.utils.cpp_extension.load_inline", "torch.utils.cpp_extension"),
    ("torch.nn.modules.module.torch.distributed.rpc.rpc_sync", "torch.distributed"),
    ("torch.nn.modules.module.torch._inductor.codecache.PyCodeCache.load", "torch._inductor"),
    ("torch.nn.attention._fa3.importlib.import_module", "torch.nn.attention._fa3"),
]


@pytest.mark.parametrize("key", TARGET_KEYS)
@pytest.mark.parametrize(("target", "refused"), WALKS_OUT_OF_THE_DEFAULTS)
def test_walking_out_of_a_default_namespace_is_refused_by_name(target: str, refused: str, key: str) -> None:
    (message,) = checked({key: target}, DEFAULT_ALLOWED)
    assert message.startswith(f"$.{key}: `{key}` {target!r} ")
    assert f"{refused}` is refused" in message or f"`{refused}`" in message
    assert NOTHING_IMPORTED in message


# what the name check cannot see (an attribute walk to a module that is not refused by name): the object's
# real module is outside the defaults, or refused
WALKS_ONLY_RESOLVING_SEES = [
    ("torch.nn.parallel.distributed.dist.init_process_group", "and `torch.distributed` is refused"),
    ("torch.nn.functional.boolean_dispatch", "and `torch._jit_internal` is refused"),
    ("torch.optim.lr_scheduler.partial", "'functools.partial', outside the allowed module prefixes"),
    ("torch.nn.modules.module.torch.compile", "'torch.compile', outside the allowed module prefixes"),
    ("torch.nn.modules.module.torch.from_file", "outside the allowed module prefixes"),
]


@pytest.mark.parametrize("key", TARGET_KEYS)
@pytest.mark.parametrize(("target", "fragment"), WALKS_ONLY_RESOLVING_SEES)
def test_walking_out_of_a_default_namespace_is_refused_once_resolved(target: str, fragment: str, key: str) -> None:
    assert checked({key: target}, DEFAULT_ALLOWED) == []
    obj = resolve(target)
    with calls_to(obj) as calls:
        (message,) = resolved_errors({key: target}, DEFAULT_ALLOWED)
    assert message.startswith(f"$.{key}: `{key}` {target!r} is really ")
    assert fragment in message
    assert NOTHING_CALLED in message
    assert calls == []


def test_the_flash_attention_registrar_really_imports_what_a_string_names(
    make_package: Callable[[str], str], tmp_path: Path
) -> None:
    """The positive control of the torch.nn audit: ``register_flash_attention_fa3(module_path=...)`` imports any
    module (a config could name a file it planted), so its namespace is refused, defaults or not."""
    from torch.nn.attention import _fa3

    marker = tmp_path / "imported.marker"
    package = make_package(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(RuntimeError, match="does not expose FA3"):
        _fa3.register_flash_attention_fa3(module_path=package)
    assert marker.exists()

    target = "torch.nn.attention._fa3.register_flash_attention_fa3"
    section = {"_target_": "torch.nn.Identity", "attn": {"_target_": target, "module_path": "outputs.run.evil"}}
    (message,) = checked(section, DEFAULT_ALLOWED)
    assert message.startswith(f"$.attn._target_: `_target_` {target!r} is refused: `torch.nn.attention._fa3` can ")
    assert "outputs" not in sys.modules


# ------------------------------------------------------------------- the refusal list, pinned (issue 4)

# Each is named here, literally: deleting an entry of ALWAYS_REFUSED (or PRIVATE_REFUSED) makes the tests
# below fail, naming the target that got through. Never build this list from the module under test.
DANGEROUS = (
    "os.system",
    "os.popen",
    "os.execv",
    "posix.system",
    "nt.system",
    "sys.exit",
    "subprocess.Popen",
    "subprocess.run",
    "shutil.rmtree",
    "shutil.copyfile",
    "builtins.eval",
    "builtins.exec",
    "builtins.open",
    "builtins.__import__",
    "io.open",
    "_io.FileIO",
    "pathlib.Path.write_text",
    "pickle.loads",
    "_pickle.loads",
    "marshal.loads",
    "ctypes.CDLL",
    "socket.socket",
    "webbrowser.open",
    "code.interact",
    "codeop.compile_command",
    "pty.spawn",
    "timeit.timeit",
    "tempfile.mkstemp",
    "logging.FileHandler",
    "multiprocessing.Process",
    "importlib.import_module",
    "runpy.run_path",
    "urllib.request.urlretrieve",
    "http.client.HTTPConnection",
    "ftplib.FTP",
    "tarfile.open",
    "zipfile.ZipFile",
    "shelve.open",
    "pkgutil.resolve_name",
    "pydoc.locate",
    "zipimport.zipimporter",
    "site.addsitedir",
    "cProfile.run",
    "pdb.run",
    "doctest.testfile",
    "torch.save",
    "torch.load",
    "torch.hub.load",
    "torch.jit.load",
    "torch.serialization.load",
    "torch.utils.cpp_extension.load_inline",
    "torch.utils.collect_env.run",
    "torch.package.PackageImporter",
    "torch.multiprocessing.spawn",
    "torch.utils.model_zoo.load_url",
    "torch.ops.load_library",
    "torch.classes.load_library",
    "torch.distributed.init_process_group",
    "torch.distributed.rpc.rpc_sync",
    "torch._inductor.codecache.PyCodeCache.load",
    "torch.fx.graph_module._exec_with_source",
    "torch.nn.attention._fa3.register_flash_attention_fa3",
    "torch.nn.attention._fa4.register_flash_attention_fa4",
    "torch.nn.attention._registry.activate_flash_attention_impl",
    "torch.nn.attention.register_flash_attention_impl",
    "torch.nn.attention.activate_flash_attention_impl",
    "torch.nn.attention.restore_flash_attention_impl",
    "torch.nn.utils._deprecation_utils.lazy_deprecated_import",
    "torch.nn.modules.module.register_module_forward_pre_hook",
    "torch.nn.modules.module.register_module_forward_hook",
    "torch.nn.modules.module.register_module_backward_hook",
    "torch.nn.modules.module.register_module_full_backward_pre_hook",
    "torch.nn.modules.module.register_module_full_backward_hook",
    "torch.nn.modules.module.register_module_buffer_registration_hook",
    "torch.nn.modules.module.register_module_module_registration_hook",
    "torch.nn.modules.module.register_module_parameter_registration_hook",
    "torch.optim.optimizer.register_optimizer_step_pre_hook",
    "torch.optim.optimizer.register_optimizer_step_post_hook",
    "lightning.pytorch.core.module.LightningModule.load_from_checkpoint",
    "lightning.pytorch.core.datamodule.LightningDataModule.load_from_checkpoint",
    "lightning.pytorch.core.saving.load_hparams_from_yaml",
    "lightning.fabric.utilities.cloud_io._load",
    "pytorch_lightning.core.module.LightningModule.load_from_checkpoint",
    "pytorch_lightning.core.datamodule.LightningDataModule.load_from_checkpoint",
    "pytorch_lightning.core.saving.load_hparams_from_yaml",
    "lightning_fabric.utilities.cloud_io._load",
    "hydra.utils.call",
    "hydra.utils.instantiate",
    "hydra.utils.get_method",
    "hydra.utils.get_class",
    "hydra.utils.get_object",
    "hydra._internal.utils._locate",
)
# The widest allowances a user could give (each target's own package and module are added to them).
WIDEST = (*DEFAULT_ALLOWED, "builtins", "os", "sys", "torch", "hydra", "lightning", "pytorch_lightning", "mypkg")
# Not importable here (Windows only): the by-name check is what stops it, and the resolved check leaves it to
# the builder, whose import fails.
NOT_HERE = ("nt.system",)
# The resolved check imports modules with it: a call to it proves nothing.
THE_CHECK_USES = ("importlib.import_module",)


def widest_for(target: str) -> tuple[str, ...]:
    return (*WIDEST, target.split(".")[0], narrowest_prefix(target), target)


def test_the_pinned_list_is_long_and_names_every_refusal() -> None:
    """A new entry of ALWAYS_REFUSED needs a dangerous callable of its own in DANGEROUS, so that it is pinned."""
    assert len(DANGEROUS) >= 41
    assert len(set(DANGEROUS)) == len(DANGEROUS)
    unpinned = [prefix for prefix in ALWAYS_REFUSED if not any(matches(target, prefix) for target in DANGEROUS)]
    assert unpinned == []
    only_private = [target for target in DANGEROUS if refused_prefix(target) not in (*ALWAYS_REFUSED, None)]
    assert {target.split(".")[0] for target in only_private} == set(PRIVATE_REFUSED)


@pytest.mark.parametrize("key", TARGET_KEYS)
@pytest.mark.parametrize("target", DANGEROUS)
def test_a_dangerous_target_is_refused_by_name_whatever_is_allowed(target: str, key: str) -> None:
    section = {"_target_": "mypkg.Net", "encoder": {key: target, "_args_": ["touch /tmp/x"]}}

    errors = checked(section, widest_for(target), base="$.model")

    assert len(errors) == 1, f"{target} got through the by-name check: {errors}"
    (message,) = errors
    assert message.startswith(f"$.model.encoder.{key}: `{key}` {target!r} is refused: `"), message
    assert message.endswith(NOTHING_IMPORTED)


@pytest.mark.parametrize("target", DANGEROUS)
def test_a_dangerous_target_is_refused_by_name_with_no_allowlist(target: str) -> None:
    (message,) = checked({"class_path": target}, [])
    assert message.startswith(f"$.class_path: `class_path` {target!r} is refused: `"), message
    assert message.endswith(NOTHING_IMPORTED)


@pytest.mark.parametrize("key", TARGET_KEYS)
@pytest.mark.parametrize("target", DANGEROUS)
def test_a_dangerous_target_is_refused_once_resolved_whatever_is_allowed(target: str, key: str) -> None:
    """The second line: an alias of it under an allowed name would pass the by-name check; its real module is
    refused (or outside every prefix), and nothing is called."""
    if target in NOT_HERE:
        assert resolved_errors({key: target}, widest_for(target)) == []
        return
    obj = resolve(target)
    with calls_to(obj) as calls:
        errors = resolved_errors({key: target}, widest_for(target), base="$.model")

    assert len(errors) == 1, f"{target} got through the resolved check: {errors}"
    (message,) = errors
    assert message.startswith(f"$.model.{key}: `{key}` {target!r} is really "), message
    assert message.endswith(NOTHING_CALLED) or f"{NOTHING_CALLED} If you trust it" in message
    assert calls == [] or target in THE_CHECK_USES


# ------------------------------------------------------------------------------------- target_errors


def test_every_refused_prefix_is_refused_whatever_is_allowed() -> None:
    for prefix in ALWAYS_REFUSED:
        (message,) = checked({"_target_": f"{prefix}.anything"}, [prefix, prefix.split(".")[0]])
        assert f"`{prefix}`" in message


@pytest.mark.parametrize("package", PRIVATE_REFUSED)
@pytest.mark.parametrize("key", TARGET_KEYS)
def test_a_private_name_of_torch_or_hydra_is_refused_whatever_is_allowed(package: str, key: str) -> None:
    target = f"{package}.utils._secret.run"
    (message,) = checked({key: target}, [package, f"{package}.utils", target])
    assert message == (
        f"$.{key}: `{key}` {target!r} is refused: `{package}.utils._secret` is a private part of its package, home of "
        "importers, code generators and loaders; never a model. Nothing was imported."
    )


def test_no_allowlist_says_none_configured() -> None:
    (message,) = checked({"_target_": "fixtures.demo_models.DBNetLike"}, ["", ""])
    assert "(none configured)" in message
    assert "ckpt_target_allow = fixtures.demo_models" in message


def test_allowed_targets_pass() -> None:
    section = {
        "_target_": "fixtures.demo_models.DBNetLike",
        "encoder": {"_target_": "torch.nn.Identity"},
        "layers": [{"_target_": "mypkg.blocks.Block"}, {"class_path": "mypkg.blocks.Other"}],
    }
    assert checked(section, ["fixtures", "torch.nn", "mypkg"]) == []
    assert checked({"name": "no targets at all"}, []) == []


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_lookalike_prefix_is_not_allowed(key: str) -> None:
    (message,) = checked({key: "fixturesevil.Net"}, ["fixtures"])
    assert "outside the allowed module prefixes" in message
    assert NOTHING_IMPORTED in message


def test_every_bad_target_is_reported_once() -> None:
    section = {
        "_target_": "os.system",
        "encoder": {"_target_": "other.Enc"},
        "head": {"_target_": "mypkg.Head"},
        "decoder": {"_target_": 42},
        "neck": {"_target_": None},
        "extra": [{"_target_": ["os", "system"]}],
        "optimizer": {"class_path": {"nested": "torch.optim.AdamW"}},
        "scheduler": {"class_path": "subprocess.run"},
    }
    errors = checked(section, ["mypkg"], base="$.model")
    assert [e.split(":")[0] for e in errors] == [
        "$.model._target_",
        "$.model.encoder._target_",
        "$.model.decoder._target_",
        "$.model.neck._target_",
        "$.model.extra[0]._target_",
        "$.model.optimizer.class_path",
        "$.model.scheduler.class_path",
    ]
    assert errors[2] == "$.model.decoder._target_: `_target_` must be a dotted import path string, found int"
    assert errors[3].endswith("found NoneType")
    assert errors[4].endswith("found list")
    assert errors[5] == "$.model.optimizer.class_path: `class_path` must be a dotted import path string, found dict"
    assert errors[6].startswith("$.model.scheduler.class_path: `class_path` 'subprocess.run' is refused: ")


def test_a_lightning_cli_section_is_checked_like_a_hydra_one() -> None:
    """``{class_path, init_args}`` nests as ``_target_`` does: every class_path is found and checked."""
    section = {
        "class_path": "mypkg.models.LitOCR",
        "init_args": {
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001}},
            "backbone": {"class_path": "mypkg.models.torch.hub.load", "init_args": {"repo": "evil/repo"}},
            "head": {"class_path": "os.system", "init_args": {"command": "touch x"}},
        },
    }
    errors = checked(section, (*DEFAULT_ALLOWED, "mypkg"), base="$.model")
    assert [e.split(":")[0] for e in errors] == [
        "$.model.init_args.backbone.class_path",
        "$.model.init_args.head.class_path",
    ]
    assert (
        "`class_path` 'mypkg.models.torch.hub.load' reaches `torch.hub.load` through the allowed package `mypkg`"
        in errors[0]
    )
    assert "`class_path` 'os.system' is refused: `os` can run commands" in errors[1]


@given(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3), st.sampled_from(TARGET_KEYS))
def test_target_errors_never_crash(target: str, allowed: list[str], key: str) -> None:
    errors = checked({key: target}, allowed)
    assert len(errors) <= 1
    assert all(e.startswith(f"$.{key}: ") for e in errors)


@given(st.sampled_from(ALWAYS_REFUSED), st.lists(SEGMENT.filter(bool), max_size=2), st.sampled_from(TARGET_KEYS))
def test_refused_prefixes_win_over_any_allowlist(prefix: str, rest: list[str], key: str) -> None:
    target = ".".join([prefix, *rest])
    (message,) = checked({key: target}, [target, prefix, prefix.split(".")[0], *DEFAULT_ALLOWED])
    assert "is refused" in message


def test_checking_targets_imports_nothing() -> None:
    name = "some_never_installed_pkg_xyz"
    before = set(sys.modules)
    section: dict[str, Any] = {
        "_target_": f"{name}.Model",
        "encoder": {"_target_": f"{name}.sub.Encoder"},
        "head": {"_target_": "colorsys.rgb_to_hls"},  # importable, and not imported by checking it
        "opt": {"class_path": f"{name}.opt.Optim"},
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
    assert NOTHING_IMPORTED in message
    assert name not in sys.modules


def test_name_errors_checks_a_target_found_elsewhere() -> None:
    """A route that reads a class from outside the section (``_class_path`` of stored hyperparameters)."""
    before = set(sys.modules)
    (message,) = name_errors(Target("$._class_path", "os.system"), ["os"])
    assert message.startswith("$._class_path: `_class_path` 'os.system' is refused: `os` can run commands")
    assert message.endswith(NOTHING_IMPORTED)
    assert name_errors(Target("$._class_path", "mypkg.Lit"), ["mypkg", ""]) == []
    assert set(sys.modules) - before == set()


# ------------------------------------------------- what Hydra would resolve after the check (issue 6)


@pytest.mark.parametrize(
    "value",
    [
        "${oc.create:{_target_: builtins.open, _args_: [x, w]}}",  # an escaped `\${` in a sidecar leaves this
        "${oc.decode:'{_target_: os.system}'}",
        "${oc.create:{class_path: builtins.open, init_args: {file: x, mode: w}}}",
        "prefix ${oc.env:HOME} suffix",
        "${${name}:x}",
    ],
)
def test_a_string_still_holding_an_interpolation_is_refused(value: str) -> None:
    (message,) = checked({"_target_": "mypkg.Net", "extra": {"deep": [value]}}, ["mypkg"], base="$.model")
    assert message.startswith("$.model.extra.deep[0]: ")
    assert "is an interpolation that would be resolved only when the model is built" in message
    assert NOTHING_IMPORTED in message


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_an_interpolated_target_is_refused_once(key: str) -> None:
    (message,) = checked({key: "mypkg.${oc.env:T}"}, ["mypkg"])
    assert message == (
        f"$.{key}: `{key}` 'mypkg.${{oc.env:T}}' is an interpolation: what it names would be known only when "
        "the model is built, after this check. Nothing was imported."
    )


@pytest.mark.parametrize("key", TARGET_KEYS)
@pytest.mark.parametrize(
    ("target", "reached"),
    [
        ("mypkg.torch.save", "torch.save"),
        ("mypkg.models.os.system", "os.system"),
        ("mypkg.subprocess.Popen", "subprocess.Popen"),
        ("mypkg.nets.builtins.eval", "builtins.eval"),
        ("mypkg.hydra.utils.instantiate", "hydra.utils.instantiate"),
        ("mypkg.torch._inductor.codecache.PyCodeCache.load", "torch._inductor.codecache.PyCodeCache.load"),
    ],
)
def test_a_refused_module_reached_through_an_allowed_package_is_refused(target: str, reached: str, key: str) -> None:
    """Hydra resolves ``mypkg.torch.save`` as ``getattr(mypkg, "torch").save`` when mypkg imports torch."""
    (message,) = checked({key: target}, ["mypkg"])
    assert message.startswith(f"$.{key}: `{key}` {target!r} reaches `{reached}` through the allowed package `mypkg`")
    assert NOTHING_IMPORTED in message


def test_a_module_of_your_own_with_a_refused_name_is_allowed_by_name() -> None:
    """``mypkg.io`` may be your own module: allowing it by name admits what lies below it."""
    (message,) = checked({"_target_": "mypkg.io.Reader"}, ["mypkg"])
    assert "allow it by name (ckpt_target_allow = mypkg.io)" in message
    assert checked({"_target_": "mypkg.io.Reader"}, ["mypkg", "mypkg.io"]) == []
    assert checked({"_target_": "mypkg.models.Net"}, ["mypkg"]) == []  # an ordinary path stays allowed


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_a_dunder_attribute_is_refused(key: str) -> None:
    (message,) = checked({key: "mypkg.__builtins__.get"}, ["mypkg"])
    assert message.startswith(
        f"$.{key}: `{key}` 'mypkg.__builtins__.get' goes through the private attribute `__builtins__`"
    )
    assert NOTHING_IMPORTED in message


@given(st.sampled_from(ALWAYS_REFUSED), st.lists(SEGMENT.filter(lambda s: s and not s.startswith("__")), max_size=2))
def test_anything_refused_stays_refused_below_an_allowed_package(refused: str, rest: list[str]) -> None:
    target = ".".join(["mypkg", "models", refused, *rest])
    (message,) = checked({"_target_": target}, ["mypkg"])
    assert f"`{refused}` is refused" in message


# ------------------------------------------------------------------------------------ resolved_errors


@pytest.mark.parametrize("key", TARGET_KEYS)
def test_an_alias_of_a_refused_callable_is_refused_once_resolved(key: str, make_package: Callable[[str], str]) -> None:
    """``mypkg.make = torch.save`` passes any check of the name; its ``__module__`` does not lie."""
    import torch

    package = make_package("import torch\n\nmake = torch.save\n")
    assert checked({key: f"{package}.make"}, [package]) == []

    with calls_to(torch.save) as calls:
        (message,) = resolved_errors({"head": {key: f"{package}.make"}}, (*DEFAULT_ALLOWED, package), base="$.model")

    assert message == (
        f"$.model.head.{key}: `{key}` '{package}.make' is really 'torch.serialization.save', and "
        "`torch.serialization` is refused: it can run commands, import code or touch files, and never builds a "
        "model. Nothing was called."
    )
    assert calls == []


def test_a_target_that_cannot_be_resolved_is_left_to_the_builder(make_package: Callable[[str], str]) -> None:
    """Whatever its import raises (not only ImportError), the builder imports it again and reports it."""
    broken = make_package("raise RuntimeError('broken on import')\n")
    section = {"_target_": f"{broken}.Net", "x": {"class_path": "torch.nn.NoSuchLayer"}, "y": {"_target_": "a..b"}}
    assert resolved_errors(section, (*DEFAULT_ALLOWED, broken)) == []
