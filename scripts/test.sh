#!/usr/bin/env bash
# The test suite: installs the test dependencies into .venv/ and runs pytest (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest tests -q "$@"
