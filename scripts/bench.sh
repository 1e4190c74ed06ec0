#!/usr/bin/env bash
# make bench: cold start, per-request cost, DynamoDB round trips, size and memory of every
# function beside a bare lambda_http function, written to BENCHMARKS.md.
#
#   1. builds every function, the bare function and the harness with the release profile;
#   2. runs the criterion benchmark of the security pipeline (tests/bench/pipeline.rs);
#   3. starts moto (DynamoDB) and the Stripe stand-in on their own ports (5505, 12611);
#   4. runs target/release/bench-harness, which plays the Lambda Runtime API for each binary
#      and writes BENCHMARKS.md and .run/bench/results.json; then stops everything.
#
# BENCH_EVENTS (1000), BENCH_COLD_STARTS (20) and BENCH_TIMING_PAIRS (300) size the run;
# CARGO_TARGET_DIR is honoured. Not part of make test or CI: the numbers need a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STARTED=$(date +%s)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUN_DIR=$ROOT/.run/bench
export CARGO_TERM_COLOR=never
# The services use the stack's scripts on ports of their own, so make run can stay up.
export API_PORT=${BENCH_API_PORT:-9500} MOTO_PORT=${BENCH_MOTO_PORT:-5505}

log() { printf '\n==> %s\n' "$*"; }

rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR/logs"

log "release build: every function, the two baselines and bench-harness (same profile)"
cargo build --release --workspace --bins --features flowbotz-tests/bench

log "criterion: the security pipeline's own CPU time"
CRITERION_HOME=$RUN_DIR/criterion \
  cargo bench -p flowbotz-tests --features bench-criterion --bench pipeline -- --noplot

trap 'scripts/stack.sh stop' EXIT
log "starting moto and the Stripe stand-in"
scripts/stack.sh services

log "measuring"
BENCH_BIN_DIR=$TARGET/release \
BENCH_ENV_FILE=$ROOT/.run/$API_PORT/lambda.env \
BENCH_CRITERION_DIR=$RUN_DIR/criterion \
BENCH_OUTPUT=$ROOT/BENCHMARKS.md \
BENCH_RESULTS=$RUN_DIR/results.json \
BENCH_LOG_DIR=$RUN_DIR/logs \
BENCH_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')" \
BENCH_RUSTC="$(rustc --version)" \
BENCH_STARTED=$STARTED \
  "$TARGET/release/bench-harness"

log "done in $(( $(date +%s) - STARTED )) s: BENCHMARKS.md (raw results in .run/bench/results.json)"
