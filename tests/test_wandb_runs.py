"""ckptgate.recovery.wandb_runs: wandb run folders as evidence (config.yaml in both layouts, metadata, logs)."""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from ckptgate.recovery import wandb_runs
from ckptgate.recovery.wandb_runs import find_runs, read_run, sources, unflatten, unwrap_config_yaml
from hypothesis import given
from hypothesis import strategies as st

MODEL = {
    "architecture_name": "dbnet",
    "encoder": {"model_name": "mobilenetv3_small_050", "pretrained": False},
    "decoder": {"name": "unet", "params": {"in_channels": [16, 24, 48], "out_channels": 16}},
}
RUN = "run-20251017_215424-j8v6ba0v"


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ unflatten

keys = st.text(st.characters(codec="utf-8", exclude_characters="./"), min_size=1, max_size=6)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)
nested = st.recursive(leaves, lambda children: st.dictionaries(keys, children, max_size=4), max_leaves=20)
configs = st.dictionaries(keys, nested, max_size=5)


def flatten(config: dict[str, Any], data: st.DataObject, prefix: str = "") -> dict[str, Any]:
    """Flatten some sections (chosen by hypothesis) with "." or "/" (also chosen), keep the rest nested."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and data.draw(st.booleans(), label=f"flatten {path!r}"):
            separator = data.draw(st.sampled_from([".", "/"]), label=f"separator under {path!r}")
            flat.update(flatten(value, data, path + separator))
        else:
            flat[path] = value
    return flat


@given(config=configs, data=st.data())
def test_unflatten_undoes_any_flattening(config: dict[str, Any], data: st.DataObject) -> None:
    flat = flatten(config, data)
    assert unflatten(flat) == config
    assert unflatten(config) == config  # nothing flattened: unchanged


def test_unflatten_nests_both_separators() -> None:
    flat = {"model.encoder.model_name": "mobilenetv3_small_050", "model/decoder/name": "unet", "seed": 7}
    assert unflatten(flat) == {
        "model": {"encoder": {"model_name": "mobilenetv3_small_050"}, "decoder": {"name": "unet"}},
        "seed": 7,
    }


@pytest.mark.parametrize("flattened_first", [False, True])
def test_flattened_keys_refine_plain_sections_whatever_the_order(flattened_first: bool) -> None:
    items = [
        ("model", {"encoder": {"model_name": "resnet18_tiny", "pretrained": True}, "name": "dbnet"}),
        ("model.encoder.model_name", "mobilenetv3_small_050"),
        ("model/head/params/k", 50),
    ]
    config = dict(reversed(items) if flattened_first else items)
    assert unflatten(config) == {
        "model": {
            "encoder": {"model_name": "mobilenetv3_small_050", "pretrained": True},
            "name": "dbnet",
            "head": {"params": {"k": 50}},
        }
    }


@pytest.mark.parametrize("deeper_first", [False, True])
def test_conflicting_keys_resolve_deterministically(deeper_first: bool) -> None:
    # a plain scalar is replaced by a section logged flattened below it
    assert unflatten({"model": "unet", "model.decoder.name": "fpn"}) == {"model": {"decoder": {"name": "fpn"}}}
    # two flattened keys that disagree on whether `a.b` is a value or a section: the deeper one wins,
    # whatever order they were logged in
    items = [("a.b", 1), ("a.b.c", 2)]
    config = dict(reversed(items) if deeper_first else items)
    assert unflatten(config) == {"a": {"b": {"c": 2}}}
    # two sections at one path merge
    assert unflatten({"a.b": {"x": 1}, "a/b": {"y": 2}}) == {"a": {"b": {"x": 1, "y": 2}}}


def test_unflatten_does_not_change_its_input() -> None:
    config = {"model": {"encoder": {"name": "a"}}, "model.encoder.name": "b"}
    before = json.dumps(config, sort_keys=True)
    unflatten(config)
    assert json.dumps(config, sort_keys=True) == before


# --------------------------------------------------------------------------------- config.yaml layouts


def test_older_layout_desc_value_is_unwrapped_and_wandb_keys_dropped() -> None:
    document = {
        "wandb_version": 1,
        "_wandb": {"desc": None, "value": {"cli_version": "0.15.12", "framework": "torch"}},
        "model": {"desc": None, "value": MODEL},
        "seed": {"desc": "the seed", "value": 42},
    }
    assert unwrap_config_yaml(document) == {"model": MODEL, "seed": 42}


def test_newer_layout_value_only_is_unwrapped() -> None:
    document = {
        "_wandb": {"value": {"cli_version": "0.19.1", "m": [], "t": {"1": [1, 5]}}},
        "model": {"value": MODEL},
        "trainer": {"value": {"max_epochs": 3}},
    }
    assert unwrap_config_yaml(document) == {"model": MODEL, "trainer": {"max_epochs": 3}}


def test_flattened_keys_in_config_yaml_are_nested() -> None:
    document = {
        "wandb_version": 1,
        "model.encoder.model_name": {"desc": None, "value": "mobilenetv3_small_050"},
        "model/decoder/name": {"desc": None, "value": "unet"},
        "model": {"desc": None, "value": {"architecture_name": "dbnet"}},
    }
    assert unwrap_config_yaml(document) == {
        "model": {
            "architecture_name": "dbnet",
            "encoder": {"model_name": "mobilenetv3_small_050"},
            "decoder": {"name": "unet"},
        }
    }


def test_a_hand_written_unwrapped_config_is_kept() -> None:
    document = {"model": MODEL, "preprocessing": {"image_size": [64, 64]}, "seed": 3}
    assert unwrap_config_yaml(document) == document
    # a mapping that merely holds a `value` key among others is data, not wandb's wrapper
    assert unwrap_config_yaml({"metric": {"value": 0.5, "mode": "max"}}) == {"metric": {"value": 0.5, "mode": "max"}}


@pytest.mark.parametrize("document", [None, [], "text", 3])
def test_a_config_yaml_that_is_not_a_mapping_holds_no_config(document: Any) -> None:
    assert unwrap_config_yaml(document) == {}


# ------------------------------------------------------------------------------------------ run folders


def make_run(
    wandb_dir: Path,
    name: str = RUN,
    *,
    config: Any = None,
    raw_config: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    run = wandb_dir / name
    files = run / "files"
    files.mkdir(parents=True)
    (run / "logs").mkdir()
    if raw_config is not None:
        (files / "config.yaml").write_text(raw_config)
    elif config is not None:
        (files / "config.yaml").write_text(yaml.safe_dump(config))
    if metadata is not None:
        (files / "wandb-metadata.json").write_text(json.dumps(metadata))
    return run


def wrapped(config: dict[str, Any]) -> dict[str, Any]:
    return {"wandb_version": 1, **{key: {"desc": None, "value": value} for key, value in config.items()}}


def test_read_run_online_folder(tmp_path: Path) -> None:
    metadata = {
        "startedAt": "2025-10-17T12:54:24.123456Z",
        "program": "train.py",
        "args": ["exp_name=ocr_training", "model/decoder=unet"],
    }
    run = read_run(make_run(tmp_path, config=wrapped({"model": MODEL}), metadata=metadata))
    assert run is not None
    assert (run.run_id, run.offline, run.name) == ("j8v6ba0v", False, RUN)
    assert run.started_local == datetime(2025, 10, 17, 21, 54, 24)
    assert run.started_local.tzinfo is None  # the folder name is the machine's clock
    assert run.started_utc == datetime(2025, 10, 17, 12, 54, 24, 123456, tzinfo=timezone.utc)
    assert run.config == {"model": MODEL}
    assert run.config_file == tmp_path / RUN / "files" / "config.yaml"
    assert run.metadata == metadata
    assert run.problems == ()


@pytest.mark.parametrize(
    ("started_at", "expected"),
    [
        ("2025-10-17T12:54:24Z", datetime(2025, 10, 17, 12, 54, 24, tzinfo=timezone.utc)),
        ("2025-10-17T12:54:24.500000", datetime(2025, 10, 17, 12, 54, 24, 500000, tzinfo=timezone.utc)),
        ("2025-10-17T21:54:24+09:00", datetime(2025, 10, 17, 12, 54, 24, tzinfo=timezone.utc)),
        ("yesterday", None),
        (1760705664, None),
    ],
)
def test_started_at_is_read_as_aware_utc(tmp_path: Path, started_at: Any, expected: datetime | None) -> None:
    run = read_run(make_run(tmp_path, config=wrapped({"model": MODEL}), metadata={"startedAt": started_at}))
    assert run is not None
    assert run.started_utc == expected
    if expected is not None:
        assert run.started_utc is not None and run.started_utc.utcoffset() is not None


def test_read_run_offline_folder_newer_layout(tmp_path: Path) -> None:
    name = "offline-run-20251017_230640-4tq4nu4d"
    run = read_run(make_run(tmp_path, name, config={"_wandb": {"value": {}}, "model": {"value": MODEL}}))
    assert run is not None
    assert (run.run_id, run.offline) == ("4tq4nu4d", True)
    assert run.started_local == datetime(2025, 10, 17, 23, 6, 40)
    assert run.started_utc is None  # no wandb-metadata.json
    assert run.config == {"model": MODEL}


def test_a_broken_config_yaml_is_noted_not_raised(tmp_path: Path) -> None:
    folder = make_run(tmp_path, raw_config="model: {value: [unclosed\n", metadata={"startedAt": "2025-10-17T12:54:24"})
    before = snapshot(tmp_path)
    run = read_run(folder)
    assert run is not None
    assert run.config == {} and run.config_file is None
    assert len(run.problems) == 1 and "config.yaml" in run.problems[0] and "not valid YAML" in run.problems[0]
    assert sources(tmp_path) == []  # nothing to recover from, and nothing raised
    assert snapshot(tmp_path) == before


def test_non_run_folders_and_links_are_ignored(tmp_path: Path) -> None:
    make_run(tmp_path, config=wrapped({"model": MODEL}))
    (tmp_path / "latest-run").symlink_to(tmp_path / RUN, target_is_directory=True)
    (tmp_path / "run-20251017_215424-j8v6ba0v-copy").mkdir()  # not wandb's name
    (tmp_path / "run-notastamp-abc").mkdir()
    (tmp_path / "debug.log").write_text("log")
    (tmp_path / "run-20251017_215425-filerun").write_text("a file, not a folder")
    before = snapshot(tmp_path)
    assert [run.name for run in find_runs(tmp_path)] == [RUN]
    assert read_run(tmp_path / "latest-run") is None  # its name is no run's
    assert read_run(tmp_path / "run-notastamp-abc") is None
    assert [source.label for source in sources(tmp_path)] == [f"wandb {RUN} (files/config.yaml)"]
    assert snapshot(tmp_path) == before
    assert (tmp_path / "latest-run").is_symlink()


def test_a_symlinked_run_folder_is_not_read_twice(tmp_path: Path) -> None:
    make_run(tmp_path, config=wrapped({"model": MODEL}))
    os.symlink(tmp_path / RUN, tmp_path / "run-20251017_215424-aliased1", target_is_directory=True)
    assert [run.name for run in find_runs(tmp_path)] == [RUN]


def test_a_missing_wandb_dir_has_no_runs(tmp_path: Path) -> None:
    assert list(find_runs(tmp_path / "absent")) == []
    assert sources(tmp_path / "absent") == []


def test_sources_label_and_carry_everything_matching_needs(tmp_path: Path) -> None:
    metadata = {
        "startedAt": "2025-10-17T12:54:24.000000Z",
        "program": "/home/me/train.py",
        "args": ["callbacks.checkpoint.dirpath=outputs/réseau_entraîné_01/checkpoints"],
    }
    make_run(tmp_path, config=wrapped({"model": MODEL}), metadata=metadata)
    make_run(tmp_path, "offline-run-20251017_230640-4tq4nu4d", config={"model": {"value": MODEL}})
    make_run(tmp_path, "run-20251018_010101-noconfig", metadata={"startedAt": "2025-10-18T01:01:01Z"})
    make_run(tmp_path, "run-20251018_020202-onlywandb", config={"_wandb": {"value": {"t": 1}}, "wandb_version": 1})
    found = sources(tmp_path)
    assert [s.label for s in found] == [
        "wandb offline-run-20251017_230640-4tq4nu4d (files/config.yaml)",
        f"wandb {RUN} (files/config.yaml)",
    ]
    online = found[1]
    assert online.kind == "wandb"
    assert online.path == tmp_path / RUN / "files" / "config.yaml"
    assert online.run_id == "j8v6ba0v"
    assert online.started_local == datetime(2025, 10, 17, 21, 54, 24)
    assert online.started_utc == datetime(2025, 10, 17, 12, 54, 24, tzinfo=timezone.utc)
    assert online.config == {"model": MODEL}
    assert online.model_key == "model"
    # only where the run says it wrote counts (the program and the model do not name folders)
    assert online.text == "outputs/réseau_entraîné_01/checkpoints"  # as written, not \u-escaped


# ------------------------------------------------------------------------------------------ binary log

_NEEDED = {
    "ckptgate.recovery.wandb_log": "plugins/ckptgate/recovery/wandb_log.py",
    "fixtures.wandb_log_writer": "fixtures/wandb_log_writer.py",
}


def _missing_modules() -> list[str]:
    missing = []
    for name, path in _NEEDED.items():
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            missing.append(f"{name} ({path})")
    return missing


def test_a_run_holding_only_its_binary_log_yields_its_config(tmp_path: Path) -> None:
    missing = _missing_modules()
    if missing:
        pytest.skip(f"the binary-log reader or its writer is not there yet: missing {', '.join(missing)}")
    from fixtures.wandb_log_writer import write_offline_run

    start = datetime(2025, 10, 17, 14, 6, 41, 250000, tzinfo=timezone.utc)
    folder = write_offline_run(
        tmp_path,
        run_id="4tq4nu4d",
        project="ocr",
        start_time=start,
        config={"model": {"architecture_name": "dbnet", "encoder": {"model_name": "resnet18_tiny"}}, "seed": 1},
        updates=[{"model.decoder.name": "unet"}],
        folder_time=datetime(2025, 10, 17, 23, 6, 40),  # a KST machine's clock
    )
    assert not (folder / "files" / "config.yaml").exists()
    before = snapshot(tmp_path)
    run = read_run(folder)
    assert run is not None
    assert run.config_file == folder / "run-4tq4nu4d.wandb"
    assert run.config == {
        "model": {
            "architecture_name": "dbnet",
            "encoder": {"model_name": "resnet18_tiny"},
            "decoder": {"name": "unet"},  # logged flattened, nested back
        },
        "seed": 1,
    }
    assert run.started_utc == start  # from the log: there is no wandb-metadata.json
    assert run.started_local == datetime(2025, 10, 17, 23, 6, 40)
    [source] = sources(tmp_path)
    assert source.label == "wandb offline-run-20251017_230640-4tq4nu4d (run-4tq4nu4d.wandb)"
    assert source.run_id == "4tq4nu4d"
    assert snapshot(tmp_path) == before


def test_a_damaged_binary_log_is_noted_not_raised(tmp_path: Path) -> None:
    missing = _missing_modules()
    if missing:
        pytest.skip(f"the binary-log reader or its writer is not there yet: missing {', '.join(missing)}")
    folder = tmp_path / "offline-run-20251017_230640-4tq4nu4d"
    folder.mkdir()
    (folder / "run-4tq4nu4d.wandb").write_bytes(b"this is not a wandb log at all")
    before = snapshot(tmp_path)
    run = read_run(folder)
    assert run is not None
    assert run.config == {} and run.config_file is None
    assert run.problems and "run-4tq4nu4d.wandb" in run.problems[0]
    assert sources(tmp_path) == []
    assert snapshot(tmp_path) == before


def test_started_at_parsing_never_raises() -> None:
    for value in (None, "", "2025-13-45T99:99:99Z", {"a": 1}, "Z"):
        assert wandb_runs._parse_utc(value) is None
    assert wandb_runs._parse_utc("2025-10-17T12:54:24") == datetime(2025, 10, 17, 12, 54, 24, tzinfo=timezone.utc)
    assert wandb_runs._parse_utc("2025-10-17T12:54:24Z") - timedelta(0) == datetime(  # type: ignore[operator]
        2025, 10, 17, 12, 54, 24, tzinfo=timezone.utc
    )
