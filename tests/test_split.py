"""The one frozen split, decided by row identity: deterministic, disjoint, stable.

A row's part follows its key and `data.split.seed` alone, so the run's `seed`, the
order of the rows and rows appended later change no shared row's part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from service.config import DataConfig, SplitConfig, validate
from service.data import sources
from service.data.identity import hash_strings
from service.data.sources import load_digits
from service.data.split import kfold, make_split
from service.errors import UserError

FRACTIONS = (0.7, 0.15, 0.15)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _cfg(**kw) -> SplitConfig:
    return SplitConfig(**kw)


def _split(data, **kw):
    return make_split(
        data.y,
        _cfg(**kw),
        keys=data.keys,
        classification=True,
        class_names=data.class_names,
    )


def _keys_by_part(split) -> dict[str, set[int]]:
    return {name: set(split.keys[idx].tolist()) for name, idx in split.parts().items()}


def test_same_data_any_run_seed_same_split(digits):
    from pipelines import steps

    splits = [
        steps.split(validate({"name": "d", "seed": seed}), digits).split for seed in (1, 42, 1234)
    ]
    for other in splits[1:]:
        for name in ("train", "validation", "test"):
            np.testing.assert_array_equal(getattr(other, name), getattr(splits[0], name))
        assert other.fingerprint == splits[0].fingerprint


def test_other_split_seed_other_split(digits):
    a, b = _split(digits, seed=0), _split(digits, seed=1)
    assert a.fingerprint != b.fingerprint
    overlap = len(set(a.test) & set(b.test)) / len(a.test)
    assert overlap < 0.3  # independent draws share about 15% of test rows


def test_parts_are_disjoint_and_cover_every_row(digits):
    s = _split(digits)
    joined = np.concatenate([s.train, s.validation, s.test])
    assert len(joined) == len(digits) == len(np.unique(joined))


def test_sizes_and_class_shares_follow_the_fractions_up_to_chance(digits):
    s = _split(digits)
    n = len(digits)
    for name, fraction in zip(("train", "validation", "test"), FRACTIONS, strict=True):
        size = len(getattr(s, name))
        assert abs(size - fraction * n) <= 4 * np.sqrt(n * fraction * (1 - fraction))
    classes, totals = np.unique(digits.y, return_counts=True)
    counts = s.class_counts(digits.y)
    for part, fraction in zip(("train", "validation", "test"), FRACTIONS, strict=True):
        assert set(counts[part]) == {str(c) for c in classes}  # every class everywhere
        for c, total in zip(classes, totals, strict=True):
            spread = 4 * np.sqrt(total * fraction * (1 - fraction))
            assert abs(counts[part][str(c)] - total * fraction) <= spread


def test_reordered_rows_keep_their_parts_and_the_fingerprint(digits):
    s = _split(digits)
    order = np.random.default_rng(3).permutation(len(digits))
    shuffled = make_split(digits.y[order], _cfg(), keys=digits.keys[order], classification=True)
    assert _keys_by_part(shuffled) == _keys_by_part(s)
    assert shuffled.fingerprint == s.fingerprint


def test_a_rows_part_does_not_depend_on_other_rows(digits):
    s = _split(digits)
    half = np.arange(0, len(digits), 2)
    sub = make_split(digits.y[half], _cfg(), keys=digits.keys[half], classification=True)
    whole = {int(k): p for p, idx in s.parts().items() for k in digits.keys[idx]}
    for part, idx in sub.parts().items():
        assert {whole[int(k)] for k in digits.keys[half][idx]} == {part}


def test_identical_keys_share_a_part():
    keys = hash_strings([f"row{i % 50}" for i in range(400)])  # each key eight times
    s = make_split(np.zeros(400), _cfg(), keys=keys, classification=False)
    for idx in s.parts().values():
        others = np.setdiff1d(np.arange(400), idx)
        assert not set(keys[idx].tolist()) & set(keys[others].tolist())


def _csv(path, frame: pd.DataFrame, **extra) -> DataConfig:
    frame.to_csv(path, index=False)
    return DataConfig.model_validate(
        {"source": "csv", "path": str(path), "label": "label", **extra}
    )


def _frame(n: int, seed: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(start, start + n),
            "a": rng.integers(0, 1000, size=n),  # ints: appended floats must not re-key them
            "b": rng.normal(size=n),
            "label": rng.choice(["cat", "dog", "eel"], size=n),
        }
    )


@pytest.mark.parametrize("id_column", [None, "id"], ids=["content", "id_column"])
def test_appending_ten_percent_rows_to_a_csv_keeps_every_old_test_row(tmp_path, id_column):
    old = _frame(600, seed=0)
    extra = {"id_column": id_column} if id_column else {}
    before = sources.load(_csv(tmp_path / "old.csv", old, **extra))
    new = _frame(60, seed=1, start=600)
    new["a"] = new["a"] + 0.5  # the grown file's column `a` now reads as float
    grown = pd.concat([old, new], ignore_index=True)
    after = sources.load(_csv(tmp_path / "grown.csv", grown, **extra))
    assert len(after) == 660
    np.testing.assert_array_equal(after.keys[:600], before.keys)  # same rows, same keys

    kw = {"classification": True}
    a = make_split(before.y, _cfg(), keys=before.keys, **kw)
    b = make_split(after.y, _cfg(), keys=after.keys, **kw)
    np.testing.assert_array_equal(np.intersect1d(b.test, np.arange(600)), a.test)
    np.testing.assert_array_equal(np.intersect1d(b.validation, np.arange(600)), a.validation)
    assert 0 < len(np.setdiff1d(b.test, a.test)) < 30  # some new rows went to test too


def test_an_id_column_keeps_a_rows_part_when_its_content_changes(tmp_path):
    frame = _frame(300, seed=0)
    a = sources.load(_csv(tmp_path / "a.csv", frame, id_column="id"))
    edited = frame.assign(b=frame["b"] + 1.0)
    b = sources.load(_csv(tmp_path / "b.csv", edited, id_column="id"))
    np.testing.assert_array_equal(a.keys, b.keys)
    assert b.feature_names == ("a", "b")  # the id is not a feature
    by_content = sources.load(_csv(tmp_path / "c.csv", edited))
    assert not set(by_content.keys.tolist()) & set(a.keys.tolist())


def test_id_column_faults_are_user_errors(tmp_path):
    frame = _frame(40, seed=0)
    with pytest.raises(UserError, match=r"missing columns \['user'\]"):
        sources.load(_csv(tmp_path / "a.csv", frame, id_column="user"))
    frame["id"] = frame["id"].astype(float)
    frame.loc[4, "id"] = np.nan
    with pytest.raises(UserError, match=r"column 'id' \(data.id_column\).*first row 4"):
        sources.load(_csv(tmp_path / "b.csv", frame, id_column="id"))
    with pytest.raises(UserError, match="`id_column` is for csv and parquet"):
        validate({"name": "d", "data": {"source": "digits", "id_column": "id"}})


def test_class_too_small_is_user_error():
    y = np.array([0] * 50 + [1] * 2)
    keys = hash_strings([str(i) for i in range(52)])
    with pytest.raises(UserError, match=r"class 1 has 2 rows.*need at least \d+ rows"):
        make_split(y, _cfg(), keys=keys, classification=True)


def test_a_class_the_hash_leaves_out_of_a_part_is_user_error():
    # Ten rows of class 'b': find a split seed that sends none of them to test.
    y = np.array([0] * 200 + [1] * 10)
    keys = hash_strings([str(i) for i in range(210)])
    for seed in range(200):
        split = make_split(y, _cfg(seed=seed, stratify=False), keys=keys, classification=True)
        if not (y[split.test] == 1).any():
            break
    else:  # pragma: no cover - 0.85**10 is 20%: one of 200 seeds does it
        raise AssertionError("no seed left class 1 out of test")
    with pytest.raises(
        UserError, match=rf"class 'b' has 10 rows and none went to test.*seed {seed}"
    ):
        make_split(y, _cfg(seed=seed), keys=keys, classification=True, class_names=("a", "b"))


def test_time_series_split_keeps_time_order_whatever_the_seeds():
    y = np.arange(100, dtype="float32")
    keys = hash_strings([str(i) for i in range(100)])
    s = make_split(y, _cfg(), keys=keys, classification=False, ordered=True)
    assert s.train.max() < s.validation.min()
    assert s.validation.max() < s.test.min()
    np.testing.assert_array_equal(np.concatenate([s.train, s.validation, s.test]), np.arange(100))
    again = make_split(y, _cfg(seed=99), keys=keys, classification=False, ordered=True)
    assert again.fingerprint == s.fingerprint


def test_group_split_never_puts_a_group_in_two_parts_and_is_stable():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=600).astype(str)
    y = rng.integers(0, 2, size=600)
    keys = hash_strings([str(i) for i in range(600)])
    s = make_split(y, _cfg(), keys=keys, classification=True, groups=groups)
    seen = [set(groups[idx]) for idx in (s.train, s.validation, s.test)]
    assert not seen[0] & seen[1]
    assert not seen[0] & seen[2]
    assert not seen[1] & seen[2]
    assert sum(map(len, seen)) == 30
    assert 0.5 < len(s.train) / 600 < 0.9  # groups approximate the fractions
    # More groups later: the old groups stay in their parts.
    more = np.concatenate([groups, rng.integers(30, 40, size=200).astype(str)])
    keys2 = hash_strings([str(i) for i in range(800)])
    s2 = make_split(np.zeros(800), _cfg(), keys=keys2, classification=False, groups=more)
    for part, old in zip((s2.train, s2.validation, s2.test), seen, strict=True):
        assert old <= set(more[part])


def test_too_few_groups_for_a_part_is_user_error():
    from service.data.identity import positions

    groups = np.array(["a", "b", "c"] * 20)
    keys = hash_strings([str(i) for i in range(60)])

    def parts_reached(seed: int) -> int:
        pos = positions(hash_strings(["a", "b", "c"]), seed=seed)
        return len({2 if p < 0.15 else 1 if p < 0.3 else 0 for p in pos})

    seed = next(s for s in range(50) if parts_reached(s) < 3)  # most seeds: 3 groups miss
    with pytest.raises(UserError, match=rf"data.group: 3 groups and none went to .*seed {seed}"):
        make_split(np.zeros(60), _cfg(seed=seed), keys=keys, classification=False, groups=groups)


def test_row_counts_are_exact_and_stable_under_reordering():
    y = np.repeat(np.arange(4), 50)
    keys = hash_strings([str(i) for i in range(200)])
    cfg = _cfg(train=-1, validation=20, test=40)
    s = make_split(y, cfg, keys=keys, classification=False)
    assert (len(s.train), len(s.validation), len(s.test)) == (140, 20, 40)
    order = np.random.default_rng(1).permutation(200)
    r = make_split(y[order], cfg, keys=keys[order], classification=False)
    assert _keys_by_part(r) == _keys_by_part(s)
    with pytest.raises(UserError, match="expected counts that fit in 200 rows"):
        make_split(y, _cfg(train=-1, validation=150, test=60), keys=keys, classification=False)


def test_keys_are_required_unless_ordered():
    with pytest.raises(ValueError, match="row keys are required"):
        make_split(np.zeros(10), _cfg(), keys=None, classification=False)


def test_fit_keys_are_train_and_validation(digits):
    s = _split(digits)
    fit = s.fit_keys()
    assert fit.dtype == np.uint64
    assert np.all(np.diff(fit.astype("float64")) > 0)  # sorted, unique
    assert set(fit.tolist()) == set(digits.keys[np.concatenate([s.train, s.validation])].tolist())
    assert not set(fit.tolist()) & set(digits.keys[s.test].tolist())


def test_kfold_covers_train_and_validation_once():
    y = np.repeat(np.arange(3), 20)
    rows = np.arange(50)
    folds = kfold(y, rows, k=5, seed=0, stratify=True)
    assert len(folds) == 5
    scored = np.concatenate([b for _, b in folds])
    np.testing.assert_array_equal(np.sort(scored), rows)
    for fit, score in folds:
        assert not set(fit) & set(score)
