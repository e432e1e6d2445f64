#!/usr/bin/env bash
# The test suite: installs the test dependencies into .venv/ and runs pytest (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
# a venv left without pip (an interrupted first run) is made again
.venv/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf .venv && python3 -m venv .venv; }
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest -q "$@"   # pyproject.toml: testpaths = tests; arguments narrow it
