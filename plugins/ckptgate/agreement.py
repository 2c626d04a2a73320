"""Does a config say what the checkpoint itself says? Compare the keys that define the model.

Lightning stores the module's arguments in every checkpoint of a module that called ``save_hyperparameters``.
A config found elsewhere (a sidecar, the newest ``hparams.yaml`` of a folder two trainings wrote into) may
belong to another run: the weights may even load (same shapes, another activation) and the model computes
something else. Both sides are read through the same route, flattened to dotted keys and compared; keys that
only train the model (learning rate, optimizer, scheduler, batch size, pretrained downloads...) do not count.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckptgate.configs import AmbiguousConfig, ResolvedConfig
from ckptgate.errors import CheckError

# Keys that shape training, not the trained network: a difference there does not make another model.
# Each pattern matches a whole dotted key or any one of its segments (``optimizer`` covers ``optimizer.lr``).
DEFAULT_IGNORED = (
    "lr",
    "learning_rate",
    "weight_decay",
    "momentum",
    "betas",
    "optimizer",
    "optimizers",
    "scheduler",
    "lr_scheduler",
    "schedulers",
    "warmup*",
    "batch_size",
    "max_epochs",
    "max_steps",
    "pretrained",
    "seed",
    "*_seed",  # init_seed, data_seed: where training started, not what it ended with
    "_instantiator",
    "_class_path",
)


@dataclass(frozen=True)
class Difference:
    key: str  # dotted, relative to the section
    ours: Any  # the config's value (MISSING when absent)
    theirs: Any  # the checkpoint's value

    def describe(self) -> str:
        return f"{self.key}: {_shown(self.ours)} vs {_shown(self.theirs)}"


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


def _shown(value: Any) -> str:
    text = "(absent)" if value is MISSING else json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 60 else text[:59] + "…"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (their order defines the model)."""
    if isinstance(node, Mapping) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: _plain(node)} if prefix else {}


def _plain(value: Any) -> Any:
    """Tuples and lists compare alike (YAML has no tuples); 1 and 1.0 already compare equal."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def ignored(key: str, patterns: Iterable[str]) -> bool:
    segments = key.split(".")
    return any(fnmatch.fnmatchcase(key, p) or any(fnmatch.fnmatchcase(s, p) for s in segments) for p in patterns)


def definition(args: Mapping[str, Any], class_path: str | None, patterns: Iterable[str]) -> dict[str, Any]:
    """The keys of a section that define the model, flattened; the recorded class counts as one."""
    patterns = tuple(patterns)
    defined = {key: value for key, value in flatten(args).items() if not ignored(key, patterns)}
    if class_path is not None:
        defined["class_path"] = class_path
    return defined


def differences(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[Difference]:
    """Every defining key whose value differs, or that only one side has, sorted."""
    found = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, MISSING), theirs.get(key, MISSING)
        if a is MISSING or b is MISSING or a != b:
            found.append(Difference(key, a, b))
    return found


def describe(found: list[Difference], limit: int = 4) -> str:
    more = f"; … (+{len(found) - limit} more)" if len(found) > limit else ""
    return "; ".join(d.describe() for d in found[:limit]) + more


def choose(
    found: Sequence[ResolvedConfig],
    definitions: Sequence[Mapping[str, Any]],
    stored: Callable[[], Mapping[str, Any] | None],
    *,
    relpath: str,
    stem: str,
    command: str = "pytest",
) -> ResolvedConfig:
    """Several run logs at one distance from a checkpoint (trainings into one ``dirpath``): the first when they
    all define the same model; else the first that agrees with the checkpoint's stored definition (``stored``,
    asked only then: it reads the checkpoint). Raises when none agrees, or nothing in the checkpoint tells."""
    if all(definition == definitions[0] for definition in definitions):
        return found[0]
    listed = ", ".join(resolved.where for resolved in found)
    theirs = stored()
    if theirs is None:
        first = describe(differences(definitions[0], definitions[1]), limit=3)
        raise AmbiguousConfig(
            f"{len(found)} run logs could be the config of {relpath} and they disagree ({found[0].where} vs "
            f"{found[1].where}: {first}); the checkpoint stores no hyper_parameters that tell which training "
            f"wrote it. Run `{command} --fix` to prove each by the weights, or write {stem}.config.json "
            f"beside it with the right `model` section. Candidates: {listed}"
        )
    for resolved, definition in zip(found, definitions, strict=True):
        if not differences(definition, theirs):
            note = f"chosen among {len(found)} run logs ({listed}): the one that agrees with the checkpoint"
            return dataclasses.replace(resolved, notes=(*resolved.notes, note))
    nearest = describe(differences(definitions[0], theirs))
    raise CheckError(
        f"none of the {len(found)} run logs beside {relpath} agrees with the hyper_parameters stored in it "
        f"({found[0].where} vs the checkpoint: {nearest}); they belong to other trainings. Candidates: {listed}"
    )


def contradiction(config: ResolvedConfig, ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str | None:
    """Why ``config`` (its definition ``ours``) is not the config of a checkpoint that stores ``theirs``."""
    found = differences(ours, theirs)
    if not found:
        return None
    return (
        f"the config contradicts the checkpoint: {config.label} and the hyper_parameters stored in the "
        f"checkpoint differ in {len(found)} key(s) that define the model: {describe(found)} (config vs "
        "checkpoint). It belongs to another training; use the config that trained this checkpoint (or list keys "
        "that only train it in ckpt_hparams_ignore)"
    )
