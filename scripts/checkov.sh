#!/bin/sh
# Static security checks of terraform/ with checkov, from a virtualenv of its own: checkov pins
# many packages exactly, which must never touch the project's .venv.
#   scripts/checkov.sh            check; exits non-zero on any failed check
#   scripts/checkov.sh -o json    extra arguments go to checkov
# Skips are inline `checkov:skip=CKV_...:reason` comments next to the resource they concern.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
venv=.venv-checkov
if [ ! -x "$venv/bin/checkov" ]; then
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet 'checkov>=3.2,<4'
fi
exec "$venv/bin/checkov" --directory terraform --framework terraform --quiet --compact \
    --skip-download "$@"
