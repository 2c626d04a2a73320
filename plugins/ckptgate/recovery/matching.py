"""Which sources may belong to a checkpoint, and how strongly: every clue, ranked; names are hints only.

A run that says it wrote into the checkpoint's run folder (an output-location value of its config or
command line) is strong evidence. Time is weaker: the folder's timestamp and the run's start differ by
seconds, and folder names may be local time while wandb records UTC, so the UTC offsets seen in the team's
own runs are tried too. Every candidate within reach is kept: only loading the weights decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from ckptgate.discovery import CheckpointRecord
from ckptgate.recovery.evidence import Candidate, Source, Tier

DEFAULT_TOLERANCE_S = 120.0
MAX_OFFSET_HOURS = 14  # UTC-12 .. UTC+14
ZONE_STEP_S = 15 * 60  # UTC+5:30, UTC+5:45 exist
# Folder names too generic to count as "named" when found in a config (Lightning's, Hydra's, ours).
_GENERIC = frozenset({"checkpoints", "outputs", "lightning_logs", "wandb", "logs", "runs", "ckpts", "."})
_GENERIC_PATTERN = re.compile(r"version_\d+")  # Lightning's logger folders: version_0, version_1, ...
_MIN_NAME = 12  # a single folder name shorter than this is too common to tie a run to it


def _human(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(part for part in parts if part) or f"{secs} s"


def _relation(delta_s: float) -> str:
    return f"{_human(delta_s)} {'after' if delta_s >= 0 else 'before'}"


def _generic(part: str) -> bool:
    return part in _GENERIC or _GENERIC_PATTERN.fullmatch(part) is not None


def folder_needles(ckpt: CheckpointRecord) -> list[str]:
    """Strings that, found in a run's config or arguments, mean the run wrote into this folder."""
    needles = []
    relpath = ckpt.run_relpath
    # a path of several folders is specific unless every part is generic (lightning_logs/version_0);
    # a single folder name only when long enough ("a", "run1" are found in any text)
    if "/" in relpath and not all(_generic(part) for part in relpath.split("/")):
        needles.append(relpath)
    name = ckpt.run_dir.name
    if not _generic(name) and len(name) >= _MIN_NAME and name not in needles:
        needles.append(name)
    return needles


def names(text: str, needle: str) -> bool:
    """Whether ``text`` names the folder ``needle`` as a whole name: ``run_a`` is not named by ``run_a_v2``."""
    return re.search(rf"(?<![\w.\-]){re.escape(needle)}(?![\w\-])", text) is not None


def _zone(offset_s: int) -> str:
    sign = "+" if offset_s >= 0 else "-"
    hours, minutes = divmod(abs(offset_s) // 60, 60)
    return f"{sign}{hours}" + (f":{minutes:02d}" if minutes else "")


def observed_offsets(sources: list[Source], tolerance_s: float = DEFAULT_TOLERANCE_S) -> set[int]:
    """UTC offsets (seconds) the team's machines are seen to use: a run whose folder name is local time and
    whose metadata is UTC shows its zone. Only these are tried, never all 38 zones: in a crowded wandb folder
    some unrelated run is always a whole number of hours away."""
    found: set[int] = set()
    for source in sources:
        if source.started_local is None or source.started_utc is None:
            continue
        utc = source.started_utc.astimezone(timezone.utc).replace(tzinfo=None)
        difference = (source.started_local - utc).total_seconds()
        offset = round(difference / ZONE_STEP_S) * ZONE_STEP_S  # zones are whole quarter hours
        if abs(difference - offset) <= tolerance_s and abs(offset) <= MAX_OFFSET_HOURS * 3600 and offset:
            found.add(int(offset))
    return found


def match(
    ckpt: CheckpointRecord,
    source: Source,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    offsets: Iterable[int] = (),
) -> Candidate | None:
    """The strongest way ``source`` is tied to ``ckpt``, or None when nothing ties them.

    ``offsets`` are the UTC offsets (seconds) worth trying against a run's UTC start (see
    :func:`observed_offsets`); UTC itself is always tried.
    """
    if ckpt.run_relpath != "." and ckpt.run_dir in source.path.parents:
        inside = source.path.relative_to(ckpt.run_dir).as_posix()
        return Candidate(source, Tier.IN_RUN_FOLDER, f"it lies in the checkpoint's run folder ({inside})")
    for needle in folder_needles(ckpt):
        if names(source.text, needle):
            return Candidate(source, Tier.NAMES_FOLDER, f"its config or command line names {needle!r}")
    stamp = ckpt.run_timestamp
    if stamp is None:
        return None
    best: Candidate | None = None
    if source.started_local is not None:
        delta = (source.started_local - stamp).total_seconds()
        if abs(delta) <= tolerance_s:
            best = Candidate(
                source,
                Tier.TIMESTAMP,
                f"run started {_relation(delta)} the folder's timestamp {stamp:%Y-%m-%d %H:%M:%S}",
                abs(delta),
            )
    if source.started_utc is not None:
        utc = source.started_utc.astimezone(timezone.utc).replace(tzinfo=None)
        for offset in sorted({0, *offsets}, key=abs):
            delta = (utc + timedelta(seconds=offset) - stamp).total_seconds()
            if abs(delta) > tolerance_s:
                continue
            tier = Tier.TIMESTAMP if offset == 0 else Tier.TIMESTAMP_OFFSET
            zone = "UTC" if offset == 0 else f"UTC{_zone(offset)}"
            found = Candidate(
                source,
                tier,
                f"run started {_relation(delta)} the folder's timestamp {stamp:%Y-%m-%d %H:%M:%S} read as {zone}",
                abs(delta),
            )
            if best is None or (found.tier, found.distance_s) < (best.tier, best.distance_s):
                best = found
            break
    return best


def rank(
    ckpt: CheckpointRecord,
    sources: list[Source],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    offsets: Iterable[int] = (),
) -> list[Candidate]:
    """Every source tied to ``ckpt``, strongest first (then closest in time, then by label)."""
    offsets = tuple(offsets)
    found = [c for c in (match(ckpt, s, tolerance_s, offsets) for s in sources) if c is not None]
    return sorted(found, key=lambda c: (c.tier, c.distance_s, c.source.label))


def nearest(ckpt: CheckpointRecord, sources: list[Source], tolerance_s: float = DEFAULT_TOLERANCE_S) -> str | None:
    """For a failure message: the closest source in time, however far, and the zone that would explain it."""
    stamp = ckpt.run_timestamp
    if stamp is None:
        return None
    best: tuple[float, str, bool] | None = None
    for source in sources:
        times: list[tuple[datetime, bool]] = []  # UTC first: on a tie it is the one that can suggest a zone
        if source.started_utc is not None:
            times.append((source.started_utc.astimezone(timezone.utc).replace(tzinfo=None), True))
        if source.started_local is not None:
            times.append((source.started_local, False))
        for when, is_utc in times:
            delta = (when - stamp).total_seconds()
            if best is None or abs(delta) < abs(best[0]):
                best = (delta, source.label, is_utc)
    if best is None:
        return None
    delta, label, is_utc = best
    text = f"the nearest, {label}, started {_relation(delta)} the folder's timestamp"
    offset = -round(delta / ZONE_STEP_S) * ZONE_STEP_S
    if is_utc and offset and abs(delta + offset) <= tolerance_s and abs(offset) <= MAX_OFFSET_HOURS * 3600:
        zone = _zone(int(offset))
        text += f"; if the folder names are local time at UTC{zone}, pass --ckpt-utc-offset {zone}"
    return text


def parse_offset(text: str) -> int:
    """``"+9"``, ``"-3:30"``, ``"5:45"`` -> seconds east of UTC; ValueError otherwise."""
    sign = -1 if text.strip().startswith("-") else 1
    hours, _, minutes = text.strip().lstrip("+-").partition(":")
    if not hours.isdigit() or (minutes and not minutes.isdigit()):
        raise ValueError(f"--ckpt-utc-offset {text!r}: expected hours east of UTC such as +9, -5 or +5:30")
    seconds = int(hours) * 3600 + int(minutes or 0) * 60
    if seconds > MAX_OFFSET_HOURS * 3600 or int(minutes or 0) >= 60:
        raise ValueError(f"--ckpt-utc-offset {text!r}: no time zone is that far from UTC")
    return sign * seconds
