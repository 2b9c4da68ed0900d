"""TensorFlow Serving's REST API (``g3doc/api_rest.md``) over a small HTTP/1.1 server.

Routes, bodies, status codes and error texts follow ``http_rest_api_handler.cc``,
``http_rest_api_util.cc`` and ``json_tensor.cc``:

* ``GET  /v1/models/NAME[/versions/V|/labels/L]``            model status
* ``GET  /v1/models/NAME[/versions/V|/labels/L]/metadata``   signature defs
* ``POST /v1/models/NAME[/versions/V|/labels/L]:predict``    ``instances`` (row) or
  ``inputs`` (columnar) -> ``predictions`` or ``outputs``
* ``POST ...:classify`` / ``...:regress``                     ``examples`` (+ ``context``)
  -> ``results``

Errors answer ``{"error": "..."}`` with upstream's canonical-code -> HTTP mapping
(INVALID_ARGUMENT and FAILED_PRECONDITION 400, NOT_FOUND 404, UNAVAILABLE 503, ...).
Bodies above ``max_body_bytes`` get 413 before they are read.

The HTTP layer is deliberately small: a thread per keep-alive connection, each
response written in one ``send`` with Nagle off, so a request costs little more than
its JSON parsing and the model call.
"""

from __future__ import annotations

import json
import logging
import re
import socketserver
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from serving import errors
from serving.core import Call, ServingCore
from serving.errors import ServingError, invalid_argument
from serving.examples import request_input_from_json, serialized_examples
from serving.tensors import (
    columnar_json,
    dumps,
    inputs_to_arrays,
    instances_to_arrays,
    json_debug,
    row_json,
)

log = logging.getLogger("kts.serving")

PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
JSON_TYPE = "application/json"
_MAX_INT64 = 2**63 - 1
Response = tuple[int, str, bytes]


def _error(err: ServingError) -> Response:
    return err.http_status, JSON_TYPE, dumps({"error": err.message})


def parse_json_object(body: bytes) -> dict:
    """Parse a request body as upstream does: NaN/Infinity allowed, an object required."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        # json.loads(bytes) decodes with the 'surrogatepass' handler, which takes Python's
        # slow decoding path (~20 us of a ~60 us parse of one digit image); plain UTF-8 text
        # goes the fast way, anything else (UTF-16, lone surrogates) the usual one.
        try:
            text: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise invalid_argument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except (ValueError, RecursionError) as err:
        raise invalid_argument(f"JSON Parse error: {err}") from None
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {json_debug(doc)} Is not object")
    return doc


def _signature_name(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_debug(doc)} not formatted correctly. 'signature_name' key must "
            "be a string value."
        )
    return name


class RestApi:
    """Turns (method, path, body) into (HTTP status, content type, body)."""

    def __init__(self, core: ServingCore, *, metrics_path: str | None = None, cors: bool = False):
        self.core = core
        self.metrics_path = metrics_path
        self.cors = cors
        self._metadata_cache: dict[tuple[str, int], bytes] = {}

    def handle(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        if self.metrics_path is not None and path == self.metrics_path:
            return 200, "text/plain; version=0.0.4", self.core.metrics.render().encode()
        if method == "OPTIONS":
            if re.search(r"https?://", headers.get("origin", "")):
                return 200, JSON_TYPE, b""
            return _error(errors.failed_precondition("Origin header is missing in CORS preflight"))
        if not API_PATH.fullmatch(path):
            return 404, JSON_TYPE, dumps({"error": f"Not found: {method} {path}"})
        call: Call | None = None
        try:
            if method == "POST":
                match = PREDICTION_PATH.fullmatch(path)
                if match is not None:
                    name, version, label, verb = self._model_info(match)
                    call = self.core.call(verb.capitalize(), "REST", name)
                    response = self._post(verb, name, version, label, body, call)
                    call.finish()
                    return response
            elif method == "GET":
                match = STATUS_PATH.fullmatch(path)
                if match is not None:
                    name, version, label, sub = self._model_info(match)
                    api = "GetModelMetadata" if sub else "GetModelStatus"
                    call = self.core.call(api, "REST", name)
                    response = self._get(name, version, label, bool(sub), call)
                    call.finish()
                    return response
            raise invalid_argument(f"Malformed request: {method} {path}")
        except ServingError as err:
            if call is not None:
                call.finish(err.code)
            return _error(err)
        except Exception as err:  # a bug of ours must not take the connection down
            log.exception("REST %s %s failed", method, path)
            if call is not None:
                call.finish(errors.INTERNAL)
            return _error(errors.internal(f"{type(err).__name__}: {err}"))

    @staticmethod
    def _model_info(match: re.Match) -> tuple[str, int | None, str | None, str]:
        name, version_text, label, last = match.groups()
        name = unquote(name or "")
        version = None
        if version_text:
            if int(version_text) > _MAX_INT64:
                raise invalid_argument(f"Failed to convert version: {version_text} to numeric.")
            version = int(version_text)
        if label is not None:
            label = unquote(label)
        if version is not None and label is not None:  # pragma: no cover - the regex forbids it
            raise invalid_argument(
                f"Both model version ({version}) and model version label ({label}) cannot be supplied."
            )
        return name, version, label, last or ""

    # ---------------------------------------------------------------------- GET

    def _get(
        self, name: str, version: int | None, label: str | None, metadata: bool, call: Call
    ) -> Response:
        from google.protobuf import json_format

        if not name:
            raise invalid_argument("Missing model name in request.")
        if not metadata:
            response = self.core.status_response(name, version, label)
            doc = json_format.MessageToDict(response, always_print_fields_with_no_presence=True)
            return 200, JSON_TYPE, json.dumps(doc, indent=1).encode()
        servable = self.core.manager.servable(name, version, label)
        call.served_by(servable)
        key = (servable.name, servable.version)
        cached = self._metadata_cache.get(key)
        if cached is None:
            response = self.core.metadata_response(servable)
            signature_map = self.core.pb["metadata"].SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            options = {
                "preserving_proto_field_name": True,
                "always_print_fields_with_no_presence": True,
            }
            doc = {
                "model_spec": json_format.MessageToDict(response.model_spec, **options),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map, **options)},
            }
            cached = self._metadata_cache[key] = json.dumps(doc, indent=1).encode()
        return 200, JSON_TYPE, cached

    # --------------------------------------------------------------------- POST

    def _post(
        self, verb: str, name: str, version: int | None, label: str | None, body: bytes, call: Call
    ) -> Response:
        if verb == "predict":
            return self._predict(name, version, label, body, call)
        if verb in ("classify", "regress"):
            return self._classify_regress(verb, name, version, label, body, call)
        raise invalid_argument(f"Malformed request: POST /v1/models/{name}:{verb}")

    def _predict(
        self, name: str, version: int | None, label: str | None, body: bytes, call: Call
    ) -> Response:
        doc = parse_json_object(body)
        signature_name = _signature_name(doc)
        servable = self.core.manager.servable(name, version, label)
        key = signature_name or "serving_default"
        call.served_by(servable, key)
        sig = servable.signatures.get(key)
        if sig is None:
            raise invalid_argument(
                f'Serving signature name: "{key}" not found in signature def. Available '
                f"signatures: {', '.join(servable.public_signatures()) or '(none)'}."
            )
        if not sig.input_dtypes:
            raise invalid_argument(
                f"Failed to get input map for signature: {signature_name or 'DEFAULT'}"
            )
        may_have_bools = b"true" in body or b"false" in body
        has_instances, has_inputs = "instances" in doc, "inputs" in doc
        if has_instances and has_inputs:
            raise invalid_argument(
                f"JSON Value: {json_debug(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        try:
            if has_instances:
                instances = doc["instances"]
                if not isinstance(instances, list):
                    raise invalid_argument(
                        f"JSON Value: {json_debug(doc)} Expecting 'instances' to be an list/array"
                    )
                if not instances:
                    raise invalid_argument(
                        f"JSON Value: {json_debug(doc)} No values in 'instances' array"
                    )
                arrays = instances_to_arrays(
                    instances, sig.input_dtypes, may_have_bools=may_have_bools
                )
                row = True
            elif has_inputs:
                arrays = inputs_to_arrays(
                    doc["inputs"], sig.input_dtypes, may_have_bools=may_have_bools
                )
                row = False
            else:
                raise invalid_argument("Missing 'inputs' or 'instances' key")
        except ServingError as err:
            raise invalid_argument(sig.explain(err.message)) from None
        _, outputs = servable.predict(signature_name, arrays)
        document = row_json(outputs) if row else columnar_json(outputs)
        return 200, JSON_TYPE, dumps(document)

    def _classify_regress(
        self, verb: str, name: str, version: int | None, label: str | None, body: bytes, call: Call
    ) -> Response:
        from tensorflow_serving.apis import input_pb2

        doc = parse_json_object(body)
        signature_name = _signature_name(doc)
        input_proto = input_pb2.Input()
        request_input_from_json(doc, input_proto, method=verb)
        servable = self.core.manager.servable(name, version, label)
        call.served_by(servable, signature_name or "serving_default")
        examples = serialized_examples(input_proto)
        if verb == "classify":
            _, classes, scores = servable.classify(signature_name, examples)
            num = (classes if classes is not None else scores).shape[1]
            labels = classes.tolist() if classes is not None else [[b""] * num] * len(examples)
            values = scores.tolist() if scores is not None else [[0.0] * num] * len(examples)
            results = [
                [
                    [lab.decode("utf-8", "replace") if isinstance(lab, bytes) else str(lab), val]
                    for lab, val in zip(row_labels, row_values, strict=True)
                ]
                for row_labels, row_values in zip(labels, values, strict=True)
            ]
            return 200, JSON_TYPE, dumps({"results": results})
        _, values_array = servable.regress(signature_name, examples)
        return 200, JSON_TYPE, dumps({"results": values_array.tolist()})


# --------------------------------------------------------------------- HTTP layer


class _Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 with keep-alive, Content-Length or chunked bodies, ``Expect: 100-continue``."""

    disable_nagle_algorithm = True
    timeout = 600  # idle keep-alive connections are closed after this many seconds
    server: HttpServer

    def handle(self) -> None:
        try:
            while self._one_request():
                pass
        except (ConnectionError, TimeoutError, OSError):
            pass

    def _send(
        self, status: int, content_type: str, body: bytes, *, close: bool, extra: str = ""
    ) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Client Closed Request" if status == 499 else "Error"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}"
        )
        if self.server.cors:
            head += (
                "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: POST, GET\r\n"
                "Access-Control-Allow-Headers: Content-Type\r\n"
            )
        if close:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)

    def _fail(self, status: int, message: str) -> bool:
        self._send(status, JSON_TYPE, dumps({"error": message}), close=True)
        return False

    def _one_request(self) -> bool:
        line = self.rfile.readline(65537)
        if not line:
            return False
        if len(line) > 65536:
            return self._fail(414, "Request line too long")
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return self._fail(400, "Malformed HTTP request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for _ in range(200):
            raw = self.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            return self._fail(431, "Too many request headers")
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        limit = self.server.max_body_bytes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            if headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self._read_chunked(limit)
            if body is None:
                return self._fail(
                    413, f"Request body exceeds the limit of {limit} bytes (--max_request_bytes)"
                )
        else:
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                return self._fail(400, "Invalid Content-Length header")
            if length < 0:
                return self._fail(400, "Invalid Content-Length header")
            if length > limit:
                expects_continue = headers.get("expect", "").lower() == "100-continue"
                if not expects_continue and length <= 4 * limit:
                    self._discard(length)  # so the client is still reading when the 413 comes
                return self._fail(
                    413,
                    f"Request body of {length} bytes exceeds the limit of {limit} bytes "
                    "(--max_request_bytes)",
                )
            if length and headers.get("expect", "").lower() == "100-continue":
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                return False
        path = target.split("?", 1)[0]
        if method == "HEAD":
            status, ctype, payload = self.server.handler("GET", path, body, headers)
            self._send(status, ctype, b"", close=not keep_alive)
            return keep_alive
        status, ctype, payload = self.server.handler(method, path, body, headers)
        self._send(status, ctype, payload, close=not keep_alive)
        return keep_alive

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self, limit: int) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1026)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionError("bad chunk size") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > limit:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)


class HttpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threaded HTTP/1.1 server calling ``handler(method, path, body, headers)``."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[[str, str, bytes, dict[str, str]], Response],
        *,
        max_body_bytes: int,
        cors: bool = False,
    ):
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.cors = cors
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def metrics_only(
    core: ServingCore, paths: tuple[str, ...]
) -> Callable[[str, str, bytes, dict[str, str]], Response]:
    """A handler that serves only the Prometheus page (for ``--metrics_port``)."""

    def handle(method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        if path in paths:
            return 200, "text/plain; version=0.0.4", core.metrics.render().encode()
        return 404, "text/plain", f"Unexpected path: {path}. Should be {paths[0]}\n".encode()

    return handle
