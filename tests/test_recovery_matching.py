"""ckptgate.recovery.matching: which sources may belong to a checkpoint, and how strongly.

Time is matched within a tolerance (boundaries inclusive), in local time or UTC shifted by whole hours;
a run naming the checkpoint's run folder is stronger; the checkpoint's own hyper_parameters strongest.
Folder names are hints only: a source mentioning ``pan_decoder`` is not tied to a ``pan_decoder`` folder.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from ckptgate.discovery import CheckpointRecord, discover
from ckptgate.naming import parse_kind, parse_run_timestamp
from ckptgate.recovery import matching
from ckptgate.recovery.evidence import Source, Tier
from hypothesis import example, given, settings
from hypothesis import strategies as st

STAMP = datetime(2025, 10, 17, 21, 54, 23)
RUN = "ocr_training-dbnet-pan_decoder-mobilenetv3_small_050-unknown_training_20251017_215423"
SIBLING = "ocr_training-dbnet-pan_decoder-mobilenetv3_small_050_33-unknown_training_20251018_023219"
OUTPUTS = Path("/data/outputs")


def record(run_relpath: str = RUN, stamp: datetime | str | None = "parse") -> CheckpointRecord:
    """A checkpoint record as discovery makes it, for ``<outputs>/<run_relpath>/checkpoints/best.ckpt``."""
    parts = tuple(run_relpath.split("/")) if run_relpath != "." else ()
    run_dir = OUTPUTS.joinpath(*parts)
    path = run_dir / "checkpoints" / "best.ckpt"
    return CheckpointRecord(
        path=path,
        relpath=path.relative_to(OUTPUTS).as_posix(),
        run_dir=run_dir,
        run_relpath=run_relpath,
        run_timestamp=parse_run_timestamp(parts) if stamp == "parse" else stamp,  # type: ignore[arg-type]
        kind=parse_kind("best.ckpt"),
        size=1,
        mtime=0.0,
    )


def source(
    label: str = "wandb run-x",
    *,
    local: datetime | None = None,
    utc: datetime | None = None,
    text: str = "",
    kind: str = "wandb",
    path: Path | None = None,
) -> Source:
    return Source(
        kind=kind,
        label=label,
        path=path or Path("/data/wandb") / label / "config.yaml",
        config={"model": {"name": "net"}},
        started_local=local,
        started_utc=utc,
        text=text,
    )


def test_record_helper_agrees_with_discovery(tmp_path: Path) -> None:
    path = tmp_path / RUN / "checkpoints" / "best.ckpt"
    path.parent.mkdir(parents=True)
    path.touch()
    found = discover(tmp_path).checkpoints[0]
    mine = record()
    assert (found.run_relpath, found.run_timestamp, found.run_dir.name) == (mine.run_relpath, STAMP, RUN)


# ----------------------------------------------------------------------------------------- local time

stamps = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2090, 1, 1)).map(
    lambda d: d.replace(microsecond=0)  # folder names hold whole seconds
)


@st.composite
def tolerance_and_delta(draw: st.DrawFn, max_tolerance_us: int = 3_600_000_000) -> tuple[int, int]:
    tolerance = draw(st.integers(0, max_tolerance_us))
    delta = draw(
        st.one_of(
            st.sampled_from([tolerance, -tolerance, tolerance + 1, -tolerance - 1, 0]),  # the exact boundaries
            st.integers(-2 * tolerance - 2, 2 * tolerance + 2),
        )
    )
    return tolerance, delta


@given(stamp=stamps, pair=tolerance_and_delta())
@example(stamp=STAMP, pair=(120_000_000, 120_000_000))
@example(stamp=STAMP, pair=(120_000_000, -120_000_001))
@example(stamp=STAMP, pair=(0, 0))
def test_local_start_within_tolerance_matches_by_timestamp(stamp: datetime, pair: tuple[int, int]) -> None:
    tolerance_us, delta_us = pair
    ckpt = record(stamp=stamp)
    found = matching.match(ckpt, source(local=stamp + timedelta(microseconds=delta_us)), tolerance_us / 1e6)
    if abs(delta_us) > tolerance_us:
        assert found is None
        return
    assert found is not None
    assert found.tier is Tier.TIMESTAMP
    assert found.distance_s == abs(delta_us) / 1e6
    assert ("before" if delta_us < 0 else "after") in found.detail
    assert f"{stamp:%Y-%m-%d %H:%M:%S}" in found.detail
    assert "read as" not in found.detail  # local time: no zone was assumed


def test_local_start_detail_reads_like_a_sentence() -> None:
    found = matching.match(record(), source(local=STAMP + timedelta(seconds=1)))
    assert found is not None
    assert found.detail == "run started 1 s after the folder's timestamp 2025-10-17 21:54:23"
    assert found.describe() == f"wandb run-x: {found.detail}"


def test_default_tolerance_is_two_minutes_inclusive() -> None:
    ckpt = record()
    assert matching.match(ckpt, source(local=STAMP - timedelta(seconds=120))) is not None
    assert matching.match(ckpt, source(local=STAMP + timedelta(seconds=120, microseconds=1))) is None


# ---------------------------------------------------------------------------------- UTC and offsets

zones = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


@given(
    stamp=stamps,
    hours=st.integers(-matching.MAX_OFFSET_HOURS, matching.MAX_OFFSET_HOURS),
    # tolerance < 20 min, |delta| <= 2 * tolerance: a start outside the tolerance is not within it of the
    # next whole hour either (60 - 38 > 19 min), so no other offset can claim it
    pair=tolerance_and_delta(max_tolerance_us=1_140_000_000),
    zone=zones,
)
@example(stamp=STAMP, hours=9, pair=(120_000_000, 120_000_000), zone=timezone.utc)
@example(stamp=STAMP, hours=-14, pair=(0, 0), zone=timezone.utc)
@example(stamp=STAMP, hours=14, pair=(1_000_000, -1_000_001), zone=timezone.utc)
def test_utc_start_shifted_by_whole_hours(stamp: datetime, hours: int, pair: tuple[int, int], zone: timezone) -> None:
    """The folder's stamp is local time at UTC+hours; wandb recorded the same instant in UTC."""
    tolerance_us, delta_us = pair
    instant = (stamp - timedelta(hours=hours) + timedelta(microseconds=delta_us)).replace(tzinfo=timezone.utc)
    offsets = [hours * 3600] if hours else []
    found = matching.match(record(stamp=stamp), source(utc=instant.astimezone(zone)), tolerance_us / 1e6, offsets)
    if abs(delta_us) > tolerance_us:
        assert found is None
        return
    assert found is not None
    assert found.distance_s == abs(delta_us) / 1e6
    if hours == 0:
        assert found.tier is Tier.TIMESTAMP
        assert found.detail.endswith("read as UTC")
    else:
        assert found.tier is Tier.TIMESTAMP_OFFSET
        assert found.detail.endswith(f"read as UTC{hours:+d}")


@pytest.mark.parametrize("hours", [15, -15, 24])
def test_offsets_beyond_the_real_time_zones_never_match(hours: int) -> None:
    instant = (STAMP - timedelta(hours=hours)).replace(tzinfo=timezone.utc)
    assert matching.match(record(), source(utc=instant), offsets=[h * 3600 for h in range(-14, 15)]) is None
    local = instant.replace(tzinfo=None) + timedelta(hours=hours)  # a run showing that "zone"
    assert matching.observed_offsets([source(utc=instant, local=local)]) == set()


def test_only_offsets_seen_in_the_teams_own_runs_are_tried() -> None:
    """In a crowded wandb folder some unrelated run is always a whole number of hours away: an offset
    counts only when a run shows it (folder name in local time, metadata in UTC)."""
    ckpt = record()
    unrelated = source("an hour off", utc=(STAMP - timedelta(hours=8)).replace(tzinfo=timezone.utc))
    assert matching.match(ckpt, unrelated) is None
    assert matching.observed_offsets([unrelated]) == set()  # no local time: shows no zone
    kst_run = source(
        "kst run",
        local=datetime(2025, 10, 16, 10, 15, 1),
        utc=datetime(2025, 10, 16, 1, 15, 0, tzinfo=timezone.utc),
    )
    india = source(
        "india", local=datetime(2025, 10, 16, 10, 15, 1), utc=datetime(2025, 10, 16, 4, 45, 2, tzinfo=timezone.utc)
    )
    assert matching.observed_offsets([kst_run, india, unrelated]) == {9 * 3600, 5 * 3600 + 30 * 60}
    assert matching.match(ckpt, unrelated, offsets={9 * 3600}) is None
    found = matching.match(ckpt, unrelated, offsets={8 * 3600})
    assert found is not None and found.tier is Tier.TIMESTAMP_OFFSET and found.detail.endswith("read as UTC+8")


def test_seed_trap_kst_folder_and_utc_wandb() -> None:
    """The seed's run: folder 02:32:19 KST, wandb says 17:32:20 UTC the day before."""
    ckpt = record(SIBLING)
    wandb_run = source(utc=datetime(2025, 10, 17, 17, 32, 20, tzinfo=timezone.utc))
    assert matching.match(ckpt, wandb_run) is None  # no zone seen yet: not tried
    found = matching.match(ckpt, wandb_run, offsets={9 * 3600})
    assert found is not None
    assert (found.tier, found.distance_s) == (Tier.TIMESTAMP_OFFSET, 1.0)
    assert found.detail == "run started 1 s after the folder's timestamp 2025-10-18 02:32:19 read as UTC+9"


def test_local_stamp_beats_an_offset_even_when_the_offset_is_closer() -> None:
    exact_at_kst = (STAMP - timedelta(hours=9)).replace(tzinfo=timezone.utc)
    found = matching.match(record(), source(local=STAMP + timedelta(seconds=100), utc=exact_at_kst))
    assert found is not None
    assert (found.tier, found.distance_s) == (Tier.TIMESTAMP, 100.0)
    assert "read as" not in found.detail


def test_the_closer_of_local_and_utc_wins_within_the_timestamp_tier() -> None:
    utc = (STAMP + timedelta(seconds=2)).replace(tzinfo=timezone.utc)
    found = matching.match(record(), source(local=STAMP + timedelta(seconds=90), utc=utc))
    assert found is not None
    assert (found.tier, found.distance_s) == (Tier.TIMESTAMP, 2.0)
    assert found.detail.endswith("read as UTC")


def test_no_folder_timestamp_means_no_time_match() -> None:
    ckpt = record("some_long_experiment_name", stamp=None)
    assert matching.match(ckpt, source(local=STAMP, utc=STAMP.replace(tzinfo=timezone.utc))) is None


# ------------------------------------------------------------------------------------------- names


def test_a_source_naming_the_run_folder_beats_time() -> None:
    far = STAMP + timedelta(days=3)
    found = matching.match(record(), source(local=far, text=f'["--out", "outputs/{RUN}/checkpoints"]'))
    assert found is not None
    assert found.tier is Tier.NAMES_FOLDER
    assert RUN in found.detail
    closer_in_time = matching.match(record(), source(local=STAMP, text=f"outputs/{RUN}"))
    assert closer_in_time is not None and closer_in_time.tier is Tier.NAMES_FOLDER


def test_the_run_relpath_counts_even_when_its_folder_name_is_short() -> None:
    ckpt = record("team_a/run1", stamp=None)
    assert matching.folder_needles(ckpt) == ["team_a/run1"]
    found = matching.match(ckpt, source(text='{"dirpath": "outputs/team_a/run1/checkpoints"}'))
    assert found is not None and found.tier is Tier.NAMES_FOLDER
    assert matching.match(ckpt, source(text='{"dirpath": "outputs/run1/checkpoints"}')) is None


@pytest.mark.parametrize(
    "run_relpath",
    [
        ".",
        "lightning_logs/version_0",
        "version_0",
        "version_12345678901",  # long, still Lightning's counter
        "outputs",
        "checkpoints",
        "a",
        "run1",  # too short to be specific
        "wandb/logs",
    ],
)
def test_generic_or_short_names_never_count_as_names(run_relpath: str) -> None:
    ckpt = record(run_relpath, stamp=None)
    assert matching.folder_needles(ckpt) == []
    text = f'{{"a": "{run_relpath}", "b": "outputs/{run_relpath}/checkpoints", "data": "train run1 version_0"}}'
    assert matching.match(ckpt, source(text=text)) is None


def test_a_specific_run_under_a_generic_logger_folder_counts_by_its_relpath() -> None:
    ckpt = record("quickstart-unet-20251013_141500/lightning_logs/version_0")
    assert matching.folder_needles(ckpt) == ["quickstart-unet-20251013_141500/lightning_logs/version_0"]
    found = matching.match(ckpt, source(text="logs in lightning_logs/version_0"))
    assert found is None  # the generic tail alone names nothing (and no time is known)


def test_folder_names_are_hints_only_pan_decoder() -> None:
    """A run that trained a pan_decoder, or names the sibling ``..._33`` folder, is not this folder's run."""
    ckpt = record()
    text = f'{{"decoder": {{"name": "pan_decoder"}}, "out": "outputs/{SIBLING}", "tags": ["mobilenetv3_small_050"]}}'
    far = STAMP + timedelta(hours=5, minutes=31)
    assert matching.match(ckpt, source(local=far, text=text)) is None
    sibling = matching.match(record(SIBLING), source(local=far, text=text))
    assert sibling is not None and sibling.tier is Tier.NAMES_FOLDER


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("outputs/baseline_unet_lr/checkpoints", True),
        ('"baseline_unet_lr"', True),
        ("dirpath=baseline_unet_lr", True),
        ("outputs/baseline_unet_lr_v2/checkpoints", False),  # another folder that starts the same
        ("outputs/old-baseline_unet_lr/checkpoints", False),
        ("outputs/baseline_unet_lr-2/checkpoints", False),
    ],
)
def test_a_name_counts_only_as_a_whole_folder_name(text: str, named: bool) -> None:
    found = matching.match(record("baseline_unet_lr", stamp=None), source(text=text))
    assert (found is not None) is named


def test_non_ascii_folder_names_are_found() -> None:
    found = matching.match(record("réseau_entraîné_01", stamp=None), source(text='"outputs/réseau_entraîné_01"'))
    assert found is not None and found.tier is Tier.NAMES_FOLDER


# -------------------------------------------------------------------------------------- ranking


def test_a_run_kept_inside_the_checkpoints_run_folder_is_the_strongest_tier() -> None:
    """Hydra runs in its run folder, so wandb writes ``outputs/<run>/wandb``: no time, no text needed."""
    ckpt = record(stamp=None)
    inside = source("wandb inside", path=ckpt.run_dir / "wandb" / "offline-run-x" / "files" / "config.yaml")
    found = matching.match(ckpt, inside)
    assert found is not None and found.tier is Tier.IN_RUN_FOLDER
    assert found.detail == "it lies in the checkpoint's run folder (wandb/offline-run-x/files/config.yaml)"
    assert min(Tier) is Tier.IN_RUN_FOLDER
    # a checkpoint at the top of the outputs dir has no run folder of its own: everything lies "inside" it
    top = record(".", stamp=None)
    assert matching.match(top, source("wandb at the top", path=OUTPUTS / "wandb" / "r" / "config.yaml")) is None


def test_rank_orders_by_tier_then_distance_then_label() -> None:
    ckpt = record()
    kst = timedelta(hours=9)
    sources = [
        source("z offset exact", utc=(STAMP - kst).replace(tzinfo=timezone.utc)),
        source("y time 5 s", local=STAMP + timedelta(seconds=5)),
        source("x time 1 s", local=STAMP - timedelta(seconds=1)),
        source("b time 1 s", local=STAMP + timedelta(seconds=1)),
        source("w names", text=f"outputs/{RUN}", local=STAMP + timedelta(days=1)),
        source("v inside", path=OUTPUTS / RUN / "wandb" / "v" / "config.yaml"),
        source("u unrelated", local=STAMP + timedelta(hours=1, minutes=30), text="pan_decoder"),
    ]
    ranked = matching.rank(ckpt, sources, offsets={9 * 3600})
    assert [c.source.label for c in ranked] == [
        "v inside",
        "w names",
        "b time 1 s",
        "x time 1 s",
        "y time 5 s",
        "z offset exact",
    ]
    assert [c.tier for c in ranked] == [
        Tier.IN_RUN_FOLDER,
        Tier.NAMES_FOLDER,
        Tier.TIMESTAMP,
        Tier.TIMESTAMP,
        Tier.TIMESTAMP,
        Tier.TIMESTAMP_OFFSET,
    ]


@settings(max_examples=50)
@given(seconds=st.lists(st.integers(-300, 300), min_size=1, max_size=8), seed=st.integers(0, 2**32))
def test_rank_is_sorted_and_independent_of_input_order(seconds: list[int], seed: int) -> None:
    ckpt = record()
    sources = [source(f"run{index:02d}", local=STAMP + timedelta(seconds=s)) for index, s in enumerate(seconds)]
    ranked = matching.rank(ckpt, sources)
    shuffled = sources[:]
    random.Random(seed).shuffle(shuffled)
    assert matching.rank(ckpt, shuffled) == ranked
    keys = [(c.tier, c.distance_s, c.source.label) for c in ranked]
    assert keys == sorted(keys)
    assert len(ranked) == sum(abs(s) <= matching.DEFAULT_TOLERANCE_S for s in seconds)


# -------------------------------------------------------------------------------------- nearest


def test_nearest_names_the_closest_source_however_far() -> None:
    ckpt = record()
    sources = [
        source("wandb far", local=STAMP + timedelta(days=2)),
        source("wandb near", local=STAMP - timedelta(hours=2, minutes=3, seconds=4)),
        source("wandb utc", utc=(STAMP + timedelta(hours=3)).replace(tzinfo=timezone.utc)),
        source("no time"),
    ]
    assert matching.nearest(ckpt, sources) == (
        "the nearest, wandb near, started 2 h 3 min before the folder's timestamp"
    )
    assert matching.nearest(ckpt, sources[2:]) == (  # a UTC start a whole zone away suggests that zone
        "the nearest, wandb utc, started 3 h after the folder's timestamp; "
        "if the folder names are local time at UTC-3, pass --ckpt-utc-offset -3"
    )
    assert matching.nearest(ckpt, [source(local=STAMP + timedelta(seconds=130))]).endswith(  # type: ignore[union-attr]
        "started 2 min after the folder's timestamp"
    )


def test_nearest_is_none_without_a_stamp_or_any_time() -> None:
    assert matching.nearest(record(stamp=None), [source(local=STAMP)]) is None
    assert matching.nearest(record(), [source("no time")]) is None
    assert matching.nearest(record(), []) is None
