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
