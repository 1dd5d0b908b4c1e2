# whatart image. One Dockerfile, two images, chosen by the EXTRAS build arg:
#   EXTRAS=ui      (default) runtime: ingest / serve / ui — no torch
#   EXTRAS=export  build time: `whatart export` (torch, torchvision, onnx)
# Triton itself runs from NVIDIA's NGC image (see docker-compose.yml).
FROM python:3.11-slim

ARG EXTRAS=ui

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install ".[${EXTRAS}]"

# Unprivileged user (uid 1000). Mount points exist and are owned by it, so fresh named
# volumes mounted there inherit that ownership.
RUN useradd --create-home --uid 1000 whatart \
    && mkdir -p /index /models \
    && chown whatart:whatart /index /models
USER whatart

ENTRYPOINT ["whatart"]
CMD ["--help"]
