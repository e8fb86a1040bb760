# Job image: the Ray base image (same Ray and Python as the project's environment), torch, and this
# project installed, so `convlstm …` runs as a Ray job entrypoint and on every Ray node.
#   docker build -t convlstm-job:2.60.0-py311-cpu .
#   docker build --build-arg VARIANT=gpu -t convlstm-job:2.60.0-py311-gpu .
#   docker build --build-arg VARIANT=gpu --build-arg TORCH_CUDA=cu130 -t convlstm-job:2.60.0-py311-gpu .
# RAY_VERSION must equal the Ray in .venv (tests/test_infra.py checks it); bump both together.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# cpu: CPU-only torch wheel, small image; gpu: CUDA base image and a CUDA torch build (TORCH_CUDA).
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}

ARG RAY_VERSION
ARG VARIANT
ARG TORCH_VERSION=2.13.0
# The CUDA build of torch for VARIANT=gpu, pinned to PyTorch's own index rather than PyPI's Linux wheel (whose
# CUDA version is whatever that release defaults to). cu128: CUDA 12.8, bundled with the wheel, for NVIDIA
# drivers >= 570 (A100, H100, ...); 2.13 also has cu126 and cu130 (drivers >= 580).
ARG TORCH_CUDA=cu128

# The ray image's own non-root user (uid 1000), which owns its Python environment.
USER ray
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 \
    CONVLSTM_HOME=/home/ray/convlstm-home

# torch first, from the index matching the variant, so `pip install .` finds it satisfied; then check that
# the installed build is the one asked for (2.13.0+cpu, 2.13.0+cu128, ...).
RUN if [ "$VARIANT" = "cpu" ]; then build=cpu; else build="$TORCH_CUDA"; fi \
 && pip install --index-url "https://download.pytorch.org/whl/${build}" "torch==${TORCH_VERSION}" \
 && python -c "import sys, torch; sys.exit(torch.__version__ != '${TORCH_VERSION}+${build}' and 'torch ' + torch.__version__ + ' is not ${TORCH_VERSION}+${build}')"

COPY --chown=ray:users pyproject.toml README.md /tmp/convlstm-src/
COPY --chown=ray:users convlstm /tmp/convlstm-src/convlstm
COPY --chown=ray:users pipelines /tmp/convlstm-src/pipelines
COPY --chown=ray:users jobs /tmp/convlstm-src/jobs
# Pinning ray keeps pip from replacing the base image's Ray while adding the data/train extras.
RUN pip install /tmp/convlstm-src "ray[data,train,default]==${RAY_VERSION}" \
 && rm -rf /tmp/convlstm-src \
 && convlstm version

WORKDIR /home/ray
