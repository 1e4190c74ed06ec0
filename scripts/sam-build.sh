#!/usr/bin/env bash
# `sam build` of every function for x86_64 on this machine: cargo-lambda from .venv, the native
# compiler (no zig). x86_64 is the template's default Architecture and every config env's in
# samconfig.toml, so `scripts/sam-build.sh --config-env production` builds what
# `sam deploy --config-env production` deploys. Extra arguments go to `sam build`. Slow (a release
# build with LTO per function), so it is not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0 CARGO_LAMBDA_COMPILER=cargo
time sam build "$@"
