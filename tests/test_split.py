"""The one frozen split: deterministic, disjoint, stratified, every class everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from service.data.sources import load_digits
from service.data.split import stratified_split
from service.errors import UserError

FRACTIONS = (0.7, 0.15, 0.15)


@pytest.fixture(scope="module")
def labels():
    return load_digits().y


def test_same_seed_same_indices(labels):
    a = stratified_split(labels, fractions=FRACTIONS, seed=42)
    b = stratified_split(labels, fractions=FRACTIONS, seed=42)
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.fingerprint == b.fingerprint


def test_other_seed_other_split(labels):
    a = stratified_split(labels, fractions=FRACTIONS, seed=42)
    b = stratified_split(labels, fractions=FRACTIONS, seed=43)
    assert a.fingerprint != b.fingerprint
    assert not np.array_equal(a.test, b.test)


def test_parts_are_disjoint_and_cover_every_row(labels):
    s = stratified_split(labels, fractions=FRACTIONS, seed=0)
    joined = np.concatenate([s.train, s.validation, s.test])
    assert len(joined) == len(labels) == len(np.unique(joined))
    assert not set(s.train) & set(s.test)
    assert not set(s.validation) & set(s.test)


def test_every_class_in_every_part_in_proportion(labels):
    s = stratified_split(labels, fractions=FRACTIONS, seed=0)
    classes, totals = np.unique(labels, return_counts=True)
    counts = s.class_counts(labels)
    for part, fraction in zip(("train", "validation", "test"), FRACTIONS, strict=True):
        assert set(counts[part]) == {str(c) for c in classes}
        for c, total in zip(classes, totals, strict=True):
            assert abs(counts[part][str(c)] - total * fraction) <= 1.0


def test_sizes_follow_fractions(labels):
    s = stratified_split(labels, fractions=(0.6, 0.2, 0.2), seed=1)
    n = len(labels)
    assert abs(len(s.test) - 0.2 * n) <= 10  # within one row per class (10 classes)
    assert abs(len(s.validation) - 0.2 * n) <= 10


def test_class_too_small_is_user_error():
    y = np.array([0] * 50 + [1] * 2)
    with pytest.raises(UserError, match=r"class 1 has 2 rows.*need at least \d+ rows"):
        stratified_split(y, fractions=FRACTIONS, seed=0)


def _cfg(**kw):
    from service.config import SplitConfig

    return SplitConfig(**kw)


def test_time_series_split_keeps_time_order():
    from service.data.split import make_split

    y = np.arange(100, dtype="float32")
    s = make_split(y, _cfg(), seed=0, classification=False, ordered=True)
    assert s.train.max() < s.validation.min()
    assert s.validation.max() < s.test.min()
    np.testing.assert_array_equal(np.concatenate([s.train, s.validation, s.test]), np.arange(100))
    # ordered splits ignore the seed: nothing is shuffled
    again = make_split(y, _cfg(), seed=99, classification=False, ordered=True)
    assert again.fingerprint == s.fingerprint


def test_group_split_never_puts_a_group_in_two_parts():
    from service.data.split import make_split

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=600).astype(str)
    y = rng.integers(0, 2, size=600)
    s = make_split(y, _cfg(), seed=5, classification=True, groups=groups)
    seen = [set(groups[idx]) for idx in (s.train, s.validation, s.test)]
    assert not seen[0] & seen[1]
    assert not seen[0] & seen[2]
    assert not seen[1] & seen[2]
    assert sum(map(len, seen)) == 30
    assert 0.5 < len(s.train) / 600 < 0.85  # groups approximate the fractions


def test_row_counts_are_exact():
    from service.data.split import make_split

    y = np.repeat(np.arange(4), 50)
    s = make_split(y, _cfg(train=-1, validation=20, test=40), seed=1, classification=False)
    assert (len(s.train), len(s.validation), len(s.test)) == (140, 20, 40)
    with pytest.raises(UserError, match="expected counts that fit in 200 rows"):
        make_split(y, _cfg(train=-1, validation=150, test=60), seed=1, classification=False)


def test_kfold_covers_train_and_validation_once():
    from service.data.split import kfold

    y = np.repeat(np.arange(3), 20)
    rows = np.arange(50)
    folds = kfold(y, rows, k=5, seed=0, stratify=True)
    assert len(folds) == 5
    scored = np.concatenate([b for _, b in folds])
    np.testing.assert_array_equal(np.sort(scored), rows)
    for fit, score in folds:
        assert not set(fit) & set(score)
