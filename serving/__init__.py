"""The inference side: TensorFlow Serving exports, a compatible server, and clients.

Imports nothing else of ours (not ``service``, ``pipelines`` or ``tuning``), so it can be
installed and run lean. Modules, top to bottom:

* `serving.export` -- ``BASE/NAME/VERSION`` SavedModels (``serving_default``,
  ``classification``/``regression`` signatures, warm-up records, class names) and the
  ``models.config`` entry of each new version.
* `serving.config` -- TensorFlow Serving's text configs (``ModelServerConfig``,
  ``BatchingParameters``, ``MonitoringConfig``); `register_version` and `move_label`
  are the hooks a pipeline's register step calls.
* `serving.release` -- load-first ``promote`` and ``rollback`` of a version label.
* `serving.server` -- ``kts serve``: `manager` (versions, labels, polling), `servable`
  (one loaded version), `batching`, `metrics`, `core` (request logic), `grpc_server`
  and `rest` (the two front ends), `tensors` and `examples` (wire formats).
* `serving.client` -- small REST and gRPC clients.

Deliberate differences from the C++ TensorFlow Serving, all visible only at the edges:
REST float outputs are written as the exact float64 value of each float32 (upstream
prints the shortest float32 decimal); a request larger than ``max_batch_size`` runs
unbatched instead of being rejected; a config reload loads versions before it moves
labels (upstream checks labels first and asks for two reloads); the REST status route
resolves ``/labels/L`` to that version (upstream ignores the label there); REST bodies
over ``--max_request_bytes`` get 413; Prometheus can also be served on
``--metrics_port``; ``--grpc_max_threads`` defaults to at least 64.
"""
