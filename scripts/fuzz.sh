#!/usr/bin/env bash
# The OpenAPI fuzz run of `make test`: schemathesis with every check against a local stack of
# its own (other ports, rate limits raised through tests/fuzz/limits.env for this stack only).
#
#   scripts/fuzz.sh                    start the fuzz stack, fuzz, stop it
#   FUZZ_EXAMPLES=200 scripts/fuzz.sh  more test cases per operation and phase (default 100)
#   FUZZ_SEED=123 scripts/fuzz.sh      replay a run (every run prints its seed)
#
# Auth, CSRF and webhook signatures come from tests/fuzz/hooks.py; the configuration is
# tests/fuzz/schemathesis.toml. The JUnit report is written to .run/fuzz/junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
export API_PORT=${FUZZ_API_PORT:-9200} MOTO_PORT=${FUZZ_MOTO_PORT:-5205}
export EXTRA_ENV=$PWD/tests/fuzz/limits.env
EXAMPLES=${FUZZ_EXAMPLES:-100}
OUT=.run/fuzz
mkdir -p "$OUT"

scripts/venv.sh
trap 'scripts/stack.sh stop' EXIT
scripts/stack.sh start

export FLOWBOTZ_API_URL=http://127.0.0.1:$API_PORT
# This run's moto (its SES mailbox), not one an earlier step of `make test` pointed at.
export AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:$MOTO_PORT
args=(--config-file tests/fuzz/schemathesis.toml run openapi.yaml --url "$FLOWBOTZ_API_URL"
  --checks all --max-examples "$EXAMPLES" --report junit --report-junit-path "$OUT/junit.xml")
if [ -n "${FUZZ_SEED:-}" ]; then args+=(--seed "$FUZZ_SEED"); fi

# Whether a finished run's only problems are schemathesis's own runtime errors (its generator
# crashing, as hypothesis's "Inconsistent results" once did): no check failed and no other kind of
# error (a network error, for one, is the stack's and counts).
tool_errors_only() {
  local errors
  errors=$(awk '/^Errors:/ { on = 1; next } on && NF == 0 { exit } on' "$OUT/output.txt")
  ! grep -q '<failure' "$OUT/junit.xml" 2>/dev/null &&
    grep -q 'Runtime Error' <<<"$errors" && ! grep -v 'Runtime Error' <<<"$errors" | grep -q .
}

echo "==> schemathesis $(.venv/bin/st --version | awk '{print $NF}'): every check, up to $EXAMPLES cases per operation and phase"
started=$SECONDS
status=0
.venv/bin/st "${args[@]}" 2>&1 | tee "$OUT/output.txt" || status=$?
if [ "$status" -ne 0 ] && [ -z "${FUZZ_SEED:-}" ] && tool_errors_only; then
  # Every check passed; the tool itself failed. Say so and run once more with a new seed: a second
  # failure of any kind fails the run.
  # Without the example database and cache of the first run, which would replay the same crash.
  cp "$OUT/output.txt" "$OUT/output-tool-error.txt"
  rm -rf "$OUT/schemathesis-cache-tool-error"
  if [ -d "$OUT/schemathesis-cache" ]; then mv "$OUT/schemathesis-cache" "$OUT/schemathesis-cache-tool-error"; fi
  echo "==> schemathesis failed inside itself with every check passing (kept in $OUT/output-tool-error.txt); running once more with a new seed and no replay"
  status=0
  .venv/bin/st "${args[@]}" --generation-database :memory: 2>&1 | tee "$OUT/output.txt" || status=$?
fi
elapsed=$((SECONDS - started))

cases=$(grep -Eo '[0-9]+ generated' "$OUT/output.txt" | tail -1 | awk '{print $1}')
operations=$(grep -Eo 'Tested: [0-9]+' "$OUT/output.txt" | tail -1 | awk '{print $2}')
seed=$(grep -Eo 'Seed: [0-9]+' "$OUT/output.txt" | tail -1 | awk '{print $2}')
echo "==> fuzz run: ${cases:-?} test cases over ${operations:-?} operations (up to $EXAMPLES per operation and phase), seed ${seed:-?}, ${elapsed} s"
exit "$status"
