#!/bin/sh
# The gateway image's build context, as a tar on standard output: the versions (requirements.lock),
# the contract and the gateway, and the Dockerfile; nothing else of the repository, and none of
# what a local install or run leaves in those folders (build/, *.egg-info/, __pycache__/).
# From the repository root:
#   sh terraform/images/gateway-context.sh | docker build -f terraform/images/gateway.Dockerfile -t IMAGE -
# Cloud Build runs the same (cloudbuild.yaml); tests/test_packaging.py builds from its output.
set -eu
cd "$(dirname "$0")/../.."
exec tar -cf - --exclude=__pycache__ --exclude='*.egg-info' --exclude=build --exclude=dist \
    requirements.lock clickstream_contract gateway terraform/images/gateway.Dockerfile
