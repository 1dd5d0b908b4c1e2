# whatart image. One Dockerfile, several images, chosen by the EXTRAS build arg:
#   EXTRAS=ui,milvus      (default) runtime: ingest / serve / ui, FAISS or Milvus — no torch
#   EXTRAS=ui,milvus,gpu  the same with FAISS on the GPU (run it with a GPU reserved)
#   EXTRAS=export         build time: `whatart export` (torch, torchvision, onnx)
# Triton itself runs from NVIDIA's NGC image (see docker-compose.yml).
FROM python:3.11-slim

ARG EXTRAS=ui,milvus

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
# Pinned to the versions the test suite ran with (constraints.txt; the gpu extra's two
# packages are not in it: the suite runs on CPU). faiss-cpu and faiss-gpu-cu12 install the
# same `faiss` module, as do onnxruntime and onnxruntime-gpu: with the gpu extra, the CPU
# builds are removed and the GPU ones reinstalled, at the versions just resolved, over what
# they shared.
RUN pip install -c constraints.txt ".[${EXTRAS}]" \
    && if pip show faiss-gpu-cu12 >/dev/null 2>&1; then \
         gpu_builds="$(pip freeze | grep -E '^(faiss-gpu-cu12|onnxruntime-gpu)==')" \
         && pip uninstall -y faiss-cpu onnxruntime \
         && pip install --no-deps --force-reinstall ${gpu_builds}; \
       fi

# Unprivileged user (uid 1000). Mount points exist and are owned by it, so fresh named
# volumes mounted there inherit that ownership.
RUN useradd --create-home --uid 1000 whatart \
    && mkdir -p /index /models /packages \
    && chown whatart:whatart /index /models /packages
USER whatart

ENTRYPOINT ["whatart"]
CMD ["--help"]
