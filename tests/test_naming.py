"""ckptgate.naming: run timestamps and checkpoint kinds read from names (hints, never proof)."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from ckptgate.naming import CheckpointKind, parse_kind, parse_run_timestamp, parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

# Text that cannot glue extra digits onto a stamp (``\d`` in the patterns is any Unicode decimal digit).
NO_DIGITS = st.text(alphabet=st.characters(exclude_categories=("Nd", "Cs")), max_size=30)
STAMPS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)


def compact(d: datetime, sep: str = "_") -> str:
    return f"{d.year:04d}{d.month:02d}{d.day:02d}{sep}{d.hour:02d}{d.minute:02d}{d.second:02d}"


def _valid(*parts: int) -> datetime | None:
    try:
        return datetime(*parts)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------- timestamps


@given(prefix=NO_DIGITS, stamp=STAMPS, suffix=NO_DIGITS, sep=st.sampled_from("_-"))
def test_compact_stamp_embedded_in_any_text_is_found(prefix: str, stamp: datetime, suffix: str, sep: str) -> None:
    assert parse_timestamp(prefix + compact(stamp, sep) + suffix) == stamp


@given(prefix=NO_DIGITS, stamp=STAMPS, suffix=NO_DIGITS, sep=st.sampled_from("_T "), tsep=st.sampled_from("-:"))
def test_dashed_stamp_embedded_in_any_text_is_found(
    prefix: str, stamp: datetime, suffix: str, sep: str, tsep: str
) -> None:
    text = (
        f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}{sep}"
        f"{stamp.hour:02d}{tsep}{stamp.minute:02d}{tsep}{stamp.second:02d}"
    )
    assert parse_timestamp(prefix + text + suffix) == stamp


@given(
    year=st.integers(0, 9999),
    month=st.integers(0, 99),
    day=st.integers(0, 99),
    hour=st.integers(0, 99),
    minute=st.integers(0, 99),
    second=st.integers(0, 99),
)
def test_stamp_shaped_digits_parse_exactly_when_they_are_a_real_date(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> None:
    name = f"run_{year:04d}{month:02d}{day:02d}_{hour:02d}{minute:02d}{second:02d}"
    assert parse_timestamp(name) == _valid(year, month, day, hour, minute, second)


@given(st.text(alphabet="0123456789_-T :ab", max_size=60))
def test_any_stamp_found_is_spelled_in_the_text(name: str) -> None:
    """Never crashes, and never invents a time: whatever it returns is written in the name."""
    found = parse_timestamp(name)
    if found is None:
        return
    d = found
    date_c, time_c = f"{d.year:04d}{d.month:02d}{d.day:02d}", f"{d.hour:02d}{d.minute:02d}{d.second:02d}"
    date_d = f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    time_d = rf"{d.hour:02d}[-:]{d.minute:02d}[-:]{d.second:02d}"
    assert re.search(rf"{date_c}[_-]{time_c}|{date_d}[_T ]{time_d}", name), (name, found)


@given(st.text(max_size=80))
def test_arbitrary_text_never_crashes(name: str) -> None:
    found = parse_timestamp(name)
    assert found is None or isinstance(found, datetime)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dbnet_20251017_215423", datetime(2025, 10, 17, 21, 54, 23)),
        ("run-20251017-215423-abc", datetime(2025, 10, 17, 21, 54, 23)),
        ("2025-10-17_21-54-23", datetime(2025, 10, 17, 21, 54, 23)),
        ("2025-10-17T21:54:23", datetime(2025, 10, 17, 21, 54, 23)),
        # the last valid stamp names the run (a copy made later keeps the original's stamp first)
        ("20240101_000000_resumed_20251017_215423", datetime(2025, 10, 17, 21, 54, 23)),
        ("20251017_215423_then_20251399_999999", datetime(2025, 10, 17, 21, 54, 23)),
        ("20251399_999999", None),  # looks like a stamp, is not a date
        ("20250230_120000", None),  # 30 February
        ("120251017_215423", None),  # a longer digit run is not a stamp
        ("20251017_2154231", None),
        ("20251017215423", None),  # no separator
        ("2025-10-17", None),
        ("", None),
    ],
)
def test_parse_timestamp_examples(name: str, expected: datetime | None) -> None:
    assert parse_timestamp(name) == expected


@given(stamp=STAMPS, outer=st.lists(st.sampled_from(["outputs", "exp", "multirun"]), max_size=2))
def test_hydra_date_and_time_folders_give_the_run_timestamp(stamp: datetime, outer: list[str]) -> None:
    date = f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}"
    time = f"{stamp.hour:02d}-{stamp.minute:02d}-{stamp.second:02d}"
    assert parse_run_timestamp((*outer, date, time)) == stamp
    # a Hydra multirun job folder (".../DATE/TIME/0") takes its sweep's time
    assert parse_run_timestamp((*outer, date, time, "0")) == stamp


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("2025-10-17", "21-54-23"), datetime(2025, 10, 17, 21, 54, 23)),
        (("dbnet_20251017_215423",), datetime(2025, 10, 17, 21, 54, 23)),
        # innermost first: the run folder's own stamp wins over its parent's
        (("sweep_20240101_000000", "trial_20251017_215423"), datetime(2025, 10, 17, 21, 54, 23)),
        (("sweep_20240101_000000", "trial_a"), datetime(2024, 1, 1)),
        (("2025-02-30", "21-54-23"), None),  # not a date
        (("2025-10-17", "25-61-61"), None),  # not a time
        (("21-54-23",), None),  # a time with no date folder above it
        (("2025-10-17",), None),
        (("x", "21-54-23"), None),
        ((), None),
    ],
)
def test_parse_run_timestamp_examples(parts: tuple[str, ...], expected: datetime | None) -> None:
    assert parse_run_timestamp(parts) == expected


@given(st.lists(st.text(max_size=20), max_size=5))
def test_parse_run_timestamp_never_crashes(parts: list[str]) -> None:
    found = parse_run_timestamp(tuple(parts))
    assert found is None or isinstance(found, datetime)


# ----------------------------------------------------------------------------------------------- kinds

VERSIONS = st.none() | st.integers(0, 10**6)


def _versioned(stem: str, version: int | None) -> str:
    return stem if version is None else f"{stem}-v{version}"


@given(
    base=st.sampled_from(["best", "last", "Best", "LAST"]),
    version=VERSIONS,
    ext=st.sampled_from([".ckpt", ""]),
)
def test_best_and_last_with_and_without_version(base: str, version: int | None, ext: str) -> None:
    assert parse_kind(_versioned(base, version) + ext) == CheckpointKind(base.lower(), version)


@given(
    epoch=st.integers(0, 10**6),
    step=st.integers(0, 10**9),
    version=VERSIONS,
    padded=st.booleans(),
    metric=st.none() | st.floats(-1e3, 1e3, allow_nan=False).map(lambda x: f"{x:.4f}"),
    ext=st.sampled_from([".ckpt", ""]),
)
def test_epoch_step_names(
    epoch: int, step: int, version: int | None, padded: bool, metric: str | None, ext: str
) -> None:
    stem = f"epoch={epoch:02d}" if padded else f"epoch={epoch}"
    stem += f"-step={step}"
    if metric is not None:
        stem += f"-val_loss={metric}"
    assert parse_kind(_versioned(stem, version) + ext) == CheckpointKind("epoch", version, epoch, step)


@pytest.mark.parametrize(
    ("name", "expected", "label"),
    [
        ("best.ckpt", CheckpointKind("best"), "Best checkpoint"),
        ("best-v2.ckpt", CheckpointKind("best", 2), "Best checkpoint v2"),
        ("last.ckpt", CheckpointKind("last"), "Last checkpoint"),
        ("last-v1.ckpt", CheckpointKind("last", 1), "Last checkpoint v1"),
        ("epoch=0-step=3.ckpt", CheckpointKind("epoch", None, 0, 3), "Epoch 0 checkpoint (step 3)"),
        (
            "epoch=03-val_loss=0.12-v1.ckpt",
            CheckpointKind("epoch", 1, 3, None),
            "Epoch 3 checkpoint v1",
        ),
        ("val_loss=-0.5-epoch=2.ckpt", CheckpointKind("epoch", None, 2, None), "Epoch 2 checkpoint"),
        ("step=500.ckpt", CheckpointKind("epoch", None, None, 500), "Epoch checkpoint"),
        ("epoch=1e3.ckpt", CheckpointKind("epoch", None, 1000, None), "Epoch 1000 checkpoint"),
        ("model.ckpt", CheckpointKind("other"), "Checkpoint"),
        ("best_model.ckpt", CheckpointKind("other"), "Checkpoint"),
        ("model-v3.ckpt", CheckpointKind("other", 3), "Checkpoint v3"),
        ("best-vx.ckpt", CheckpointKind("other"), "Checkpoint"),
        (".ckpt", CheckpointKind("other"), "Checkpoint"),
    ],
)
def test_parse_kind_examples(name: str, expected: CheckpointKind, label: str) -> None:
    kind = parse_kind(name)
    assert kind == expected
    assert kind.describe() == label


def test_absurd_version_suffix_does_not_crash() -> None:
    """int() refuses digit strings over 4300 long; a name is never worth a ValueError."""
    kind = parse_kind("best-v" + "1" * 5000 + ".ckpt")
    assert kind.kind in {"best", "other"} and kind.version is None
    kind = parse_kind("epoch=" + "9" * 5000 + "-step=1.ckpt")
    assert (kind.kind, kind.epoch, kind.step) == ("epoch", None, 1)


@given(st.text(max_size=80))
def test_arbitrary_names_never_crash(name: str) -> None:
    kind = parse_kind(name)
    assert kind.kind in {"best", "last", "epoch", "other"}
    assert isinstance(kind.describe(), str)
    assert kind.version is None or kind.version >= 0
