"""ckptgate.recovery.hydra_runs: Hydra run folders (``.hydra/config.yaml``) anywhere under the outputs dir."""

from __future__ import annotations

import os
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

from ckptgate.discovery import discover
from ckptgate.recovery import hydra_runs, matching
from ckptgate.recovery.evidence import Tier

CONFIG = textwrap.dedent(
    """\
    model:
      architecture_name: dbnet
      encoder:
        model_name: mobilenetv3_small_050
        channels: [16, 24, 48]
      decoder:
        name: unet
        params:
          in_channels: ${model.encoder.channels}
          out_channels: ${model.head.params.in_channels}
      head:
        name: db_head
        params: {in_channels: 16}
    preprocessing:
      image_size: [64, 64]
    """
)
RESOLVED_DECODER = {"name": "unet", "params": {"in_channels": [16, 24, 48], "out_channels": 16}}


def hydra_run(root: Path, relpath: str, config: str = CONFIG, **extra: str) -> Path:
    folder = root / relpath / ".hydra"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config)
    for name, text in extra.items():
        (folder / f"{name}.yaml").write_text(text)
    return root / relpath


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_finds_hydra_folders_at_any_depth(tmp_path: Path) -> None:
    expected = [
        hydra_run(tmp_path, "2025-10-17/21-54-23"),
        hydra_run(tmp_path, "multirun/2025-10-18/02-32-19/0"),
        hydra_run(tmp_path, "team/exp_a/deep/run"),
    ]
    (tmp_path / "no_config" / ".hydra").mkdir(parents=True)  # a .hydra without config.yaml is no run
    (tmp_path / "no_config" / ".hydra" / "overrides.yaml").write_text("[]")
    assert hydra_runs.find_hydra_dirs(tmp_path) == sorted(expected)


def test_does_not_look_inside_ckpt_folders_or_follow_links(tmp_path: Path) -> None:
    hydra_run(tmp_path, "run_x/checkpoints/best.ckpt")  # a DeepSpeed checkpoint folder
    real = hydra_run(tmp_path / "elsewhere", "2025-10-17/21-54-23").parent.parent
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    os.symlink(real, outputs / "linked", target_is_directory=True)
    assert hydra_runs.find_hydra_dirs(outputs) == []
    assert hydra_runs.find_hydra_dirs(tmp_path / "run_x") == []


def test_a_source_resolves_the_model_section_and_keeps_the_rest(tmp_path: Path) -> None:
    hydra_run(tmp_path, "2025-10-17/21-54-23")
    [source] = hydra_runs.sources(tmp_path)
    assert source.kind == "hydra"
    assert source.label == "Hydra run 2025-10-17/21-54-23"
    assert source.path == tmp_path / "2025-10-17" / "21-54-23" / ".hydra" / "config.yaml"
    assert source.run_id is None and source.started_utc is None
    assert source.config["model"]["decoder"] == RESOLVED_DECODER
    assert source.sidecar_sections() == {
        "model": source.config["model"],
        "preprocessing": {"image_size": [64, 64]},
    }


def test_unresolvable_interpolations_outside_the_model_are_kept_with_a_note(tmp_path: Path) -> None:
    config = CONFIG + "paths:\n  data: ${hydra:runtime.cwd}/data\n"
    hydra_run(tmp_path, "2025-10-17/21-54-23", config)
    [source] = hydra_runs.sources(tmp_path)
    assert source.config["model"]["decoder"] == RESOLVED_DECODER
    assert source.config["paths"]["data"] == "${hydra:runtime.cwd}/data"
    assert any("left unresolved" in note for note in source.notes)


def test_started_local_comes_from_hydra_date_and_time_folders(tmp_path: Path) -> None:
    hydra_run(tmp_path, "2025-10-17/21-54-23")
    hydra_run(tmp_path, "multirun/2025-10-18/02-32-19/3")
    hydra_run(tmp_path, "exp_20251016_101500")
    hydra_run(tmp_path, "no_time_here")
    found = {s.label: s.started_local for s in hydra_runs.sources(tmp_path)}
    assert found == {
        "Hydra run 2025-10-17/21-54-23": datetime(2025, 10, 17, 21, 54, 23),
        "Hydra run exp_20251016_101500": datetime(2025, 10, 16, 10, 15, 0),
        "Hydra run multirun/2025-10-18/02-32-19/3": datetime(2025, 10, 18, 2, 32, 19),
        "Hydra run no_time_here": None,
    }


def test_overrides_and_hydra_yaml_are_searched_for_the_run_folder(tmp_path: Path) -> None:
    run = "ocr_training-dbnet-unet-resnet18_tiny-elsewhere_20251011_080000"
    ckpt_path = tmp_path / "outputs" / run / "checkpoints" / "best.ckpt"
    ckpt_path.parent.mkdir(parents=True)
    ckpt_path.touch()
    outputs = tmp_path / "outputs"
    hydra_run(
        outputs,
        "2025-10-17/21-54-23",
        overrides=f"- exp_name=elsewhere\n- callbacks.model_checkpoint.dirpath=outputs/{run}/checkpoints\n",
    )
    hydra_run(outputs, "2025-10-17/22-00-00", hydra=f"hydra:\n  run:\n    dir: outputs/{run}\n")
    hydra_run(outputs, "2025-10-17/23-00-00", overrides="- exp_name=pan_decoder\n")
    # reading from the folder (fine-tuning from its checkpoint) is not writing into it: no match
    hydra_run(outputs, "2025-10-17/23-30-00", overrides=f"- init_from=outputs/{run}/checkpoints/best.ckpt\n")
    ckpt = discover(outputs).by_relpath()[f"{run}/checkpoints/best.ckpt"]
    sources = hydra_runs.sources(outputs)
    assert run in sources[0].text and run in sources[1].text
    assert run not in sources[3].text
    matched = {c.source.label: c.tier for c in matching.rank(ckpt, sources)}
    assert matched == {
        "Hydra run 2025-10-17/21-54-23": Tier.NAMES_FOLDER,
        "Hydra run 2025-10-17/22-00-00": Tier.NAMES_FOLDER,
    }


def test_hydra_time_folders_match_a_checkpoint_by_time(tmp_path: Path) -> None:
    ckpt_path = tmp_path / "exp_20251017_215420" / "checkpoints" / "last.ckpt"
    ckpt_path.parent.mkdir(parents=True)
    ckpt_path.touch()
    hydra_run(tmp_path, "2025-10-17/21-54-23")
    [ckpt] = discover(tmp_path).checkpoints
    [candidate] = matching.rank(ckpt, hydra_runs.sources(tmp_path))
    assert candidate.tier is Tier.TIMESTAMP
    assert candidate.distance_s == timedelta(seconds=3).total_seconds()


def test_broken_configs_are_skipped_and_nothing_is_touched(tmp_path: Path) -> None:
    hydra_run(tmp_path, "bad_yaml", "model: [unclosed\n")
    hydra_run(tmp_path, "bad_interpolation", "model:\n  name: ${nowhere.at.all}\n")
    hydra_run(tmp_path, "not_a_mapping", "- a\n- b\n")
    hydra_run(tmp_path, "good", CONFIG, overrides="- a=[unclosed\n")  # a broken overrides.yaml is no reason
    before = snapshot(tmp_path)
    assert [s.label for s in hydra_runs.sources(tmp_path)] == ["Hydra run good"]
    assert snapshot(tmp_path) == before


def test_no_hydra_folders_no_sources(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert hydra_runs.sources(tmp_path) == []
    assert hydra_runs.sources(tmp_path / "absent") == []


def test_non_ascii_folder_names_are_searchable_as_written(tmp_path: Path) -> None:
    hydra_run(tmp_path, "2025-10-17/21-54-23", overrides="- hydra.run.dir=outputs/réseau_entraîné_01\n")
    [source] = hydra_runs.sources(tmp_path)
    assert "outputs/réseau_entraîné_01" in source.text
