# Serving image for one registered model version: `mlgate deploy` assembles the build context
# (this file, requirements-serve.lock, src/mlgate, the model bundle of `mlgate bundle`) and
# passes the labels. Only the server and the model are inside: no MLflow, DVC or pandera.
# The labels and bundle/bundle.json name the model's sha256 and run: deploy and rollback
# check them before they reuse an image (see README "Docker").
#
#   docker build --build-arg MODEL_NAME=... --build-arg MODEL_VERSION=... \
#       --build-arg MODEL_RUN_ID=... --build-arg MODEL_SHA256=... -t IMAGE CONTEXT
#   docker run --read-only --network host -e MLGATE_SERVE_PORT=8080 IMAGE
#
# Offline builds: put wheels matching the lock in wheels/ (scripts/download-wheels.sh) and pass
# --build-arg PIP_OFFLINE=1; a base image without pulling: scripts/build-base-image.sh.
# The build stage keeps botocore's API models for S3 (the prediction log's sink) and for the
# credential providers that call STS and SSO, and drops the other ~400 services (~25 MB).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_OFFLINE=0
COPY requirements-serve.lock /tmp/requirements-serve.lock
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
    && if [ "$PIP_OFFLINE" = "1" ]; then set -- --no-index --find-links /tmp/wheels; fi \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes \
       --only-binary=:all: "$@" -r /tmp/requirements-serve.lock \
    && find /opt/venv -name "__pycache__" -prune -exec rm -rf {} + \
    && find /opt/venv/lib/python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
       ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} +

FROM ${BASE_IMAGE}
# What every model shares comes first and is cached; what names one model (its labels and its
# bundle) comes last, in two layers, so a new model version costs two layers, not the stage.
COPY --from=build /opt/venv /opt/venv
COPY src/mlgate /opt/mlgate/mlgate
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/mlgate \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLGATE_SERVE_BUNDLE=/model \
    MLGATE_SERVE_HOST=0.0.0.0 \
    MLGATE_SERVE_PORT=8080
USER 10001:10001
WORKDIR /model
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/ping' % os.environ.get('MLGATE_SERVE_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["python", "-m", "mlgate", "serve"]
ARG MODEL_NAME=unknown
ARG MODEL_VERSION=0
ARG MODEL_RUN_ID=""
ARG MODEL_SHA256=""
ARG DATA_MD5=""
ARG GIT_COMMIT=""
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="mlgate-serve ${MODEL_NAME}" \
      org.opencontainers.image.description="XGBoost model ${MODEL_NAME} version ${MODEL_VERSION}, served by mlgate" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.mlgate.model.name="${MODEL_NAME}" \
      dev.mlgate.model.version="${MODEL_VERSION}" \
      dev.mlgate.model.run-id="${MODEL_RUN_ID}" \
      dev.mlgate.model.sha256="${MODEL_SHA256}" \
      dev.mlgate.data.md5="${DATA_MD5}" \
      dev.mlgate.git.commit="${GIT_COMMIT}"
# What `mlgate serve` checks the bundle's booster against before it starts: an image derived
# from this one with another bundle copied over /model inherits it, and does not start.
ENV MLGATE_SERVE_MODEL_SHA256=${MODEL_SHA256}
COPY bundle/ /model/
