"""Serving benchmark: in-process call vs `kts serve` (gRPC, REST; batching off/on) vs `mlflow models serve`.

One process run, side by side, on the digits CNN (``service.models.build("simple_cnn")``
behind the train-split normalization, exported with `serving.export`):

* ``in-process``: ``tf.saved_model.load(...).signatures["serving_default"]`` called
  directly -- the limit any server can approach;
* ``kts serve`` over gRPC (stock ``tensorflow_serving.apis`` stub) and REST (keep-alive
  HTTP/1.1, ``{"instances": [...]}``), with ``--enable_batching`` off and on;
* ``mlflow models serve --env-manager local`` of the same trained Keras model (MLflow's
  Keras flavor, ``POST /invocations`` with the same body), and of a pyfunc that calls
  the same exported SavedModel signature (MLflow's best case).

Every request carries one digit image (online serving), at concurrency 1, 8 and 32, one
connection per client. The load comes from ``h2load`` (nghttp2's load generator, C;
HTTP/1.1 for REST, HTTP/2 gRPC frames of the same serialized ``PredictRequest`` the stock
stub sends) when it is installed (Debian: ``apt-get install nghttp2-client``), else from
client threads in this process (``--load python``). Client and servers share the
machine's cores: the Python clients spend about 0.4 ms of CPU per request, h2load about
0.07 ms, so with Python clients the servers' ratios are diluted by the load generator's
own work. Compare ratios within one run, not absolute numbers across machines. The
in-process cells and the c=1 paired latencies always use Python (the stock gRPC stub).

The two ``kts serve`` processes (batching off and on) and the MLflow pyfunc server run
side by side, and each (protocol, concurrency) cell is measured in ``--rounds`` slices
that take turns between them: on a shared machine the load drifts over a run, and
measuring all "off" cells before all "on" cells (and MLflow last) turned that drift
into the ratios the targets are about (batching on/off swung 0.7x-3.5x between runs).
Taking turns spreads the drift over all of them; the per-round ratios are printed so
their spread shows. The MLflow Keras flavor, seconds per answer at c=32, is measured on
its own. Each kts cell also reports the CPU the server process and this (client)
process spent per request, and for batching on the mean rows per model call from the
server's ``kts_serving_batch_size`` metric.

Run (from the repository root):
    .venv/bin/python -m bench.serving [--seconds 3] [--rounds 3] [--load auto|h2load|python]
        [--batch-timeout-micros 10000] [--json results.json] [--skip-mlflow]
        [--concurrency 1,8,32] [--quick]

``--quick`` is a smoke round (0.5 s per cell, one round, concurrency 1 and 32, MLflow's
Keras flavor skipped: at c=32 it answers in seconds, so a short window counts none of
its answers); flags given with it win. Its numbers are not results.

The batching-on server waits up to ``--batch-timeout-micros`` for a batch to fill, as
upstream's batcher does: 10 ms lets the c=32 batches reach 17-25 rows here (1 ms: 3-9),
and costs the light loads (c=1 answers in ~13 ms; at c=8 batching on is slower than off).

Parts: `load` (the clients: gRPC stub, HTTP, h2load; paired calls), `servers` (kts
serve, mlflow models serve, the in-process baseline), `model` (the digits CNN),
`measure` (cells, alone or taking turns), `report` (table, verdicts, JSON), and
``__main__`` (the command line and the order of the run).
"""
