# Job image: the Ray base image (same Ray and Python as the project's environment), torch, and this
# project installed, so `convlstm …` runs as a Ray job entrypoint and on every Ray node.
#   docker build -t convlstm-job:2.60.0-py311-cpu .
#   docker build --build-arg VARIANT=gpu -t convlstm-job:2.60.0-py311-gpu .
# RAY_VERSION must equal the Ray in .venv (tests/test_infra.py checks it); bump both together.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# cpu: CPU-only torch wheel, small image; gpu: CUDA base image and the CUDA torch wheel from PyPI.
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}

ARG RAY_VERSION
ARG VARIANT
ARG TORCH_VERSION=2.13.0

# The ray image's own non-root user (uid 1000), which owns its Python environment.
USER ray
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 \
    CONVLSTM_HOME=/home/ray/convlstm-home

# torch first, from the index matching the variant, so `pip install .` finds it satisfied.
RUN if [ "$VARIANT" = "cpu" ]; then index=https://download.pytorch.org/whl/cpu; else index=https://pypi.org/simple; fi \
 && pip install --index-url "$index" "torch==${TORCH_VERSION}"

COPY --chown=ray:users pyproject.toml README.md /tmp/convlstm-src/
COPY --chown=ray:users convlstm /tmp/convlstm-src/convlstm
COPY --chown=ray:users pipelines /tmp/convlstm-src/pipelines
COPY --chown=ray:users jobs /tmp/convlstm-src/jobs
# Pinning ray keeps pip from replacing the base image's Ray while adding the data/train extras.
RUN pip install /tmp/convlstm-src "ray[data,train,default]==${RAY_VERSION}" \
 && rm -rf /tmp/convlstm-src \
 && convlstm version
# The bundled radar sample, where `convlstm demo` looks for it (<CONVLSTM_HOME>/data/samples).
COPY --chown=ray:users data/samples /home/ray/convlstm-home/data/samples

WORKDIR /home/ray
