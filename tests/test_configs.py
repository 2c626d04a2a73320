"""ckptgate.configs: the config that goes with a checkpoint, found in the order inference would find it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ckptgate import configs
from ckptgate.configs import (
    Candidate,
    ConfigNotFound,
    ResolvedConfig,
    SeveralConfigs,
    candidates,
    find_model_key,
    load_config,
    resolve_config,
)
from ckptgate.discovery import CheckpointRecord, discover
from ckptgate.documents import DocumentError
from ckptgate.errors import CheckError, first_line

CKPT = "run_20251017_215423/checkpoints/best.ckpt"
MODEL = {"architecture_name": "dbnet", "encoder": {"model_name": "mobilenetv3_small_050"}}


@pytest.fixture(autouse=True)
def fresh_listing_cache() -> Iterator[None]:
    configs.clear_cache()
    yield
    configs.clear_cache()


def write(path: Path, data: str | dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if isinstance(data, dict) else data, "utf-8")
    return path


def model_yaml(name: str) -> str:
    return f"model:\n  architecture_name: {name}\n  encoder:\n    model_name: mobilenetv3_small_050\n"


def record(root: Path, relpath: str = CKPT) -> CheckpointRecord:
    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
    (root / relpath).touch()
    return discover(root).by_relpath()[relpath]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------- search order


def test_candidates_in_order(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    assert [(c.kind, c.path.relative_to(tmp_path).as_posix()) for c in candidates(ckpt, tmp_path)] == [
        ("sidecar", "run_20251017_215423/checkpoints/best.config.json"),
        ("sidecar", "run_20251017_215423/checkpoints/best.config.yaml"),
        ("sidecar", "run_20251017_215423/checkpoints/best.config.yml"),
        ("sidecar", "run_20251017_215423/checkpoints/best.resolved.config.json"),
        ("hydra", "run_20251017_215423/checkpoints/.hydra/config.yaml"),
        ("hydra", "run_20251017_215423/.hydra/config.yaml"),
        ("hydra", ".hydra/config.yaml"),  # the outputs dir itself may be the run's folder
        ("cli", "run_20251017_215423/checkpoints/config.yaml"),
        ("hparams", "run_20251017_215423/checkpoints/hparams.yaml"),
        ("cli", "run_20251017_215423/config.yaml"),
        ("hparams", "run_20251017_215423/hparams.yaml"),
        ("cli", "config.yaml"),
        ("hparams", "hparams.yaml"),
    ]


def test_candidates_never_leave_the_outputs_dir(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    write(tmp_path / ".hydra" / "config.yaml", model_yaml("outside"))  # above the outputs dir
    write(tmp_path / "hparams.yaml", model_yaml("outside"))
    ckpt = record(root, "best.ckpt")
    assert [c.path.relative_to(root).as_posix() for c in candidates(ckpt, root)] == [
        "best.config.json",
        "best.config.yaml",
        "best.config.yml",
        "best.resolved.config.json",
        ".hydra/config.yaml",
        "config.yaml",
        "hparams.yaml",
    ]
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, root)
    assert "Looked in 8 places:" in str(info.value)  # and the logger folders of the outputs dir itself
    assert "outside" not in str(info.value) and str(tmp_path / "hparams.yaml") not in str(info.value)


def test_search_order_source_by_source(tmp_path: Path) -> None:
    """Every source present; remove the winner each time and the next one in the order wins."""
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    sources = [
        write(run / "checkpoints" / "best.config.json", {"model": {**MODEL, "architecture_name": "json"}}),
        write(run / "checkpoints" / "best.config.yaml", model_yaml("yaml")),
        write(run / "checkpoints" / "best.config.yml", model_yaml("yml")),
        write(
            run / "checkpoints" / "best.resolved.config.json",
            {"model": {**MODEL, "architecture_name": "resolved"}},
        ),
        write(run / ".hydra" / "config.yaml", model_yaml("hydra")),
        write(run / "hparams.yaml", model_yaml("hparams")),
        write(run / "lightning_logs" / "version_0" / "hparams.yaml", model_yaml("logger")),
    ]
    expected = [
        ("sidecar", "json"),
        ("sidecar", "yaml"),
        ("sidecar", "yml"),
        ("sidecar", "resolved"),
        ("hydra", "hydra"),
        ("hparams", "hparams"),
        ("hparams", "logger"),
    ]
    for source, (kind, name) in zip(sources, expected, strict=True):
        configs.clear_cache()
        found = resolve_config(ckpt, tmp_path)
        assert (found.kind, found.path, found.model) == (kind, source, {**MODEL, "architecture_name": name})
        assert found.where == source.relative_to(tmp_path).as_posix()
        source.unlink()
    configs.clear_cache()
    with pytest.raises(ConfigNotFound):
        resolve_config(ckpt, tmp_path)


def test_hydra_config_of_the_nearest_ancestor(tmp_path: Path) -> None:
    relpath = "sweep/2025-10-17/21-54-23/lightning_logs/version_0/checkpoints/epoch=0-step=3.ckpt"
    ckpt = record(tmp_path, relpath)
    write(tmp_path / "sweep" / ".hydra" / "config.yaml", model_yaml("outer"))
    inner = write(tmp_path / "sweep/2025-10-17/21-54-23/.hydra/config.yaml", model_yaml("inner"))
    write(tmp_path / "sweep/2025-10-17/21-54-23/lightning_logs/version_0/hparams.yaml", model_yaml("hp"))

    found = resolve_config(ckpt, tmp_path)

    assert (found.kind, found.path) == ("hydra", inner)
    assert found.model is not None and found.model["architecture_name"] == "inner"
    assert found.describe() == "hydra: sweep/2025-10-17/21-54-23/.hydra/config.yaml"


def test_hparams_of_an_ancestor_before_logger_folders(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "lightning_logs" / "version_3" / "hparams.yaml", model_yaml("logger"))
    ancestor = write(run / "hparams.yaml", model_yaml("ancestor"))

    found = resolve_config(ckpt, tmp_path)

    assert (found.kind, found.path) == ("hparams", ancestor)


def test_logger_hparams_newest_version_first(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    for version in (0, 2, 10):
        write(run / "lightning_logs" / f"version_{version}" / "hparams.yaml", model_yaml(f"v{version}"))
    write(run / "lightning_logs" / "version_x" / "hparams.yaml", model_yaml("not-a-number"))

    with pytest.raises(SeveralConfigs) as info:  # several trainings: the gate chooses by the checkpoint
        resolve_config(ckpt, tmp_path)

    found = [resolved.path.parent.name for resolved in info.value.found]
    assert found == ["version_10", "version_2", "version_0", "version_x"]  # 10 > 2, not "10" < "2"


def test_several_run_logs_at_one_distance_are_left_to_the_gate(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    for version in (0, 1):
        write(run / "lightning_logs" / f"version_{version}" / "hparams.yaml", model_yaml("same"))
    with pytest.raises(SeveralConfigs) as info:
        resolve_config(ckpt, tmp_path)
    assert len(info.value.found) == 2  # configs.py does not judge: the gate compares what defines the model


def test_logger_hparams_directly_in_the_run_folder(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    direct = write(tmp_path / "run_20251017_215423" / "version_1" / "hparams.yaml", model_yaml("direct"))
    assert resolve_config(ckpt, tmp_path).path == direct


def test_hparams_without_model_section_is_skipped_and_mentioned(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "hparams.yaml", "lr: 0.001\nbatch_size: 8\n")
    write(run / "lightning_logs" / "version_1" / "hparams.yaml", "lr: 0.01\n")
    older = write(run / "lightning_logs" / "version_0" / "hparams.yaml", model_yaml("old"))

    found = resolve_config(ckpt, tmp_path)
    assert (found.kind, found.path) == ("hparams", older)

    older.unlink()
    configs.clear_cache()
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)
    message = str(info.value)
    assert "  skipped run_20251017_215423/hparams.yaml (has no `model` section)" in message
    assert "  skipped run_20251017_215423/lightning_logs/version_1/hparams.yaml (has no `model` section)" in message


def test_hparams_with_python_tags_still_gives_its_model(tmp_path: Path) -> None:
    """Lightning writes argparse.Namespace and paths as python tags; they must not hide the model."""
    ckpt = record(tmp_path)
    marker = tmp_path / "MARKER"
    write(
        tmp_path / "run_20251017_215423" / "hparams.yaml",
        f"args: !!python/object:argparse.Namespace {{lr: 0.1}}\n"
        f'hook: !!python/object/apply:os.system ["touch {marker}"]\n' + model_yaml("tagged"),
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == {**MODEL, "architecture_name": "tagged"}
    assert found.data["hook"].startswith("<not loaded: YAML tag ")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("broken", "content", "fragment"),
    [
        ("best.config.json", '{"model": {"architecture_name": ', "not valid JSON"),
        ("best.config.yaml", "model: [unclosed\n", "not valid YAML"),
        ("best.config.json", "[1, 2]", "expected a mapping at the top, found list"),
        ("best.config.yml", "just a string\n", "expected a mapping at the top, found str"),
        ("best.config.json", "", "not valid JSON"),
    ],
)
def test_a_broken_sidecar_does_not_end_the_search_and_is_noted(
    tmp_path: Path, broken: str, content: str, fragment: str
) -> None:
    """A sidecar may be a half-written export: the next source is tried, and the note travels with the config
    used (it is reported on the checkpoint); with nothing else anywhere, the broken sidecar is the cause."""
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "checkpoints" / broken, content)
    later = write(run / "checkpoints" / "best.resolved.config.json", {"model": MODEL})  # a later, valid source
    write(run / ".hydra" / "config.yaml", model_yaml("hydra"))
    before = snapshot(tmp_path)

    found = resolve_config(ckpt, tmp_path)

    assert snapshot(tmp_path) == before  # nothing written, nothing lost
    assert (found.kind, found.path) == ("sidecar", later)
    (note,) = found.skipped
    assert note.startswith(f"passed over a broken sidecar: run_20251017_215423/checkpoints/{broken}: ")
    assert fragment in note
    later.unlink()
    configs.clear_cache()
    assert resolve_config(ckpt, tmp_path).kind == "hydra"
    (run / ".hydra" / "config.yaml").unlink()
    configs.clear_cache()
    with pytest.raises(DocumentError) as info:
        resolve_config(ckpt, tmp_path)
    assert not isinstance(info.value, ConfigNotFound)
    assert str(info.value).startswith(f"run_20251017_215423/checkpoints/{broken}: ")
    assert fragment in str(info.value)
    assert (run / "checkpoints" / broken).read_text() == content  # the user's file is left as it was


def test_broken_hydra_config_is_reported_not_skipped(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml", "model:\n\tname: x\n")
    write(tmp_path / "run_20251017_215423" / "hparams.yaml", model_yaml("hparams"))
    with pytest.raises(DocumentError, match=r"^run_20251017_215423/\.hydra/config\.yaml: not valid YAML"):
        resolve_config(ckpt, tmp_path)


def test_broken_hparams_is_reported_not_skipped(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    run = tmp_path / "run_20251017_215423"
    write(run / "lightning_logs" / "version_2" / "hparams.yaml", "model: {a: [}\n")
    write(run / "lightning_logs" / "version_1" / "hparams.yaml", model_yaml("older"))
    with pytest.raises(DocumentError, match=r"version_2/hparams\.yaml: not valid YAML"):
        resolve_config(ckpt, tmp_path)


def test_hydra_config_without_model_section_is_returned_not_skipped(tmp_path: Path) -> None:
    """Unlike hparams.yaml, a Hydra config is a config by intent: the missing section is its defect."""
    ckpt = record(tmp_path)
    hydra = write(tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml", "trainer: {max_epochs: 3}\n")
    write(tmp_path / "run_20251017_215423" / "hparams.yaml", model_yaml("hparams"))

    found = resolve_config(ckpt, tmp_path)

    assert (found.path, found.model_key, found.model) == (hydra, None, None)


def test_listings_are_cached_until_cleared(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    with pytest.raises(ConfigNotFound):
        resolve_config(ckpt, tmp_path)
    sidecar = write(tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json", {"model": MODEL})
    with pytest.raises(ConfigNotFound):  # the folder listing from the first search is reused
        resolve_config(ckpt, tmp_path)
    configs.clear_cache()
    assert resolve_config(ckpt, tmp_path).path == sidecar


def test_sidecar_of_a_symlinked_checkpoint_sits_beside_the_link(tmp_path: Path) -> None:
    record(tmp_path, "run/checkpoints/epoch=3-step=9.ckpt")
    (tmp_path / "run" / "checkpoints" / "best.ckpt").symlink_to("epoch=3-step=9.ckpt")
    ckpt = discover(tmp_path).by_relpath()["run/checkpoints/best.ckpt"]
    sidecar = write(tmp_path / "run" / "checkpoints" / "best.config.json", {"model": MODEL})
    assert resolve_config(ckpt, tmp_path).path == sidecar


# ------------------------------------------------------------------------------------ not found


def test_config_not_found_lists_every_place_and_points_to_fix(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    before = snapshot(tmp_path)

    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)

    error = info.value
    assert isinstance(error, CheckError)
    message = str(error)
    places = [c.path.relative_to(tmp_path).as_posix() for c in candidates(ckpt, tmp_path)]
    places.append("run_20251017_215423/*/version_*/{hparams,config}.yaml")
    assert f"Looked in {len(places)} places:" in message
    listed = [line.strip() for line in message.splitlines() if line.startswith("  ")]
    assert listed == places
    assert "--fix" in message
    assert "run_20251017_215423/checkpoints/best.config.json" in message.splitlines()[1]
    assert snapshot(tmp_path) == before  # looking writes nothing


def test_config_not_found_first_line_stands_alone(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    with pytest.raises(ConfigNotFound) as info:
        resolve_config(ckpt, tmp_path)
    line = str(info.value).splitlines()[0]
    assert first_line(str(info.value)) == line
    assert line == f"no config found for {CKPT}; run pytest with --fix to recover it"
    assert not line.rstrip().endswith(":")  # not a lead-in to the list below


# --------------------------------------------------------------------------------- model sections


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"model": {"name": "x"}}, "model"),
        ({"cfg": {"model": {"name": "x"}}, "trainer": {"max_epochs": 1}}, "cfg.model"),
        ({"model": {"name": "top"}, "cfg": {"model": {"name": "nested"}}}, "model"),
        ({"model": "dbnet", "cfg": {"model": {"name": "x"}}}, "cfg.model"),  # a name, not a section
        ({"a": {"model": {"name": "x"}}, "b": {"model": {"name": "y"}}}, None),  # ambiguous
        ({"cfg": {"inner": {"model": {"name": "x"}}}}, None),  # two wrappers deep: not searched
        ({"model": None}, None),
        ({"model": [1, 2]}, None),
        ({"my.cfg": {"model": {"name": "x"}}}, None),  # a dotted key cannot be a dotted path part
        ({1: {"model": {"name": "x"}}}, None),
        ({}, None),
    ],
)
def test_find_model_key(document: dict[Any, Any], expected: str | None) -> None:
    assert find_model_key(document) == expected


def test_wrapped_model_section_is_used(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml",
        "cfg:\n" + textwrap.indent(model_yaml("x"), "  "),
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model_key == "cfg.model"
    assert found.model == {**MODEL, "architecture_name": "x"}
    assert found.describe() == "hydra: run_20251017_215423/.hydra/config.yaml (cfg.model)"


def test_dotted_wrapper_key_is_no_model_section(tmp_path: Path) -> None:
    """``{"my.cfg": {"model": ...}}`` would otherwise give model_key "my.cfg.model", unreadable by .model."""
    ckpt = record(tmp_path)
    write(tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json", {"my.cfg": {"model": MODEL}})
    found = resolve_config(ckpt, tmp_path)
    assert (found.model_key, found.model) == (None, None)


def test_interpolations_in_the_model_section_are_resolved(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml",
        "data:\n  channels: 16\nmodel:\n  architecture_name: dbnet\n"
        "  head:\n    name: db_head\n    params: {in_channels: '${data.channels}', k: 50}\n"
        "  alias: ${.architecture_name}\n",
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == {
        "architecture_name": "dbnet",
        "head": {"name": "db_head", "params": {"in_channels": 16, "k": 50}},
        "alias": "dbnet",
    }
    assert found.notes == ()


def test_unresolvable_interpolation_outside_the_model_is_noted(tmp_path: Path) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / ".hydra" / "config.yaml",
        "hydra:\n  run:\n    dir: ${hydra:runtime.output_dir}\n"
        "data:\n  channels: 16\nmodel:\n  architecture_name: dbnet\n  width: ${data.channels}\n",
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == {"architecture_name": "dbnet", "width": 16}
    assert found.data["hydra"]["run"]["dir"] == "${hydra:runtime.output_dir}"  # left as written
    (note,) = found.notes
    assert note.startswith("left unresolved: ")
    assert "hydra" in note


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("${hydra:runtime.output_dir}", "model.encoder.weights"),
        ("${data.missing}", "model.encoder.weights"),
        ("${unclosed", "model.encoder.weights"),
    ],
)
def test_unresolvable_interpolation_inside_the_model_names_the_key(tmp_path: Path, value: str, key: str) -> None:
    ckpt = record(tmp_path)
    path = write(
        tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json",
        {"data": {}, "model": {"architecture_name": "dbnet", "encoder": {"name": "m", "weights": value}}},
    )
    before = path.read_bytes()

    with pytest.raises(DocumentError) as info:
        resolve_config(ckpt, tmp_path)

    message = str(info.value)
    assert message.startswith("run_20251017_215423/checkpoints/best.config.json: ")
    assert f"`{key}`" in message
    assert "\n" not in message
    assert path.read_bytes() == before


def test_unresolvable_interpolation_in_a_wrapped_model(tmp_path: Path) -> None:
    candidate = Candidate("sidecar", write(tmp_path / "c.config.json", {"cfg": {"model": {"x": ["${nope}"]}}}))
    with pytest.raises(DocumentError, match=r"^c\.config\.json: .*`cfg\.model\.x\[0\]`"):
        load_config(candidate, tmp_path)


def test_load_config_outside_the_root_names_the_absolute_path(tmp_path: Path) -> None:
    elsewhere = write(tmp_path / "elsewhere" / "c.config.json", {"model": MODEL})
    found = load_config(Candidate("sidecar", elsewhere), tmp_path / "outputs")
    assert found.where == str(elsewhere)
    assert isinstance(found, ResolvedConfig) and found.model == MODEL


@pytest.mark.parametrize("value", ["${unclosed", "${hydra:runtime.output_dir}", "${nope.nothing}"])
def test_broken_interpolation_outside_a_model_without_interpolations_is_noted(tmp_path: Path, value: str) -> None:
    ckpt = record(tmp_path)
    write(
        tmp_path / "run_20251017_215423" / "checkpoints" / "best.config.json",
        {"logging": {"dir": value}, "model": MODEL},
    )

    found = resolve_config(ckpt, tmp_path)

    assert found.model == MODEL
    assert found.data["logging"]["dir"] == value
    (note,) = found.notes
    assert note.startswith("left unresolved: ")


def test_malformed_interpolation_elsewhere_blocks_a_model_that_needs_resolving(tmp_path: Path) -> None:
    """The model's own ${...} cannot resolve when OmegaConf refuses the document: an error, not raw text."""
    candidate = Candidate(
        "sidecar",
        write(
            tmp_path / "c.config.json",
            {"logging": {"dir": "${unclosed"}, "data": {"n": 3}, "model": {"name": "x", "n": "${data.n}"}},
        ),
    )
    with pytest.raises(DocumentError, match=r"^c\.config\.json: not a valid OmegaConf config in `logging\.dir`: "):
        load_config(candidate, tmp_path)
