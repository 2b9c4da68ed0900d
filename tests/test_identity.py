"""Row keys: stable across processes and versions of the data, made as each source says."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from service.config import DataConfig
from service.data import identity, sources
from tests.helpers import python_c


def _blake(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def test_hash_strings_is_blake2b_of_the_utf8_bytes():
    keys = identity.hash_strings(["cat/001.png", "ü"])
    assert keys.dtype == np.uint64
    assert keys.tolist() == [_blake("cat/001.png"), _blake("ü")]


def test_hash_rows_canonicalises_numbers():
    x = np.arange(12, dtype="float32").reshape(3, 2, 2)
    as_float = identity.hash_rows(x, np.array([1.0, 2.0, 3.0]))
    as_int = identity.hash_rows(x.astype("int64"), np.array([1, 2, 3]))
    np.testing.assert_array_equal(as_float, as_int)
    assert len(set(as_float.tolist())) == 3
    assert identity.hash_rows(np.array([[0.0]]))[0] == identity.hash_rows(np.array([[-0.0]]))[0]
    with pytest.raises(ValueError, match="arrays differ in rows"):
        identity.hash_rows(x, np.zeros(2))


def test_hash_table_ignores_column_order_and_int_or_float():
    frame = pd.DataFrame({"a": [1, 2], "text": ["x", "y"], "label": ["cat", "dog"]})
    keys = identity.hash_table(frame)
    np.testing.assert_array_equal(identity.hash_table(frame[["label", "text", "a"]]), keys)
    np.testing.assert_array_equal(identity.hash_table(frame.astype({"a": "float64"})), keys)
    renamed = frame.rename(columns={"a": "b"})
    assert not set(identity.hash_table(renamed).tolist()) & set(keys.tolist())


def test_hash_table_batches_agree_with_the_whole_and_missing_cells_have_one_key():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "s": ["x", np.nan, "z"]})
    whole = identity.hash_table(frame)
    batches = np.concatenate([identity.hash_table(frame[:2]), identity.hash_table(frame[2:])])
    np.testing.assert_array_equal(batches, whole)  # a row's key is its own: streamable
    as_none = frame.astype({"s": object})
    as_none.loc[1, "s"] = None  # pyarrow's empty cell
    np.testing.assert_array_equal(identity.hash_table(as_none), whole)


def test_ids_read_as_floats_keep_their_keys():
    np.testing.assert_array_equal(
        identity.hash_ids(np.array([7.0, 12.0])), identity.hash_ids(np.array([7, 12]))
    )
    assert identity.hash_ids(["u7"])[0] == _blake("u7")


def test_keys_and_positions_are_the_same_in_a_fresh_process():
    code = (
        "import json, numpy as np, pandas as pd;"
        "from service.data import identity as i;"
        "k = i.hash_table(pd.DataFrame({'a': [1.5, 2.0], 's': ['x', 'y']}));"
        "r = i.hash_rows(np.arange(6.0).reshape(2, 3), np.array(['p', 'q']));"
        "print(json.dumps([k.tolist(), r.tolist(), i.positions(k, seed=3).tolist()]))"
    )
    result = python_c(code, check=True)
    table, rows, pos = json.loads(result.stdout)
    k = identity.hash_table(pd.DataFrame({"a": [1.5, 2.0], "s": ["x", "y"]}))
    assert table == k.tolist()
    r = identity.hash_rows(np.arange(6.0).reshape(2, 3), np.array(["p", "q"]))
    assert rows == r.tolist()
    assert pos == identity.positions(k, seed=3).tolist()


def test_positions_are_uniform_and_seeded():
    keys = identity.hash_strings(str(i) for i in range(20000))
    p0, p1 = identity.positions(keys, seed=0), identity.positions(keys, seed=1)
    assert 0.0 <= p0.min()
    assert p0.max() < 1.0
    assert abs((p0 < 0.15).mean() - 0.15) < 0.01
    assert abs(np.corrcoef(p0, p1)[0, 1]) < 0.03  # another seed: unrelated positions
    np.testing.assert_array_equal(identity.positions(keys[::-1], seed=0), p0[::-1])


def test_folder_and_record_sources_key_rows_by_file(tmp_path):
    import tensorflow as tf

    for cls in ("neg", "pos"):
        (tmp_path / "txt" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "txt" / cls / f"{i}.txt").write_text(f"{cls} {i}")
    texts = sources.load(
        DataConfig.model_validate({"source": "text_dir", "path": str(tmp_path / "txt")})
    )
    assert texts.keys.tolist() == [_blake(f"{c}/{i}.txt") for c in ("neg", "pos") for i in range(2)]

    (tmp_path / "rec").mkdir()
    for name, n in (("a.tfrecord", 2), ("b.tfrecord", 1)):
        with tf.io.TFRecordWriter(str(tmp_path / "rec" / name)) as writer:
            for i in range(n):
                feature = {
                    "f": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i)])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    records = sources.load(
        DataConfig.model_validate(
            {
                "source": "tfrecord",
                "path": str(tmp_path / "rec"),
                "label": "label",
                "feature_spec": {"f": {"shape": [1]}, "label": {"dtype": "int64"}},
            }
        )
    )
    assert records.keys.tolist() == [
        _blake(s) for s in ("a.tfrecord:0", "a.tfrecord:1", "b.tfrecord:0")
    ]


def test_every_builtin_source_has_one_key_per_row():
    for cfg in ({"source": "digits"}, {"source": "breast_cancer"}, {"source": "sunspots"}):
        data = sources.load(DataConfig.model_validate(cfg))
        assert data.keys is not None
        assert data.keys.dtype == np.uint64
        assert data.keys.shape == (len(data),)


def test_npz_keys_follow_content_not_position(tmp_path):
    x = np.arange(20.0).reshape(10, 2)
    y = np.array(["a", "b"] * 5)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.savez(tmp_path / "r.npz", x=x[::-1], y=y[::-1])
    a = sources.load(DataConfig.model_validate({"source": "npz", "path": str(tmp_path / "d.npz")}))
    b = sources.load(DataConfig.model_validate({"source": "npz", "path": str(tmp_path / "r.npz")}))
    np.testing.assert_array_equal(a.keys, b.keys[::-1])
