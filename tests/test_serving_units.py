"""The serving pieces that need no model: JSON tensor rules, configs, batching, metrics.

The end-to-end checks against a real `kts serve` process are in test_serving_server.py.
"""

from __future__ import annotations

import base64
import threading
import time

import numpy as np
import pytest

from serving import config as cfg
from serving.batching import QUEUE_FULL, Batcher
from serving.errors import HTTP_STATUS, ServingConfigError, ServingError
from serving.metrics import Metrics, histogram_totals
from serving.tensors import (
    columnar_json,
    inputs_to_arrays,
    instances_to_arrays,
    json_to_array,
    row_json,
)

DT_FLOAT, DT_STRING, DT_INT64, DT_INT32, DT_BOOL = 1, 7, 9, 3, 10

pytestmark = pytest.mark.xdist_group("serving")


# ------------------------------------------------------------------ JSON -> tensors


def test_row_format_batches_instances_and_keeps_dtype():
    arrays = instances_to_arrays([[[1, 2]], [[3, 4.5]]], {"x": DT_FLOAT}, may_have_bools=False)
    assert arrays["x"].dtype == np.float32
    assert arrays["x"].shape == (2, 1, 2)
    np.testing.assert_array_equal(arrays["x"][1, 0], [3.0, 4.5])


def test_row_format_named_inputs_must_have_every_key():
    dtypes = {"a": DT_FLOAT, "b": DT_INT64}
    arrays = instances_to_arrays([{"a": 1.0, "b": 2}, {"a": 3.0, "b": 4}], dtypes)
    assert arrays["b"].dtype == np.int64
    assert arrays["a"].tolist() == [1.0, 3.0]
    with pytest.raises(ServingError, match=r"keys must be equal to: a,b"):
        instances_to_arrays([{"a": 1.0}], dtypes)
    with pytest.raises(ServingError, match=r"does not have named input: c"):
        instances_to_arrays([{"a": 1.0, "c": 2}], dtypes)
    with pytest.raises(ServingError, match=r"plain list, but expecting list of objects"):
        instances_to_arrays([1.0], dtypes)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [[1, 2], [3]],
            r"Failed to process element: 1 of 'instances' list\. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1",
        ),
        ([[1, 2], 3], r"Failed to process element: 1 .*Expecting tensor size"),
        ([[1, "a"]], r'JSON Value: "a" Type: String is not of expected type: DT_FLOAT'),
        ([[True]], r"JSON Value: true Type: True is not of expected type: DT_FLOAT"),
        ([[[1], 2]], r"found at incorrect level|Encountered list at unexpected"),
    ],
)
def test_row_format_errors_use_upstream_messages(instances, message):
    with pytest.raises(ServingError, match=message) as err:
        instances_to_arrays(instances, {"x": DT_FLOAT})
    assert err.value.code == "INVALID_ARGUMENT"


def test_bools_are_never_silently_numbers():
    # numpy would turn [1.5, true] into [1.5, 1.0]; upstream rejects the bool.
    with pytest.raises(ServingError, match=r"Type: True is not of expected type: DT_FLOAT"):
        json_to_array([1.5, True], DT_FLOAT, may_have_bools=True)
    assert json_to_array([True, False], DT_BOOL).tolist() == [True, False]
    with pytest.raises(ServingError, match=r"is not of expected type: DT_BOOL"):
        json_to_array([1], DT_BOOL)


def test_int_dtypes_reject_decimals_and_out_of_range():
    assert json_to_array([1, -2], DT_INT32, may_have_bools=False).dtype == np.int32
    with pytest.raises(
        ServingError, match=r"JSON Value: 1\.5 Type: Number is not of expected type: DT_INT32"
    ):
        json_to_array([1.5], DT_INT32, may_have_bools=False)
    with pytest.raises(ServingError, match=r"is not of expected type: DT_INT32"):
        json_to_array([2**40], DT_INT32, may_have_bools=False)


def test_strings_and_base64():
    payload = base64.b64encode(b"\x00\xffbytes").decode()
    array = json_to_array(["plain", {"b64": payload}], DT_STRING)
    assert array.tolist() == [b"plain", b"\x00\xffbytes"]
    with pytest.raises(ServingError, match=r"not formatted correctly for base64 data"):
        json_to_array([{"b64": "x", "extra": 1}], DT_STRING)
    with pytest.raises(ServingError, match=r"Unable to base64 decode"):
        json_to_array([{"b64": "!!!"}], DT_STRING)


def test_columnar_format():
    arrays = inputs_to_arrays({"a": [[1.0, 2.0]], "b": [1, 2, 3]}, {"a": DT_FLOAT, "b": DT_INT64})
    assert arrays["a"].shape == (1, 2)
    assert arrays["b"].shape == (3,)
    with pytest.raises(ServingError, match=r"Missing named input: b in 'inputs' object\."):
        inputs_to_arrays({"a": [1.0]}, {"a": DT_FLOAT, "b": DT_INT64})
    assert inputs_to_arrays(7.0, {"x": DT_FLOAT})["x"].shape == ()


def test_row_and_columnar_answers():
    outputs = {"probabilities": np.array([[0.25, 0.75]], np.float32), "class_ids": np.array([1])}
    assert row_json(outputs) == {"predictions": [{"class_ids": 1, "probabilities": [0.25, 0.75]}]}
    assert columnar_json(outputs) == {
        "outputs": {"class_ids": [1], "probabilities": [[0.25, 0.75]]}
    }
    assert row_json({"y": np.array([1.5, 2.5], np.float32)}) == {"predictions": [1.5, 2.5]}
    raw = np.array([b"\x01\x02"], dtype=object)
    assert row_json({"image_bytes": raw}) == {"predictions": [{"b64": "AQI="}]}
    with pytest.raises(ServingError, match=r"inconsistent batch size: 3 expecting: 1"):
        row_json({"a": np.zeros(1), "b": np.zeros(3)})


# --------------------------------------------------------------------------- configs


def test_models_config_labels_follow_releases(tmp_path):
    path = tmp_path / "models.config"
    base = tmp_path / "digits"
    labels = cfg.register_version(path, model_name="digits", base_path=base, version=1)
    assert labels == {"canary": 1, "stable": 1}
    cfg.register_version(path, model_name="digits", base_path=base, version=2)
    settings = cfg.model_settings(path, "digits")
    assert settings.labels == {"canary": 2, "stable": 1}
    assert settings.policy == cfg.VersionPolicy("specific", versions=(1, 2))
    assert settings.base_path == str(base.resolve())
    assert cfg.move_label(path, model_name="digits", version=2) == 1
    settings = cfg.model_settings(path, "digits")
    assert settings.labels == {"canary": 2, "stable": 2}
    assert settings.policy.versions == (2,)
    assert cfg.rollback_target(settings, [1, 2, 3]) == 1
    with pytest.raises(ServingConfigError, match=r"no version older than stable version 2"):
        cfg.rollback_target(settings, [2, 3])
    with pytest.raises(ServingConfigError, match=r"expected one of 'digits'"):
        cfg.move_label(path, model_name="digit", version=1)
    # The file stays a text ModelServerConfig that TF Serving reads.
    text = path.read_text()
    assert "model_config_list" in text
    assert 'key: "stable"' in text
    assert "specific" in text


def test_models_config_rejects_bad_text(tmp_path):
    path = tmp_path / "models.config"
    path.write_text("model_config_list { config { nam: 'x' } }")
    with pytest.raises(ServingConfigError, match=r'has no field named "nam"'):
        cfg.load_model_settings(path)
    path.write_text(
        "model_config_list { config { name: 'x' base_path: '/b' model_platform: 'torch' } }"
    )
    with pytest.raises(ServingConfigError, match=r"Invalid value for `model_platform`.*'torch'"):
        cfg.load_model_settings(path)


def test_version_policies():
    on_disk = [1, 2, 5]
    assert cfg.VersionPolicy().aspired(on_disk) == [5]
    assert cfg.VersionPolicy("latest", num_versions=2).aspired(on_disk) == [2, 5]
    assert cfg.VersionPolicy("all").aspired(on_disk) == on_disk
    assert cfg.VersionPolicy("specific", versions=(1, 7)).aspired(on_disk) == [1]


def test_batching_parameters_file_in_upstream_text_format(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text(
        "# as in serving_config.md\n"
        "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n"
        "allowed_batch_sizes: 32\nallowed_batch_sizes: 128\n"
    )
    params = cfg.read_batching_parameters(path)
    assert params == cfg.BatchingParameters(
        max_batch_size=128,
        batch_timeout_micros=0,
        max_enqueued_batches=1000000,
        num_batch_threads=8,
        allowed_batch_sizes=(32, 128),
    )
    path.write_text("max_batch_size: 12")
    with pytest.raises(ServingConfigError, match=r"not a text BatchingParameters"):
        cfg.read_batching_parameters(path)
    path.write_text("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(
        ServingConfigError, match=r"allowed_batch_sizes.*ending with max_batch_size \(8\)"
    ):
        cfg.read_batching_parameters(path)


def test_monitoring_config(tmp_path):
    path = tmp_path / "monitoring.txt"
    path.write_text("prometheus_config { enable: true, path: '/metrics/x' }")
    assert cfg.read_monitoring_config(path) == "/metrics/x"
    path.write_text("prometheus_config { enable: true }")
    assert cfg.read_monitoring_config(path) == "/monitoring/prometheus/metrics"
    path.write_text("prometheus_config { enable: false }")
    assert cfg.read_monitoring_config(path) is None


def test_http_status_mapping_is_upstreams():
    assert HTTP_STATUS["INVALID_ARGUMENT"] == 400
    assert HTTP_STATUS["FAILED_PRECONDITION"] == 400
    assert HTTP_STATUS["NOT_FOUND"] == 404
    assert HTTP_STATUS["UNAVAILABLE"] == 503
    assert HTTP_STATUS["RESOURCE_EXHAUSTED"] == 429
    assert HTTP_STATUS["UNIMPLEMENTED"] == 501
    assert HTTP_STATUS["INTERNAL"] == 500


# -------------------------------------------------------------------------- batching


def _slow_double(gate: threading.Event | None = None, calls: list | None = None):
    def run(inputs):
        if gate is not None:
            gate.wait(5)
        if calls is not None:
            calls.append(int(inputs["x"].shape[0]))
        time.sleep(0.02)
        return {"y": inputs["x"] * 2}

    return run


def _concurrently(fn, count):
    results, errors = [None] * count, [None] * count

    def worker(i):
        try:
            results[i] = fn(i)
        except Exception as err:
            errors[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results, errors


def test_batcher_merges_concurrent_requests_and_splits_answers():
    calls: list[int] = []
    sizes: list[int] = []
    gate = threading.Event()
    params = cfg.BatchingParameters(
        max_batch_size=64, batch_timeout_micros=0, max_enqueued_batches=10, num_batch_threads=1
    )
    batcher = Batcher(_slow_double(gate, calls), params, on_batch=sizes.append)
    try:
        timer = threading.Timer(0.3, gate.set)
        timer.start()
        results, errors = _concurrently(
            lambda i: batcher({"x": np.full((2, 3), i, np.float32)}), 12
        )
    finally:
        batcher.close()
    assert errors == [None] * 12
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((2, 3), 2 * i))
    assert sum(calls) == 24
    assert max(calls) > 2, calls  # requests that queued while the worker was busy ran together
    assert sizes == calls


def _on_a_loop(batcher: Batcher, inputs: list[dict], workers: int = 8):
    """Call ``batcher.call_async`` for every input at once from one event loop."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def main():
        with ThreadPoolExecutor(workers) as executor:
            return await asyncio.gather(
                *(batcher.call_async(x, executor) for x in inputs), return_exceptions=True
            )

    return asyncio.run(main())


def test_async_callers_share_batches_and_get_their_own_rows():
    calls: list[int] = []
    params = cfg.BatchingParameters(
        max_batch_size=8, batch_timeout_micros=200_000, max_enqueued_batches=10,
        num_batch_threads=1,
    )  # fmt: skip
    batcher = Batcher(_slow_double(calls=calls), params)
    try:
        results = _on_a_loop(batcher, [{"x": np.full((1, 2), i, np.float32)} for i in range(12)])
    finally:
        batcher.close()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 2), 2 * i))
    # 12 rows in batches of at most 8: the first fills (no timeout wait), the rest follow.
    assert sorted(calls) == [4, 8]


def test_async_callers_meet_the_queue_bound_and_batch_errors():
    params = cfg.BatchingParameters(
        max_batch_size=2, batch_timeout_micros=100_000, max_enqueued_batches=1,
        num_batch_threads=1,
    )  # fmt: skip
    batcher = Batcher(_slow_double(), params)
    try:
        results = _on_a_loop(batcher, [{"x": np.ones((2, 1), np.float32)} for _ in range(3)])
    finally:
        batcher.close()
    # One batch may wait while one runs, so of three 2-row requests (each fills a batch)
    # at least one is turned away, with upstream's words.
    rejected = [r for r in results if isinstance(r, ServingError)]
    assert rejected, "a full queue must turn requests away"
    assert all(e.code == "UNAVAILABLE" and str(e) == QUEUE_FULL for e in rejected)
    answered = [r for r in results if isinstance(r, dict)]
    assert len(answered) + len(rejected) == 3
    assert all(np.array_equal(r["y"], np.full((2, 1), 2.0)) for r in answered)

    def explode(inputs):
        raise ValueError("model exploded")

    batcher = Batcher(explode, cfg.BatchingParameters(max_batch_size=4, num_batch_threads=1))
    try:
        results = _on_a_loop(batcher, [{"x": np.ones((1, 1), np.float32)} for _ in range(4)])
    finally:
        batcher.close()
    assert all(isinstance(r, ServingError) and r.code == "INTERNAL" for r in results)
    assert all("ValueError: model exploded" in str(r) for r in results)


def test_a_batch_whose_opener_gives_up_still_runs_for_the_others():
    """A gRPC client that cancels must not take its batch (and the queue behind it) along."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    params = cfg.BatchingParameters(
        max_batch_size=4, batch_timeout_micros=50_000, num_batch_threads=1
    )
    batcher = Batcher(_slow_double(), params)

    async def main():
        with ThreadPoolExecutor(1) as executor:
            executor.submit(time.sleep, 0.5)  # the pool is busy: the batch may not wait for it
            opener = asyncio.ensure_future(
                batcher.call_async({"x": np.ones((1, 1), np.float32)}, executor)
            )
            await asyncio.sleep(0)  # the opener has opened the batch
            other = asyncio.ensure_future(
                batcher.call_async({"x": np.full((1, 1), 3, np.float32)}, executor)
            )
            await asyncio.sleep(0.01)
            opener.cancel()
            return await asyncio.wait_for(other, 2)

    try:
        result = asyncio.run(main())
    finally:
        batcher.close()
    np.testing.assert_array_equal(result["y"], [[6.0]])


def test_batcher_queue_bound_answers_unavailable():
    gate = threading.Event()
    params = cfg.BatchingParameters(max_batch_size=4, max_enqueued_batches=1, num_batch_threads=1)
    batcher = Batcher(_slow_double(gate), params)
    try:
        timer = threading.Timer(0.5, gate.set)
        timer.start()
        results, errors = _concurrently(lambda i: batcher({"x": np.ones((4, 1), np.float32)}), 6)
    finally:
        batcher.close()
    rejected = [e for e in errors if e is not None]
    assert rejected, "a full queue must turn requests away"
    assert all(isinstance(e, ServingError) and e.code == "UNAVAILABLE" for e in rejected)
    assert all(str(e) == QUEUE_FULL for e in rejected)
    assert sum(r is not None for r in results) >= 1


def test_batcher_pads_to_allowed_sizes():
    seen: list[int] = []
    params = cfg.BatchingParameters(
        max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1
    )
    batcher = Batcher(_slow_double(calls=seen), params)
    try:
        out = batcher({"x": np.arange(3, dtype=np.float32)[:, None]})
    finally:
        batcher.close()
    assert seen == [4]
    np.testing.assert_array_equal(out["y"][:, 0], [0, 2, 4])


def test_full_batch_runs_in_one_call_across_threads_before_its_timeout():
    calls: list[int] = []
    params = cfg.BatchingParameters(
        max_batch_size=4, batch_timeout_micros=30_000_000, num_batch_threads=1
    )
    batcher = Batcher(_slow_double(calls=calls), params)
    barrier = threading.Barrier(4)

    def request(i):
        barrier.wait(5)
        return batcher({"x": np.full((1, 2), i, np.float32)})

    try:
        results, errors = _concurrently(request, 4)
    finally:
        batcher.close()
    # Four single-row requests from four threads: one model call of four rows, run as
    # soon as the batch was full (a 30 s timeout would have outlasted the joins).
    assert errors == [None] * 4
    assert calls == [4]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [[2.0 * i, 2.0 * i]])


def test_batches_running_at_once_are_bounded_by_num_batch_threads():
    running, most = [0], [0]
    lock = threading.Lock()

    def run(inputs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return {"y": inputs["x"] + 1}

    params = cfg.BatchingParameters(
        max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=100, num_batch_threads=2
    )
    batcher = Batcher(run, params)
    try:
        results, errors = _concurrently(lambda i: batcher({"x": np.full((1, 1), i)}), 8)
    finally:
        batcher.close()
    assert errors == [None] * 8
    assert [int(r["y"][0, 0]) for r in results] == [i + 1 for i in range(8)]
    assert 1 <= most[0] <= 2


def test_batch_error_reaches_every_request_in_the_batch():
    gate = threading.Event()

    def run(inputs):
        gate.wait(5)
        raise ValueError("model exploded")

    params = cfg.BatchingParameters(
        max_batch_size=3, batch_timeout_micros=30_000_000, num_batch_threads=1
    )
    batcher = Batcher(run, params)
    try:
        timer = threading.Timer(0.2, gate.set)
        timer.start()
        results, errors = _concurrently(lambda i: batcher({"x": np.ones((1, 1))}), 3)
    finally:
        batcher.close()
    assert results == [None] * 3
    assert all(isinstance(e, ServingError) and e.code == "INTERNAL" for e in errors)
    assert all("ValueError: model exploded" in str(e) for e in errors)


def test_close_runs_a_waiting_batch_without_its_timeout():
    calls: list[int] = []
    params = cfg.BatchingParameters(
        max_batch_size=8, batch_timeout_micros=30_000_000, num_batch_threads=1
    )
    batcher = Batcher(_slow_double(calls=calls), params)
    done = threading.Event()
    out: list = []

    def request():
        out.append(batcher({"x": np.ones((2, 1), np.float32)}))
        done.set()

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.2)  # the request's batch is open, waiting for rows or its 30 s timeout
    batcher.close()  # as when its version is unloaded
    assert done.wait(10), "closing must run the queued batch"
    thread.join(5)
    assert calls == [2]
    np.testing.assert_array_equal(out[0]["y"], [[2.0], [2.0]])


def test_closed_batcher_still_answers_requests_directly():
    params = cfg.BatchingParameters(max_batch_size=8, num_batch_threads=1)
    batcher = Batcher(_slow_double(), params)
    batcher.close()  # as when a version is unloaded while a request still holds it
    out = batcher({"x": np.ones((2, 1), np.float32)})
    np.testing.assert_array_equal(out["y"], [[2.0], [2.0]])


# --------------------------------------------------------------------------- metrics


def test_metrics_page_counts_per_model_version_signature():
    metrics = Metrics()
    for code in ("OK", "OK", "INVALID_ARGUMENT"):
        metrics.observe_request(
            model="digits", version="3", signature="serving_default", api="Predict",
            entrypoint="REST", code=code, seconds=0.002,
        )  # fmt: skip
    metrics.observe_batch("digits", 3, "serving_default", 5)
    page = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="digits",status="OK"} 2' in page
    assert (
        'kts_serving_requests_total{model="digits",version="3",signature="serving_default",'
        'api="Predict",entrypoint="REST",code="INVALID_ARGUMENT"} 1'
    ) in page
    assert 'kts_serving_request_latency_seconds_count{model="digits",version="3"' in page
    assert (
        'kts_serving_batch_size_bucket{model="digits",version="3",signature="serving_default",le="8"} 1'
        in page
    )
    assert "# TYPE kts_serving_batch_size histogram" in page


def test_histogram_totals_read_back_from_the_page_across_label_sets():
    metrics = Metrics()
    for version, size in ((3, 5), (3, 7), (4, 2)):
        metrics.observe_batch("digits", version, "serving_default", size)
    assert histogram_totals(metrics.render(), "kts_serving_batch_size") == (14.0, 3.0)
    assert histogram_totals(metrics.render(), "kts_serving_request_latency_seconds") == (0.0, 0.0)
