"""Keras-Tuner searches declared in the run config (`tuning:`), tracked in MLflow.

- `tuning.space`: `tuning.space` keys -> Keras-Tuner hyper-parameters (conditional
  ones included) and a trial's values -> a validated `RunConfig`.
- `tuning.search`: the HyperModel, the tuner factory (random, grid, bayesian,
  hyperband) and `run_search`.
- `tuning.tracking`: trials as MLflow child runs of the pipeline's run.

Imports only `service/`; Keras-Tuner and TensorFlow are imported inside functions.
"""
