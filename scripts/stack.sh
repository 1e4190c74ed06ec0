#!/usr/bin/env bash
# The local stack: moto_server (DynamoDB, Secrets Manager and SES; scripts/mailbox.py prints each mail sent), the tables and secrets from
# template.yaml, and every function behind `cargo lambda watch`.
#
#   scripts/stack.sh run     serve in the foreground until Ctrl-C (make run)
#   scripts/stack.sh start   start in the background and wait until ready (make test)
#   scripts/stack.sh stop    stop what `start` started
#   scripts/stack.sh services   start only moto (tables, secrets) and the Stripe stand-in, and
#                               write the functions' environment to .run/$API_PORT/lambda.env
#                               (make bench runs the functions itself)
#
# API_PORT (default 9000) and MOTO_PORT (default 5005) choose the ports; EXTRA_ENV names a
# file of KEY=VALUE lines added to the functions' environment (tests raise limits this way).
#
# Secret values never enter the functions' environment: they are generated once into .env
# (config/local-secrets.env holds the Stripe stand-in's key), stored in moto's Secrets Manager
# by scripts/create_secrets.py, and each function gets only the ids (*_ID) of its secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
API_PORT=${API_PORT:-9000}
MOTO_PORT=${MOTO_PORT:-5005}
STRIPE_PORT=${STRIPE_PORT:-$((API_PORT + 3111))}
RUN_DIR=$ROOT/.run/$API_PORT
mkdir -p "$RUN_DIR"

log() { printf '==> %s\n' "$*"; }

secrets() {
  if [ ! -f .env ]; then
    log "generating development secrets into .env"
    umask 077
    {
      echo "# Development secrets, generated once; never accepted in staging or production."
      echo "JWT_SECRET_KEY=dev-only-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      echo "CSRF_SECRET_KEY=dev-only-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
      echo "STRIPE_WEBHOOK_SECRET=whsec_dev_only_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    } > .env
  fi
}

lambda_env() {
  local f=$RUN_DIR/lambda.env
  {
    grep -v '^#' config/local.env
    cat "$RUN_DIR/secrets.env"
    echo "AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$MOTO_PORT"
    echo "AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$MOTO_PORT"
    echo "AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:$MOTO_PORT"
    echo "STRIPE_API_BASE=http://127.0.0.1:$STRIPE_PORT/"
    if [ -n "${EXTRA_ENV:-}" ]; then grep -v '^#' "$EXTRA_ENV"; fi
  } | grep -v '^\s*$' > "$f"
  # The functions fetch secrets by id; a value here would be a second path around that.
  if grep -Eq '^(JWT_SECRET_KEY|JWT_SECRET_KEY_PREVIOUS|CSRF_SECRET_KEY|STRIPE_SECRET_KEY|STRIPE_WEBHOOK_SECRET|AI_API_KEY)=' "$f"; then
    echo "a secret value reached $f; secrets belong in Secrets Manager" >&2
    return 1
  fi
  echo "$f"
}

wait_http() { # url seconds
  local url=$1 deadline=$((SECONDS + $2))
  until curl -s -o /dev/null "$url"; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $url" >&2; return 1; fi
    sleep 0.3
  done
}

start_moto() {
  log "starting moto_server (DynamoDB, Secrets Manager, SES) on 127.0.0.1:$MOTO_PORT"
  MOTO_PORT=$MOTO_PORT .venv/bin/python scripts/dynamodb_local.py 127.0.0.1 "$MOTO_PORT" > "$RUN_DIR/moto.log" 2>&1 &
  echo $! > "$RUN_DIR/moto.pid"
  wait_http "http://127.0.0.1:$MOTO_PORT/moto-api/" 30
  log "creating tables from template.yaml"
  set -a; . config/local.env; set +a
  AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$MOTO_PORT .venv/bin/python scripts/create_tables.py template.yaml
  log "creating secrets from template.yaml"
  AWS_ENDPOINT_URL_SECRETS_MANAGER=http://127.0.0.1:$MOTO_PORT .venv/bin/python scripts/create_secrets.py \
    template.yaml .env config/local-secrets.env > "$RUN_DIR/secrets.env"
  log "verifying the mail sender identity in the local SES"
  AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:$MOTO_PORT .venv/bin/python scripts/create_mail_identity.py
}

start_mailbox() {
  # Each new mail's recipient, subject and link, printed in this terminal (make run).
  .venv/bin/python scripts/mailbox.py "$MOTO_PORT" &
  echo $! > "$RUN_DIR/mailbox.pid"
}

start_stripe() {
  log "starting the local Stripe stand-in on 127.0.0.1:$STRIPE_PORT"
  local secret
  secret=$(grep '^STRIPE_WEBHOOK_SECRET=' .env | cut -d= -f2- | cut -d, -f1)
  STRIPE_WEBHOOK_SECRET=$secret .venv/bin/python scripts/stripe_standin.py --host 127.0.0.1 --port "$STRIPE_PORT" \
    --webhook-url "http://127.0.0.1:$API_PORT/api/payments/webhook" > "$RUN_DIR/stripe.log" 2>&1 &
  echo $! > "$RUN_DIR/stripe.pid"
  wait_http "http://127.0.0.1:$STRIPE_PORT/_standin/health" 30
}

build() {
  log "building every function"
  cargo build --workspace --bins --quiet
}

start_watch() { # foreground|background
  local envfile
  envfile=$(lambda_env)
  log "starting cargo lambda watch on http://127.0.0.1:$API_PORT"
  local cmd=(.venv/bin/cargo-lambda lambda watch --disable-cors -A 127.0.0.1 -P "$API_PORT" --env-file "$envfile" --ignore-changes)
  if [ "$1" = background ]; then
    "${cmd[@]}" > "$RUN_DIR/watch.log" 2>&1 &
    echo $! > "$RUN_DIR/watch.pid"
  else
    "${cmd[@]}" &
    echo $! > "$RUN_DIR/watch.pid"
  fi
  wait_http "http://127.0.0.1:$API_PORT/api/health" 120
}

stop() {
  for name in mailbox watch stripe moto; do
    local pidfile=$RUN_DIR/$name.pid
    if [ -f "$pidfile" ]; then
      local pid
      pid=$(cat "$pidfile")
      pkill -TERM -P "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

banner() {
  cat <<MSG

FlowBotz API on http://127.0.0.1:$API_PORT
  DynamoDB, Secrets Manager and SES: moto on 127.0.0.1:$MOTO_PORT; Stripe stand-in on 127.0.0.1:$STRIPE_PORT
  Mail sent (recipient, subject, link) is printed below as it arrives.
Routes:
$(sed -n '/^\[workspace.metadata.lambda.watch.router\]/,/^\[/p' Cargo.toml | grep '^"' | grep -v '{' | sed 's/^"\(.*\)" = "\(.*\)"/  http:\/\/127.0.0.1:'"$API_PORT"'\1  ->  \2/')
Try:
  curl -i http://127.0.0.1:$API_PORT/api/health
Stop with Ctrl-C.
MSG
}

case "${1:-}" in
  run)
    scripts/venv.sh
    secrets
    trap 'stop' EXIT
    trap 'exit 130' INT TERM
    stop
    start_moto
    start_stripe
    build
    start_watch foreground
    banner
    start_mailbox
    wait
    ;;
  start)
    scripts/venv.sh
    secrets
    stop
    start_moto
    start_stripe
    build
    start_watch background
    log "stack ready on http://127.0.0.1:$API_PORT"
    ;;
  services)
    scripts/venv.sh
    secrets
    stop
    start_moto
    start_stripe
    lambda_env > /dev/null
    log "services ready; environment in $RUN_DIR/lambda.env"
    ;;
  stop)
    stop
    ;;
  *)
    echo "usage: $0 run|start|services|stop" >&2
    exit 2
    ;;
esac
