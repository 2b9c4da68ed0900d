"""`kts serve` as a real process on 127.0.0.1 over a freshly exported digits model.

Two servers, each shared by the tests of its section:

* ``main``: started from the export's ``models.config`` (labels ``stable``/``canary``),
  batching on, Prometheus on the REST port and on ``--metrics_port``. Clients: the stock
  ``tensorflow_serving.apis`` stubs, plain HTTP, `kts predict`, and a hypothesis fuzz.
* ``life``: ``--model_base_path`` with the default ``latest`` policy, polled every second:
  hot-adding a version under client load, a corrupt version, promote and rollback.

Predictions are compared with the in-process Keras model.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.helpers import assert_user_error, free_port, kts, kts_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]

ATOL = 1e-5
FLOAT_INPUT = "image: DT_FLOAT [-1,8,8,1]"


# ---------------------------------------------------------------------------- model


@dataclass
class Digits:
    model: object
    model2: object
    x: np.ndarray
    names: list[str]

    def expected(self, x: np.ndarray, *, second: bool = False) -> np.ndarray:
        model = self.model2 if second else self.model
        return np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def digits() -> Digits:
    """A small CNN on scikit-learn's digits (raw pixels 0..16 in, normalization inside)."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(1234)
    bunch = load_digits()
    x = bunch.images.astype("float32")[..., None]
    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x[:1200])
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, activation="relu")(norm(inputs))
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1200], bunch.target[:1200], epochs=2, batch_size=64, verbose=0)
    model2 = keras.models.clone_model(model)
    model2.set_weights([w * 1.5 for w in model.get_weights()])  # a visibly different version
    return Digits(model, model2, x, [f"digit-{i}" for i in range(10)])


def export(digits: Digits, base: Path, *, second: bool = False):
    from serving.export import export_saved_model

    return export_saved_model(
        digits.model2 if second else digits.model,
        base_path=base,
        model_name="digits",
        input_name="image",
        task="multiclass",
        class_names=digits.names,
        warmup_inputs=digits.x[:8],
    )


# --------------------------------------------------------------------------- server


@dataclass
class Server:
    proc: subprocess.Popen
    grpc: str
    rest: str
    log: Path
    metrics_port: int = 0

    def url(self, path: str) -> str:
        return f"http://{self.rest}{path}"

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url(path), timeout=30)

    def post(self, path: str, body) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url(path), data=data, timeout=30)

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(args: list[str], workdir: Path, *, model: str = "digits", metrics_port: int = 0):
    grpc_port, rest_port = free_port(), free_port()
    log = workdir / f"serve-{rest_port}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            f"--port={grpc_port}",
            "--rest_api_port",
            str(rest_port),
            *args,
        ],
        cwd=workdir,
        env=kts_env(),
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    server = Server(proc, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}", log, metrics_port)

    def ready() -> bool:
        if not server.alive():
            raise AssertionError(log.read_text()[-3000:])
        try:
            return server.get(f"/v1/models/{model}").ok
        except requests.RequestException:
            return False

    wait_until(ready, timeout=180, what=f"kts serve ({log})")
    return server


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture(scope="module")
def price():
    """A tiny regressor (3 features -> 1 value), served next to the digits model."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((3,), name="features")
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


PRICE_ROWS = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], np.float32)


@pytest.fixture(scope="module")
def main_server(digits, price, tmp_path_factory):
    from serving.export import export_saved_model

    root = tmp_path_factory.mktemp("serving-main")
    base = root / "models"
    assert export(digits, base).version == 1
    export_saved_model(
        price, base_path=base, model_name="price", input_name="features", task="regression",
        warmup_inputs=PRICE_ROWS,
    )  # fmt: skip
    (root / "batching.txt").write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 64 }\nnum_batch_threads { value: 2 }\n"
    )
    (root / "monitoring.txt").write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'
    )
    metrics_port = free_port()
    server = start_server(
        [
            f"--model_config_file={base / 'models.config'}",
            "--enable_batching",
            "--batching_parameters_file",
            str(root / "batching.txt"),
            f"--monitoring_config_file={root / 'monitoring.txt'}",
            f"--metrics_port={metrics_port}",
            "--max_request_bytes=1000000",
        ],
        root,
        metrics_port=metrics_port,
    )
    yield server
    stop_server(server)


def grpc_stubs(server: Server):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc)
    return (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )


def predict_request(
    x: np.ndarray, *, name="digits", input_name="image", version=None, label=None, signature=""
):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
    return request


def example_bytes(row: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = tf.train.Feature(float_list=tf.train.FloatList(value=row.ravel().tolist()))
    return tf.train.Example(
        features=tf.train.Features(feature={"image": feature})
    ).SerializeToString()


def rpc_error(call, request):
    import grpc

    with pytest.raises(grpc.RpcError, match=r".") as info:
        call(request, timeout=30)
    return info.value.code().name, info.value.details()


# ---------------------------------------------------------------------- gRPC (main)


def test_grpc_predict_matches_the_in_process_model(main_server, digits):
    import tensorflow as tf

    predict, _ = grpc_stubs(main_server)
    x = digits.x[:16]
    response = predict.Predict(predict_request(x), timeout=30)
    assert response.model_spec.name == "digits"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(probabilities, digits.expected(x), atol=ATOL)
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["class_ids"]), probabilities.argmax(-1)
    )
    # By label, and with an output filter.
    request = predict_request(x[:2], label="stable")
    request.output_filter.append("class_ids")
    response = predict.Predict(request, timeout=30)
    assert list(response.outputs) == ["class_ids"]


def test_grpc_without_batching_runs_on_the_threaded_server(digits, tmp_path):
    """Batching off serves gRPC from grpcio's threaded server: same answers, same errors."""
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_status_pb2

    assert export(digits, tmp_path / "models").version == 1
    server = start_server(
        ["--model_name=digits", f"--model_base_path={tmp_path / 'models' / 'digits'}"], tmp_path
    )
    try:
        predict, models = grpc_stubs(server)
        x = digits.x[:8]
        response = predict.Predict(predict_request(x), timeout=30)
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs["probabilities"]), digits.expected(x), atol=ATOL
        )
        code, message = rpc_error(predict.Predict, predict_request(x, input_name="pixels"))
        assert code == "INVALID_ARGUMENT"
        assert "image" in message, message
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "digits"
        status = models.GetModelStatus(request, timeout=30)
        assert [v.version for v in status.model_version_status] == [1]
    finally:
        stop_server(server)


def test_signatures_called_flat_answer_exactly_like_the_keyword_call(digits, tmp_path):
    """The server skips the keyword-binding layer of signature calls; answers must not change."""
    from serving.errors import ServingError
    from serving.servable import Servable

    exported = export(digits, tmp_path / "models")
    servable = Servable("digits", exported.version, exported.path)
    examples = np.empty(3, dtype=object)
    examples[:] = [example_bytes(row) for row in digits.x[:3]]
    cases = [
        ("serving_default", {"image": digits.x[:1]}),
        ("serving_default", {"image": digits.x[:7]}),
        ("classification", {"inputs": examples}),
    ]
    for name, inputs in cases:
        sig = servable.signatures[name]
        assert sig._flat_order == tuple(inputs)
        flat = sig.call(inputs)
        keyword = {key: t.numpy() for key, t in sig.function(**inputs).items()}
        assert flat.keys() == keyword.keys()
        for key, value in keyword.items():
            np.testing.assert_array_equal(flat[key], value)
    sig = servable.signatures["serving_default"]
    # What the flat call cannot take goes the usual way: converted, or the usual error.
    doubles = sig.call({"image": digits.x[:2].astype(np.float64)})
    np.testing.assert_array_equal(
        doubles["class_ids"], sig.call({"image": digits.x[:2]})["class_ids"]
    )
    with pytest.raises(ServingError, match=r"expects inputs \{image: DT_FLOAT \[-1,8,8,1\]\}"):
        sig.call({"image": digits.x[:1, :, :, 0]})
    # A TensorFlow whose private flat call changed: back to the keyword call, same answers.
    expected = sig.call({"image": digits.x[:2]})

    original = sig.function._call_flat

    def changed(tensor_inputs, *positional, **keywords):  # captured_inputs became keyword-only
        if positional:
            raise TypeError("_call_flat() takes 2 positional arguments but 3 were given")
        return original(tensor_inputs, **keywords)

    sig.function._call_flat = changed
    got = sig.call({"image": digits.x[:2]})
    assert sig._flat_order is None
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)
    servable.close()


def test_grpc_classify_metadata_and_status(main_server, digits):
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
    )

    predict, models = grpc_stubs(main_server)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "digits"
    request.model_spec.signature_name = "classification"
    for row in digits.x[:3]:
        request.input.example_list.examples.add().ParseFromString(example_bytes(row))
    response = predict.Classify(request, timeout=30)
    assert response.model_spec.signature_name == "classification"
    expected = digits.expected(digits.x[:3])
    for i, item in enumerate(response.result.classifications):
        assert [c.label for c in item.classes] == digits.names
        np.testing.assert_allclose([c.score for c in item.classes], expected[i], atol=ATOL)

    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "digits"
    metadata_request.metadata_field.append("signature_def")
    metadata = predict.GetModelMetadata(metadata_request, timeout=30)
    assert metadata.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert [d.size for d in default.inputs["image"].tensor_shape.dim] == [-1, 8, 8, 1]
    assert set(default.outputs) == {"probabilities", "class_ids"}
    assert set(signatures.signature_def["classification"].outputs) == {"classes", "scores"}

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "digits"
    status = models.GetModelStatus(status_request, timeout=30)
    (version,) = status.model_version_status
    assert (version.version, version.state, version.status.error_code) == (
        1,
        get_model_status_pb2.ModelVersionStatus.AVAILABLE,
        0,
    )


def test_grpc_errors_name_what_is_expected(main_server, digits):
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
    )

    predict, models = grpc_stubs(main_server)
    x = digits.x[:2]
    cases = [
        (
            predict_request(x, name="nope"),
            "NOT_FOUND",
            ["Servable not found for request: Latest(nope)"],
        ),
        (
            predict_request(x, version=9),
            "NOT_FOUND",
            ["Specific(digits, 9)", "available versions: 1"],
        ),
        (
            predict_request(x, label="gold"),
            "INVALID_ARGUMENT",
            ["Unrecognized servable version label: gold", "canary, stable"],
        ),
        (
            predict_request(x, input_name="pixels"),
            "INVALID_ARGUMENT",
            ["not found in signature: pixels", FLOAT_INPUT],
        ),
        (
            predict_request(x.astype("float64")),
            "INVALID_ARGUMENT",
            ["received dtype DT_DOUBLE, expected DT_FLOAT", FLOAT_INPUT],
        ),
        (
            predict_request(x[..., 0]),
            "INVALID_ARGUMENT",
            ["received shape [2,8,8], expected [-1,8,8,1]", FLOAT_INPUT],
        ),
        (
            predict_request(x, signature="nope"),
            "FAILED_PRECONDITION",
            ['Serving signature key "nope" not found', "classification, serving_default"],
        ),
        (predict_request(np.zeros((20000, 8, 8, 1), "float32")), "RESOURCE_EXHAUSTED", []),
    ]
    for request, code, needles in cases:
        got_code, message = rpc_error(predict.Predict, request)
        assert got_code == code, (got_code, message)
        for needle in needles:
            assert needle in message, (needle, message)

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "digits"
    classify.input.example_list.examples.add().ParseFromString(example_bytes(x[0]))
    code, message = rpc_error(predict.Classify, classify)
    assert code == "INVALID_ARGUMENT"
    assert "classification signatures: classification" in message
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata_request.model_spec.name = "digits"
    assert rpc_error(predict.GetModelMetadata, metadata_request) == (
        "INVALID_ARGUMENT",
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "nope"
    assert rpc_error(models.GetModelStatus, status_request) == (
        "NOT_FOUND",
        "Could not find any versions of model nope",
    )
    assert main_server.alive()


# ---------------------------------------------------------------------- REST (main)


@pytest.mark.parametrize("prefix", ["", "/versions/1", "/labels/stable", "/labels/canary"])
def test_rest_routes_in_row_and_columnar_form(main_server, digits, prefix):
    x = digits.x[5:9]
    expected = digits.expected(x)
    route = f"/v1/models/digits{prefix}"
    row = main_server.post(f"{route}:predict", {"instances": x.tolist()})
    assert row.status_code == 200, row.text
    predictions = row.json()["predictions"]
    assert [p["class_ids"] for p in predictions] == expected.argmax(-1).tolist()
    np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=ATOL)

    named_rows = main_server.post(
        f"{route}:predict", {"instances": [{"image": r} for r in x.tolist()]}
    )
    assert named_rows.json() == row.json()

    columnar = main_server.post(
        f"{route}:predict", {"inputs": {"image": x.tolist()}, "signature_name": "serving_default"}
    )
    assert columnar.status_code == 200, columnar.text
    outputs = columnar.json()["outputs"]
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=ATOL)
    assert outputs["class_ids"] == expected.argmax(-1).tolist()
    assert main_server.post(f"{route}:predict", {"inputs": x.tolist()}).json() == columnar.json()

    status = main_server.get(route)
    assert status.status_code == 200
    assert status.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    metadata = main_server.get(f"{route}/metadata").json()
    assert metadata["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["image"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inputs["image"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]


def test_rest_classify_regress_and_base64(main_server, digits):
    x = digits.x[:2]
    expected = digits.expected(x)
    examples = [{"image": r.ravel().tolist()} for r in x]
    answer = main_server.post(
        "/v1/models/digits:classify", {"signature_name": "classification", "examples": examples}
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [label for label, _ in results[0]] == digits.names
    np.testing.assert_allclose([[s for _, s in r] for r in results], expected, atol=ATOL)

    # Serialized tf.Examples as base64 binary values, through the predict route.
    encoded = [{"b64": base64.b64encode(example_bytes(r)).decode()} for r in x]
    answer = main_server.post(
        "/v1/models/digits/labels/stable:predict",
        {"signature_name": "classification", "instances": encoded},
    )
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(
        [p["scores"] for p in answer.json()["predictions"]], expected, atol=ATOL
    )
    assert answer.json()["predictions"][0]["classes"] == digits.names

    # Classify with the default signature, and Regress on a classifier: clear 400s.
    answer = main_server.post("/v1/models/digits:classify", {"examples": examples})
    assert answer.status_code == 400
    assert "classification signatures: classification" in answer.json()["error"]
    answer = main_server.post(
        "/v1/models/digits:regress", {"signature_name": "classification", "examples": examples}
    )
    assert answer.status_code == 400
    assert "This model has no regression signature" in answer.json()["error"]
    answer = main_server.post(
        "/v1/models/digits:classify",
        {"signature_name": "classification", "examples": [{"image": [1.0, 2.0]}]},
    )
    assert answer.status_code == 400
    assert "feature 'image': a float_list of 64 value(s)" in answer.json()["error"]


ROW = [[[0.0]] * 8] * 8
REST_ERRORS = [
    ("POST", "/v1/models/digits:predict", b"{not json", 400, ["JSON Parse error"]),
    ("POST", "/v1/models/digits:predict", b"", 400, ["JSON Parse error: The document is empty"]),
    ("POST", "/v1/models/digits:predict", b"[1, 2]", 400, ["Is not object"]),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": [ROW], "inputs": [ROW]},
        400,
        ["expecting only one of 'inputs' or 'instances'"],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"signature_name": "serving_default"},
        400,
        ["Missing 'inputs' or 'instances' key", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": []},
        400,
        ["No values in 'instances' array", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": [{"pixels": ROW}]},
        400,
        ["does not have named input: pixels", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"inputs": {"pixels": [ROW]}},
        400,
        ["Missing named input: image", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": [[1.0, 2.0]]},
        400,
        ["received shape [1,2], expected [-1,8,8,1]", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": [ROW, ROW[:3]]},
        400,
        ["Failed to process element: 1", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"instances": [[["a"] * 8] * 8]},
        400,
        ["is not of expected type: DT_FLOAT", FLOAT_INPUT],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"signature_name": 3, "instances": [ROW]},
        400,
        ["'signature_name' key must be a string value"],
    ),
    (
        "POST",
        "/v1/models/digits:predict",
        {"signature_name": "nope", "instances": [ROW]},
        400,
        ['Serving signature name: "nope" not found in signature def'],
    ),
    (
        "POST",
        "/v1/models/nope:predict",
        {"instances": [ROW]},
        404,
        ["Servable not found for request: Latest(nope)"],
    ),
    (
        "POST",
        "/v1/models/digits/versions/7:predict",
        {"instances": [ROW]},
        404,
        ["Servable not found for request: Specific(digits, 7)"],
    ),
    (
        "POST",
        "/v1/models/digits/labels/gold:predict",
        {"instances": [ROW]},
        400,
        ["Unrecognized servable version label: gold"],
    ),
    (
        "POST",
        "/v1/models/digits:explain",
        {"instances": [ROW]},
        400,
        ["Malformed request: POST /v1/models/digits:explain"],
    ),
    (
        "POST",
        "/v1/models/digits:classify",
        {"signature_name": "classification"},
        400,
        ["key 'examples' is expected"],
    ),
    ("GET", "/v1/models/digits:predict", None, 400, ["Malformed request: GET"]),
    ("GET", "/v1/models/nope", None, 404, ["Could not find any versions of model nope"]),
    (
        "GET",
        "/v1/models/digits/versions/5",
        None,
        404,
        ["Could not find version 5 of model digits"],
    ),
    (
        "GET",
        "/v1/models/nope/metadata",
        None,
        404,
        ["Servable not found for request: Latest(nope)"],
    ),
    ("GET", "/v1/models", None, 400, ["Missing model name in request."]),
    ("PUT", "/v1/models/digits", b"{}", 400, ["Malformed request: PUT /v1/models/digits"]),
    ("GET", "/v2/models/digits", None, 404, ["Not found"]),
    (
        "POST",
        "/v1/models/digits:predict",
        b" " * 1_500_000,
        413,
        ["exceeds the limit of 1000000 bytes"],
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "needles"), REST_ERRORS)
def test_rest_errors_have_upstreams_codes_and_name_the_inputs(
    main_server, method, path, body, status, needles
):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    answer = requests.request(method, main_server.url(path), data=data, timeout=30)
    assert answer.status_code == status, answer.text[:500]
    error = answer.json()["error"]
    for needle in needles:
        assert needle in error, (needle, error)


def _batch_totals(server: Server) -> tuple[float, float]:
    """(rows, model calls) so far from the batch-size histogram."""
    from serving.metrics import histogram_totals

    page = server.get("/monitoring/prometheus/metrics").text
    return histogram_totals(page, "kts_serving_batch_size")


def test_concurrent_requests_are_batched_and_answered_right(main_server, digits):
    x = digits.x[:24]
    expected = digits.expected(x).argmax(-1).tolist()
    session_local = threading.local()

    def ask(i: int) -> int:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        answer = session.post(
            main_server.url("/v1/models/digits:predict"),
            json={"instances": x[i : i + 1].tolist()},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"][0]["class_ids"]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        for _ in range(3):
            assert list(pool.map(ask, range(24))) == expected
    rows, calls = _batch_totals(main_server)
    assert calls >= 1
    assert rows > calls, "some batch should have merged concurrent requests"


def test_concurrent_grpc_predicts_are_batched_and_answered_right(main_server, digits):
    """Stock stubs on 12 threads: each answer is its own row's, and batches merged rows."""
    import tensorflow as tf

    x = digits.x[:24]
    expected = digits.expected(x)
    predict, _ = grpc_stubs(main_server)
    rows0, calls0 = _batch_totals(main_server)

    def ask(i: int) -> np.ndarray:
        response = predict.Predict(predict_request(x[i : i + 1]), timeout=30)
        assert response.model_spec.version.value == 1
        return tf.make_ndarray(response.outputs["probabilities"])[0]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(12) as pool:
        for _ in range(3):
            got = np.stack(list(pool.map(ask, range(24))))
            np.testing.assert_allclose(got, expected, atol=ATOL)
    rows1, calls1 = _batch_totals(main_server)
    assert rows1 - rows0 == 72
    assert calls1 - calls0 < 72, "some batch should have merged concurrent gRPC requests"


def test_metrics_endpoints_count_requests(main_server):
    main_server.post("/v1/models/digits:predict", {"instances": [ROW]})
    main_server.post("/v1/models/digits:predict", {"instances": [[1.0]]})
    for page in (
        main_server.get("/monitoring/prometheus/metrics").text,
        requests.get(f"http://127.0.0.1:{main_server.metrics_port}/metrics", timeout=30).text,
    ):
        lines = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line and not line.startswith("#")
        }
        assert lines[':tensorflow:serving:request_count{model_name="digits",status="OK"}'] >= 1
        assert (
            lines[
                ':tensorflow:serving:request_count{model_name="digits",status="INVALID_ARGUMENT"}'
            ]
            >= 1
        )
        ok = 'kts_serving_requests_total{model="digits",version="1",signature="serving_default",api="Predict",entrypoint="REST",code="OK"}'
        assert lines[ok] >= 1
        assert lines['kts_serving_model_loads_total{model="digits",version="1",status="OK"}'] == 1
        assert lines['kts_serving_warmup_records_total{model="digits",version="1"}'] == 17
        # 2 single rows + the batch of 2 as predict records, 2 regress records.
        assert lines['kts_serving_warmup_records_total{model="price",version="1"}'] == 5
        latency = 'kts_serving_request_latency_seconds_count{model="digits",version="1",signature="serving_default",api="Predict",entrypoint="REST"}'
        assert lines[latency] >= 1


def test_kts_predict_over_rest_and_grpc(main_server, digits, tmp_path):
    x = digits.x[:2]
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": x.tolist()}))
    expected = digits.expected(x)
    for protocol, address in (("rest", main_server.rest), ("grpc", main_server.grpc)):
        result = kts(
            [
                "predict",
                "--server",
                address,
                "--model",
                "digits",
                "--protocol",
                protocol,
                "--label",
                "stable",
                str(request),
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        predictions = json.loads(result.stdout)["predictions"]
        np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=ATOL)
    request.write_text(json.dumps({"instances": [[1, 2]]}))
    result = kts(
        ["predict", "--server", main_server.rest, "--model", "digits", str(request)], cwd=tmp_path
    )
    assert_user_error(result, "answered 400", FLOAT_INPUT)
    result = kts(
        ["predict", "--server", f"127.0.0.1:{free_port()}", "--model", "digits", str(request)],
        cwd=tmp_path,
    )
    assert_user_error(result, "cannot reach")
    request.write_text("[1]")
    result = kts(
        ["predict", "--server", main_server.rest, "--model", "digits", str(request)], cwd=tmp_path
    )
    assert_user_error(result, "'instances'", "'inputs'")


def test_fuzzed_predict_bodies_never_get_a_5xx(main_server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=6)
    )
    values = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=24,
    )
    tensors = hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    ).map(lambda a: a.tolist())
    digit_rows = hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 3), st.just(8), st.just(8), st.sampled_from([1, 2])),
        elements=st.floats(0, 16, width=32),
    ).map(lambda a: a.tolist())
    documents = st.one_of(
        st.fixed_dictionaries({"instances": tensors | digit_rows}),
        st.fixed_dictionaries(
            {
                "inputs": tensors
                | digit_rows
                | st.dictionaries(st.sampled_from(["image", "x"]), tensors, max_size=2)
            }
        ),
        st.fixed_dictionaries(
            {
                "instances": st.lists(
                    st.dictionaries(st.sampled_from(["image", "x"]), tensors | values, max_size=2),
                    max_size=3,
                )
            }
        ),
        st.fixed_dictionaries({"signature_name": values, "instances": digit_rows}),
        values,
    )
    bodies = documents.map(lambda d: json.dumps(d, allow_nan=True).encode()) | st.binary(
        max_size=300
    )
    routes = st.sampled_from(
        [
            "/v1/models/digits:predict",
            "/v1/models/digits/versions/1:predict",
            "/v1/models/digits/labels/stable:predict",
            "/v1/models/digits:classify",
        ]
    )
    session = requests.Session()

    @settings(
        max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(route=routes, body=bodies)
    def check(route, body):
        answer = session.post(main_server.url(route), data=body, timeout=30)
        assert answer.status_code < 500, (body[:300], answer.text[:500])
        if answer.status_code != 200:
            assert "error" in answer.json()

    check()
    assert main_server.alive()
    assert main_server.get("/v1/models/digits").status_code == 200


# -------------------------------------------------------------------- versions (life)


@pytest.fixture(scope="module")
def life(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving-life")
    base = root / "models"
    export(digits, base)
    server = start_server(
        [
            "--model_name=digits",
            f"--model_base_path={base / 'digits'}",
            "--file_system_poll_wait_seconds=1",
            "--max_num_load_retries=0",
            "--enable_batching=true",
        ],
        root,
    )
    server.base = base  # type: ignore[attr-defined]
    yield server
    stop_server(server)


def served_version(server: Server, x: np.ndarray, **spec) -> tuple[int, np.ndarray]:
    import tensorflow as tf

    predict, _ = grpc_stubs(server)
    response = predict.Predict(predict_request(x, **spec), timeout=30)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["probabilities"])


def ensure_second_version(server: Server, digits: Digits) -> None:
    if 2 not in [int(p.name) for p in (server.base / "digits").iterdir() if p.name.isdigit()]:  # type: ignore[attr-defined]
        export(digits, server.base, second=True)  # type: ignore[attr-defined]
    wait_until(lambda: served_version(server, digits.x[:1])[0] == 2, timeout=120, what="version 2")


def test_hot_added_version_takes_over_with_zero_failed_requests(life, digits):
    x = digits.x[:4]
    first, second = digits.expected(x), digits.expected(x, second=True)
    assert served_version(life, x)[0] == 1
    failures: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def rest_loop():
        session = requests.Session()
        while not stop.is_set():
            try:
                answer = session.post(
                    life.url("/v1/models/digits:predict"),
                    json={"instances": x.tolist()},
                    timeout=30,
                )
                if answer.status_code != 200:
                    failures.append(answer.text)
                    continue
                got = np.array([p["probabilities"] for p in answer.json()["predictions"]])
                if not (np.allclose(got, first, atol=ATOL) or np.allclose(got, second, atol=ATOL)):
                    failures.append("REST answer from neither version")
            except requests.RequestException as err:
                failures.append(repr(err))

    def grpc_loop():
        while not stop.is_set():
            try:
                version, got = served_version(life, x)
                seen.append(version)
                np.testing.assert_allclose(got, first if version == 1 else second, atol=ATOL)
            except Exception as err:
                failures.append(repr(err))

    threads = [threading.Thread(target=rest_loop), threading.Thread(target=grpc_loop)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        export(digits, life.base, second=True)  # type: ignore[attr-defined]
        wait_until(lambda: bool(seen) and seen[-1] == 2, timeout=120, what="version 2 to be served")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert seen[0] == 1
    assert seen[-1] == 2
    assert seen == sorted(seen), "once version 2 answered, version 1 never did again"
    log = life.log.read_text()
    warmed = log.index(f"Finished reading warmup data for model at {life.base / 'digits' / '2'}.")  # type: ignore[attr-defined]
    assert warmed < log.index("Successfully loaded servable version {name: digits version: 2}")
    status = life.get("/v1/models/digits").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]


def test_corrupt_version_leaves_the_old_one_serving(life, digits, tmp_path):
    ensure_second_version(life, digits)
    staging = tmp_path / "3"
    shutil.copytree(life.base / "digits" / "2", staging)  # type: ignore[attr-defined]
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    os.rename(staging, life.base / "digits" / "3")  # type: ignore[attr-defined]

    def failed() -> bool:
        status = life.get("/v1/models/digits/versions/3")
        return (
            status.status_code == 200 and status.json()["model_version_status"][0]["state"] == "END"
        )

    wait_until(failed, timeout=120, what="version 3 to fail")
    (record,) = life.get("/v1/models/digits/versions/3").json()["model_version_status"]
    assert record["status"]["error_code"] == "DATA_LOSS"
    assert "saved_model.pb" in record["status"]["error_message"]
    x = digits.x[:3]
    version, got = served_version(life, x)
    assert version == 2
    np.testing.assert_allclose(got, digits.expected(x, second=True), atol=ATOL)
    answer = life.post("/v1/models/digits/versions/3:predict", {"instances": x.tolist()})
    assert answer.status_code == 404
    assert life.alive()


def test_promote_and_rollback_load_first_then_move_the_label(life, digits, tmp_path):
    ensure_second_version(life, digits)
    config = life.base / "models.config"  # type: ignore[attr-defined]
    from serving.config import model_settings

    assert model_settings(config, "digits").labels == {"stable": 1, "canary": 2}
    args = ["--model_config_file", str(config), "--server", life.grpc]
    promoted = kts(["promote", "digits", "2", *args], cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert "stable 1 -> 2" in promoted.stdout
    assert model_settings(config, "digits").labels["stable"] == 2
    assert served_version(life, digits.x[:1], label="stable")[0] == 2
    assert (
        life.get("/v1/models/digits/labels/stable").json()["model_version_status"][0]["version"]
        == "2"
    )

    if (life.base / "digits" / "3").is_dir():  # type: ignore[attr-defined]
        broken = kts(["promote", "digits", "3", *args], cwd=tmp_path)
        assert_user_error(broken, "version 3", "failed to load")
        assert model_settings(config, "digits").labels["stable"] == 2

    missing = kts(["promote", "digits", "9", *args], cwd=tmp_path)
    assert_user_error(missing, "Invalid value for VERSION: received 9")

    rolled = kts(["rollback", "digits", *args], cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert "stable 2 -> 1" in rolled.stdout
    assert model_settings(config, "digits").labels["stable"] == 1
    version, got = served_version(life, digits.x[:3], label="stable")
    assert version == 1
    np.testing.assert_allclose(got, digits.expected(digits.x[:3]), atol=ATOL)
    answer = life.post(
        "/v1/models/digits/labels/canary:predict", {"instances": digits.x[:3].tolist()}
    )
    np.testing.assert_allclose(
        [p["probabilities"] for p in answer.json()["predictions"]],
        digits.expected(digits.x[:3], second=True),
        atol=ATOL,
    )


def test_python_clients(main_server, digits, price):
    from serving.client import GrpcClient, RestClient, ServingClientError

    x = digits.x[:3]
    expected = digits.expected(x)
    rest, grpc_client = RestClient(main_server.rest), GrpcClient(main_server.grpc)
    try:
        np.testing.assert_allclose(
            [p["probabilities"] for p in rest.predict("digits", instances=x)["predictions"]],
            expected,
            atol=ATOL,
        )
        outputs = grpc_client.predict("digits", {"image": x}, label="canary")
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=ATOL)
        examples = [{"image": r.ravel().tolist()} for r in x]
        labels_scores = grpc_client.classify("digits", examples, signature_name="classification")
        assert [label for label, _ in labels_scores[0]] == digits.names
        np.testing.assert_allclose(
            [[s for _, s in row] for row in labels_scores], expected, atol=ATOL
        )
        rows = [{"features": r.tolist()} for r in PRICE_ROWS]
        np.testing.assert_allclose(
            grpc_client.regress("price", rows, signature_name="regression"),
            rest.regress("price", rows, signature_name="regression")["results"],
            atol=ATOL,
        )
        assert grpc_client.status("digits") == [
            {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}
        ]
        assert set(grpc_client.metadata("digits")) >= {"serving_default", "classification"}
        with pytest.raises(ServingClientError, match=r"Servable not found") as err:
            grpc_client.predict("nope", {"image": x})
        assert err.value.code == "NOT_FOUND"
        with pytest.raises(ServingClientError, match=r"Servable not found") as err:
            rest.predict("nope", instances=x)
        assert err.value.http_status == 404
    finally:
        rest.close()
        grpc_client.close()


# ------------------------------------------------------------- regression (main)


def test_regress_over_rest_and_grpc(main_server, price):
    from tensorflow_serving.apis import regression_pb2

    expected = np.asarray(price(PRICE_ROWS)).reshape(-1)
    examples = [{"features": r.tolist()} for r in PRICE_ROWS]
    answer = main_server.post(
        "/v1/models/price:regress", {"signature_name": "regression", "examples": examples}
    )
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["results"], expected, atol=ATOL)
    # Features shared by every example go in "context".
    answer = main_server.post(
        "/v1/models/price/labels/stable:regress",
        {
            "signature_name": "regression",
            "context": {"features": PRICE_ROWS[0].tolist()},
            "examples": [{}],
        },
    )
    np.testing.assert_allclose(answer.json()["results"], expected[:1], atol=ATOL)
    answer = main_server.post(
        "/v1/models/price:predict", {"inputs": {"features": PRICE_ROWS.tolist()}}
    )
    np.testing.assert_allclose(np.reshape(answer.json()["outputs"], -1), expected, atol=ATOL)

    predict, _ = grpc_stubs(main_server)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "price"
    request.model_spec.signature_name = "regression"
    for row in PRICE_ROWS:
        feature = request.input.example_list.examples.add().features.feature["features"]
        feature.float_list.value.extend(row.tolist())
    response = predict.Regress(request, timeout=30)
    assert response.model_spec.version.value == 1
    np.testing.assert_allclose([r.value for r in response.result.regressions], expected, atol=ATOL)
    answer = main_server.post(
        "/v1/models/price:classify", {"signature_name": "regression", "examples": examples}
    )
    assert answer.status_code == 400
    assert "This model has no classification signature" in answer.json()["error"]


# ------------------------------------------------------------------- bad serve flags


def test_serve_flag_errors_are_one_line(tmp_path):
    result = kts(["serve", f"--model_base_path={tmp_path / 'missing'}"], cwd=tmp_path)
    assert_user_error(result, "base path", "missing")
    (tmp_path / "batching.txt").write_text("max_batch_size: 3\n")
    (tmp_path / "m").mkdir()
    result = kts(
        [
            "serve",
            "--model_base_path",
            str(tmp_path / "m"),
            "--enable_batching=true",
            f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        ],
        cwd=tmp_path,
    )
    assert_user_error(result, "not a text BatchingParameters")
    result = kts(
        ["serve", "--model_base_path", str(tmp_path / "m"), "--enable_batching=sometimes"],
        cwd=tmp_path,
    )
    assert_user_error(result, "--enable_batching", "'sometimes'")
    result = kts(
        ["serve", "--model_base_path", str(tmp_path / "m"), "--port=9", "--rest_api_port=9"],
        cwd=tmp_path,
    )
    assert_user_error(result, "--rest_api_port")
