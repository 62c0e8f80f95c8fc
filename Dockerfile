# The image deploy/k8s/ runs: docker build -t cosanneal:0.1.0 .
# torch first, pinned, CPU wheels from the PyTorch index (a CUDA image: use its cu* index instead);
# then cosanneal with the extras a cluster job uses (runtime, Prometheus, S3 checkpoints).
FROM python:3.11-slim

LABEL org.opencontainers.image.title="cosanneal" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/cosanneal/cosanneal"

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/cosanneal
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install ".[runtime,prometheus,s3]" \
    && useradd --uid 1000 --create-home cosanneal \
    && mkdir -p /runs /config && chown cosanneal /runs

# /config: the ConfigMap with the train config; /runs: the PersistentVolumeClaim with the run directories
VOLUME ["/runs"]
USER 1000
WORKDIR /runs
EXPOSE 9464
ENTRYPOINT ["cosanneal"]
CMD ["--help"]
