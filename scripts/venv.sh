#!/usr/bin/env bash
# Creates .venv/ and installs scripts/requirements.txt into it, once per change of that file;
# likewise .venv/checkov/ from scripts/requirements-checkov.txt (Checkov pins a boto3 that
# aws-sam-cli excludes, so it gets a venv of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

install() { # <venv dir> <requirements file>
  local dir=$1 req=$2 stamp
  stamp=$dir/.installed-$(sha256sum "$req" | cut -c1-16)
  if [ -f "$stamp" ]; then return 0; fi
  echo "==> installing $req into $dir/ (first run only)"
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  rm -f "$dir"/.installed-*
  touch "$stamp"
}

install .venv scripts/requirements.txt
install .venv/checkov scripts/requirements-checkov.txt
