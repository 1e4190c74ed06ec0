#!/usr/bin/env bash
# Creates .venv/ and installs scripts/requirements.txt into it, once per change of that file.
set -euo pipefail
cd "$(dirname "$0")/.."
req=scripts/requirements.txt
stamp=.venv/.installed-$(sha256sum "$req" | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
echo "==> installing local tooling into .venv/ (first run only)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
rm -f .venv/.installed-*
touch "$stamp"
