# The ingestion gateway's image. Build from the repository root:
#   docker build -f terraform/images/gateway.Dockerfile -t IMAGE .
# or with Cloud Build: terraform/images/cloudbuild.yaml (README step 2).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clickstream ./clickstream
COPY clickstream_sdk ./clickstream_sdk
COPY gateway ./gateway
COPY processor ./processor
COPY dashboard ./dashboard
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir --quiet .

FROM python:3.11-slim
COPY --from=build /venv /venv
RUN useradd --system --uid 10001 gateway
USER gateway
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 8080
# Cloud Run sends traffic to 8080 (gateway.tf's container_port); Terraform passes
# `--workers N`, one Granian worker per vCPU (gateway_cpu).
ENTRYPOINT ["clickstream", "gateway", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--workers", "1"]
