# dotrec in one image: the REST API (the default command) and the CLI the compose file's one-shot
# services run (dotrec db upgrade, dotrec import, dotrec train). CPU-only torch, no CUDA libraries.
#   docker build -t dotrec:local .          (docker compose builds it for you)
#   docker run --rm -p 8000:8000 -v dotrec-models:/var/lib/dotrec/models dotrec:local
# Without a package index: deploy/offline-build.sh (a wheelhouse served to the build, pip --no-index).
# No `# syntax=` directive: BuildKit would fetch that frontend image from Docker Hub first, which
# an offline build cannot reach; the frontend built into the engine reads everything here.

# The base of both stages: the official image by default; a mirror's copy or a local build
# (deploy/standin-images.sh) stands in with --build-arg PYTHON_IMAGE=... It must have `python`
# (3.11) with venv on the PATH.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtual environment in /opt/venv holding dotrec and its dependencies ----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"
WORKDIR /src

# 0. Offline builds only (deploy/offline-build.sh sets WHEELHOUSE_URL): every pip below takes its
#    packages from that wheelhouse and never from an index. Empty (the default): the indexes.
ARG WHEELHOUSE_URL=
RUN if [ -n "${WHEELHOUSE_URL}" ]; then \
        printf '[global]\nno-index = true\nfind-links = %s\n' "${WHEELHOUSE_URL}" > /etc/pip.conf; \
    fi

# 1. torch alone, from the PyTorch CPU index: its +cpu wheel carries no CUDA libraries. The version
#    is the pin in pyproject.toml (a test checks they agree), so step 2 keeps this wheel.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# 2. The other dependencies, read from pyproject.toml: a layer rebuilt only when that file changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
    && pip install --no-cache-dir -r requirements.txt

# 2b. What nothing imports at run time, ~320 MB of the image: torch's C++ headers, test binaries
#     and protoc; every package's test suite and C headers (pip's own left alone). Step 3 imports
#     what the app uses once this is gone.
RUN site=$(echo /opt/venv/lib/python3*/site-packages) \
    && rm -rf "${site}/torch/include" "${site}/torch/test" \
    && find "${site}/torch/bin" -mindepth 1 ! -name torch_shm_manager -delete \
    && find "${site}" -depth -type d \( -name tests -o -name include \) ! -path "*/pip/*" -exec rm -rf {} +

# 3. dotrec itself (its dependencies are all in place), then a check that no CUDA crept in and
#    that everything the app loads still imports.
COPY README.md ./
COPY app ./app
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import importlib.metadata as md, torch, pandas, pyarrow.parquet, matplotlib.pyplot, app.api.main, app.ml.train; cuda = sorted(d.metadata['Name'] for d in md.distributions() if d.metadata['Name'].lower().startswith('nvidia')); assert torch.version.cuda is None and not cuda, (torch.__version__, cuda)"

# --- runtime: the virtual environment, the migrations, a non-root user ----------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="dotrec" \
      org.opencontainers.image.description="dotrec: dot-product recommendations for explicit ratings (REST API and CLI)" \
      org.opencontainers.image.licenses="MIT"

# MODELS_DIR and DATA_DIR are the mount points of the compose file's volumes. The SQLite default
# only serves a bare `docker run`; the compose file points DATABASE_URL at PostgreSQL.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MODELS_DIR=/var/lib/dotrec/models \
    DATA_DIR=/var/lib/dotrec/data \
    DATABASE_URL=sqlite:////var/lib/dotrec/data/dotrec.db

# The folders exist, owned by dotrec, before any volume is mounted on them: an empty named volume
# takes their owner, so the non-root user can write models and downloads into it.
RUN groupadd --system --gid 10001 dotrec \
    && useradd --system --uid 10001 --gid dotrec --home-dir /var/lib/dotrec --shell /usr/sbin/nologin dotrec \
    && mkdir -p /var/lib/dotrec/models /var/lib/dotrec/data \
    && chown -R dotrec:dotrec /var/lib/dotrec

COPY --from=build /opt/venv /opt/venv

# `dotrec db upgrade` finds alembic.ini and migrations/ in the working directory.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations

USER 10001:10001
EXPOSE 8000

# Liveness only (/ready also needs the database and a model); python, as slim images have no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["dotrec", "serve", "--host", "0.0.0.0", "--port", "8000"]
