# wine-quality service image: gunicorn + Flask serving one trained model artifact.
#
#   scripts/image.sh build     builds it (podman or docker) with the build arguments below filled in
#   docker build --build-arg MODEL_DIR=artifacts/model -t wine-quality:0.1.0 .
#
# The base image is an argument so machines without registry access can build on a local stand-in
# (scripts/build-base-image.sh). CI resolves the tag to a digest.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------
# deps: the locked runtime dependencies in /opt/venv. A stage (and image layer) of its own, so a
# change to the code or the model rebuilds and ships a few MB, not the 300 MB of dependencies.
# ---------------------------------------------------------------------------------------------
# checkov:skip=CKV_DOCKER_7: the tag comes from BASE_IMAGE, whose default above is pinned (3.11.14)
FROM ${BASE_IMAGE} AS deps

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# pyproject's [project] dependencies (no dev/train extras), pinned by constraints.txt, installed
# by the base image's pip into a venv that never gets a pip of its own. Wheels only, so nothing is
# compiled and no compiler is needed. No scikit-learn, SciPy or joblib: the service runs the
# artifact's ONNX export only (docs/security.md). The packages' own test suites go.
COPY pyproject.toml constraints.txt ./
RUN python3 -m venv --without-pip /opt/venv \
    && python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > requirements.txt \
    && python3 -m pip --python /opt/venv/bin/python install --no-cache-dir --only-binary=:all: \
        -c constraints.txt -r requirements.txt \
    && find /opt/venv/lib -type d -name tests -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------
# build: the service installed into that venv as a regular (non-editable) package; its files are
# collected into /overlay (same paths) for the runtime stage. Then the model artifact.
# ---------------------------------------------------------------------------------------------
FROM deps AS build

COPY README.md ./
COPY service/ service/
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python3 -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps -c constraints.txt . \
    && python3 -m pip --python /opt/venv/bin/python check \
    && mkdir /overlay \
    && /opt/venv/bin/python -c 'import importlib.metadata as m; print(*(f.locate().resolve().relative_to("/") for f in m.files("wine-quality")), sep="\n")' \
        | tar --create --directory=/ --files-from=- | tar --extract --directory=/overlay \
    && test -x /overlay/opt/venv/bin/wine-quality

# The model artifact, made world-readable and read-only whatever modes it had in the build context.
# Without the pickled model: the service never unpickles, so the image carries no pickle at all.
ARG MODEL_DIR=artifacts/model
COPY ${MODEL_DIR} /model
RUN rm -f /model/model.joblib \
    && chmod -R a+rX,go-w /model \
    && test -f /model/model.onnx \
    && python3 -c 'import json; json.load(open("/model/metadata.json"))'

# ---------------------------------------------------------------------------------------------
# runtime: the base image, the venv and the model; no compiler, no source tree, no pip in the venv.
# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

# A fixed numeric user (the chart's runAsUser/runAsGroup) that owns nothing in the image.
RUN groupadd --system --gid 10001 wine-quality \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin wine-quality

COPY --from=deps /opt/venv /opt/venv
COPY --from=build /overlay/ /
COPY --from=build /model /app/model

WORKDIR /app
# /tmp is the only writable path (a tmpfs or emptyDir when the root file system is read-only):
# gunicorn's worker heartbeat files and the Prometheus multiprocess files live there.
# GLIBC_TUNABLES: malloc maps every block of 128 KiB or more on its own, which keeps a worker's
# memory near the body it reads (wine_quality.app.settings.MALLOC_TUNABLE explains why).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    WINE_QUALITY_MODEL_DIR=/app/model \
    PROMETHEUS_MULTIPROC_DIR=/tmp/wine-quality-metrics \
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072

USER 10001:10001
EXPOSE 8080

# For plain `docker run`; Kubernetes uses the chart's probes instead. urllib raises on any status
# other than 2xx, so a service that is still loading or shutting down (503) is unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8080'), timeout=4)"]

# What the image was built from. Declared last so that a new commit or model reuses every layer above.
ARG VERSION=0.0.0
ARG GIT_COMMIT=unknown
ARG MODEL_VERSION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/wine-quality/wine-quality
LABEL org.opencontainers.image.title="wine-quality" \
      org.opencontainers.image.description="A scikit-learn model of red-wine quality, served by Flask under gunicorn." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.created="${CREATED}" \
      io.github.wine-quality.model.version="${MODEL_VERSION}"
ENV WINE_QUALITY_IMAGE_VERSION=${VERSION} \
    WINE_QUALITY_GIT_COMMIT=${GIT_COMMIT} \
    WINE_QUALITY_MODEL_VERSION=${MODEL_VERSION}

# Exec form: gunicorn is PID 1 and receives SIGTERM itself (graceful shutdown: wine_quality.app.gunicorn_conf).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/venv/bin/gunicorn", "-c", "python:wine_quality.app.gunicorn_conf"]
CMD ["wine_quality.app:create_app()"]
