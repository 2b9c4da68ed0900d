# syntax=docker/dockerfile:1
# keras-training-service images, all built from this repository's pyproject.toml.
#
#   docker build -t keras-training-service:0.1.0 .                                  # CPU (default target)
#   docker build --build-arg EXTRAS=gpu -t keras-training-service:0.1.0-gpu .       # GPU: the `gpu` extra
#   docker build --target tracking -t keras-training-service-mlflow:0.1.0 .         # MLflow server for k8s/
#
# The GPU image needs no CUDA base: the `gpu` extra (tensorflow[and-cuda]) brings
# CUDA and cuDNN as wheels; the node only needs the NVIDIA driver and container
# toolkit. Nothing secret and no data go into any image: configs, credentials and
# datasets come from the environment at run time (ConfigMaps, Secrets, volumes).

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- builder
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
# "" installs `pip install .` (CPU); "gpu" installs `pip install .[gpu]`.
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# What pyproject.toml packages, and nothing else (see .dockerignore).
COPY pyproject.toml README.md ./
COPY service/ service/
COPY pipelines/ pipelines/
COPY tuning/ tuning/
COPY serving/ serving/
# "./" or "./[gpu]": the same `pip install .` the README uses.
RUN pip install --no-cache-dir "./${EXTRAS:+[${EXTRAS}]}" \
    && pip freeze --exclude keras-training-service > /opt/resolved.txt \
    && grep -Ei '^mlflow==' /opt/resolved.txt > /opt/tracking-requirements.txt \
    && kts --help > /dev/null

# ---------------------------------------------------------------- tracking
# The MLflow tracking server of k8s/base/mlflow.yaml: the same MLflow version the
# kts image resolved (so client and server agree), plus the PostgreSQL driver and
# boto3 for S3 artifacts. Small: no TensorFlow.
FROM python:${PYTHON_VERSION}-slim-bookworm AS tracking
ARG PSYCOPG2_VERSION=2.9.10
ARG BOTO3_VERSION=1.35.99
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/mlflow/bin:$PATH \
    HOME=/tmp
COPY --from=builder /opt/resolved.txt /opt/tracking-requirements.txt /opt/
RUN python -m venv /opt/mlflow \
    && /opt/mlflow/bin/pip install --no-cache-dir \
        --requirement /opt/tracking-requirements.txt --constraint /opt/resolved.txt \
        "psycopg2-binary==${PSYCOPG2_VERSION}" "boto3==${BOTO3_VERSION}" \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --no-create-home --shell /usr/sbin/nologin mlflow
USER 10001:10001
WORKDIR /tmp
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["mlflow"]
CMD ["server", "--host=0.0.0.0", "--port=5000"]

# ---------------------------------------------------------------- runtime (default)
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=2
RUN groupadd --system --gid 10001 kts \
    && useradd --system --uid 10001 --gid kts --home-dir /work --no-create-home \
        --shell /usr/sbin/nologin kts \
    && install -d -o kts -g kts -m 0755 /work
COPY --from=builder /opt/venv /opt/venv
WORKDIR /work
USER 10001:10001
# Batch jobs (kts run, TFJob replicas, tuning): Kubernetes judges them by exit
# code, so there is no HEALTHCHECK here. `kts serve` in this image is probed on
# its REST port by whoever runs it.
HEALTHCHECK NONE
ENTRYPOINT ["kts"]
CMD ["--help"]
