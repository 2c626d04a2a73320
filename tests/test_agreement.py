"""ckptgate.agreement: which keys define a model, and how a config and a checkpoint's hyperparameters differ."""

from __future__ import annotations

from ckptgate.agreement import DEFAULT_IGNORED, MISSING, Difference, definition, describe, differences, flatten, ignored


def test_flatten_nests_keys_with_dots_and_keeps_lists_as_values() -> None:
    assert flatten({"a": {"b": 1, "c": [1, (2, 3)]}, "d": "x", "e": {}}) == {
        "a.b": 1,
        "a.c": [1, [2, 3]],
        "d": "x",
        "e": {},
    }


def test_training_keys_are_ignored_by_segment_and_glob() -> None:
    for key in ("lr", "optimizer.lr", "model.optimizer._target_", "head.pretrained", "warmup_steps", "scheduler"):
        assert ignored(key, DEFAULT_IGNORED), key
    for key in ("act", "depth", "head.k", "encoder.name", "lr_decay_layers"):
        assert not ignored(key, DEFAULT_IGNORED), key
    assert ignored("head.dropout", ("dropout",))
    assert ignored("loss.weights", ("loss.*",))


def test_definition_drops_ignored_keys_and_counts_the_recorded_class() -> None:
    args = {"channels": 4, "act": "relu", "lr": 0.1, "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3}}
    assert definition(args, None, DEFAULT_IGNORED) == {"channels": 4, "act": "relu"}
    assert definition(args, "pkg.Lit", DEFAULT_IGNORED)["class_path"] == "pkg.Lit"


def test_differences_name_changed_and_one_sided_keys() -> None:
    ours = {"act": "gelu", "depth": 2, "width": 8.0, "extra": True}
    theirs = {"act": "relu", "depth": 2, "width": 8, "k": 50}
    found = differences(ours, theirs)
    assert found == [
        Difference("act", "gelu", "relu"),
        Difference("extra", True, MISSING),
        Difference("k", MISSING, 50),
    ]  # 8.0 == 8: YAML and Python spell numbers differently, the model is the same
    assert describe(found) == 'act: "gelu" vs "relu"; extra: true vs (absent); k: (absent) vs 50'
    assert differences(theirs, dict(theirs)) == []


def test_describe_shows_a_few_and_counts_the_rest() -> None:
    found = [Difference(f"k{i}", i, i + 1) for i in range(7)]
    assert describe(found, limit=2) == "k0: 0 vs 1; k1: 1 vs 2; … (+5 more)"
    assert describe([Difference("long", "x" * 100, 1)]).endswith("…" + " vs 1")
