#!/usr/bin/env bash
# Every check of the project, as CI runs it: formatting, lints, unit and fixture tests, the
# template and the OpenAPI document, then the end-to-end and attack suites and the security
# header grade against a local stack it starts and stops itself, and last the OpenAPI fuzz run
# against a stack of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
export SAM_CLI_TELEMETRY=0 CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

scripts/venv.sh
# --ignore-scripts: the MDN HTTP Observatory's install scripts download lists (observatory.sh).
[ -d node_modules/stripe ] && [ -d node_modules/@mdn/mdn-http-observatory ] && [ -d node_modules/@redocly/cli ] ||
  npm ci --ignore-scripts --no-audit --no-fund --silent

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "unit, fixture and conformance tests"
cargo test --workspace --quiet

step "template: sam validate --lint and cfn-lint"
.venv/bin/sam validate --lint --template template.yaml
.venv/bin/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml

step "template: Checkov IaC security scan (skips only in the template's own Metadata, with reasons)"
.venv/checkov/bin/checkov --file template.yaml --framework cloudformation --quiet --compact --skip-download

step "template drift: each function's policy, tables and secrets against its code"
.venv/bin/python -m unittest -q scripts/test_template.py

step "security events: the template's metric filters and queries against the Event enum (events.json)"
.venv/bin/python -m unittest -q scripts/test_events.py

step "OpenAPI document: valid 3.1, in step with the router, the template and the functions"
.venv/bin/python -m unittest -q scripts/test_openapi.py

step "OpenAPI document: Redocly CLI's recommended rules, any finding fails (redocly.yaml)"
REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true node_modules/.bin/redocly lint --format=stylish openapi.yaml

step "local Stripe stand-in tests"
if [ -f scripts/test_stripe_standin.py ]; then .venv/bin/python -m unittest -q scripts/test_stripe_standin.py; fi

step "local Secrets Manager: rotation stages in moto, the secrets created from the template"
.venv/bin/python -m unittest -q scripts/test_local_secrets.py

# The end-to-end stack gets its own ports so it can run beside `make run`.
export API_PORT=${TEST_API_PORT:-9100} MOTO_PORT=${TEST_MOTO_PORT:-5105}
trap 'scripts/stack.sh stop' EXIT
step "starting the local stack for end-to-end tests"
EXTRA_ENV=tests/e2e.env scripts/stack.sh start
set -a; . config/local.env; set +a
export FLOWBOTZ_API_URL=http://127.0.0.1:$API_PORT
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$MOTO_PORT
export AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:$MOTO_PORT
export FLOWBOTZ_FUNCTION_LOG=$PWD/.run/$API_PORT/watch.log
export FLOWBOTZ_STRIPE_URL=http://127.0.0.1:$((API_PORT + 3111))

step "end-to-end and attack tests over HTTP and API Gateway events"
cargo test -p flowbotz-tests --features e2e --quiet

step "security headers graded by the MDN HTTP Observatory"
scripts/observatory.sh "$FLOWBOTZ_API_URL/api/health"

step "store outage: auth fails closed, health fails open"
kill "$(cat .run/$API_PORT/moto.pid)" 2>/dev/null || true
rm -f .run/$API_PORT/moto.pid
cargo test -p flowbotz-tests --features e2e-outage --test e2e_outage --quiet
scripts/stack.sh stop

step "OpenAPI fuzzing: schemathesis, every check, against a stack of its own"
scripts/fuzz.sh

step "all checks passed"
