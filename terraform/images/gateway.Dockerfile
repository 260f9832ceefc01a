# The ingestion gateway's image: the gateway and the contract it imports, nothing else. Build it
# from the repository root with the context gateway-context.sh makes (the lock, the two folders
# and this file):
#   sh terraform/images/gateway-context.sh | docker build -f terraform/images/gateway.Dockerfile -t IMAGE -
# or with Cloud Build: terraform/images/cloudbuild.yaml (README step 2).
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock ./
COPY clickstream_contract ./clickstream_contract
COPY gateway ./gateway
RUN python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --quiet -c requirements.lock ./clickstream_contract ./gateway

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
