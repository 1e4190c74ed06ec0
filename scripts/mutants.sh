#!/usr/bin/env bash
# Mutation testing of the security crate's security modules with cargo-mutants: every mutant
# that survives the unit tests is a control whose removal no test would notice.
#   scripts/mutants.sh            all security modules
#   scripts/mutants.sh FILE...    only these files
# MUTANTS_ARGS adds cargo-mutants options (split on spaces), for example `--re wait_ms` to retest
# one function's mutants after adding tests for its survivors, or `--iterate` to retest only what
# the previous run in .run/mutants did not catch.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=27.1.0
BIN=.venv/cargo/bin
if ! "$BIN/cargo-mutants" mutants --version 2>/dev/null | grep -q "$VERSION"; then
  echo "==> installing cargo-mutants $VERSION into .venv/cargo (first run only)"
  cargo install --locked --quiet --root .venv/cargo "cargo-mutants@$VERSION"
fi
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=(shared/src/guard.rs shared/src/cors.rs shared/src/headers.rs shared/src/session.rs
         shared/src/validate.rs shared/src/error.rs shared/src/config.rs
         shared/src/ratelimit/window.rs shared/src/ratelimit/mod.rs
         shared/src/payments/signature.rs shared/src/accounts/password.rs)
fi
args=()
for f in "${files[@]}"; do args+=(--file "$f"); done
mkdir -p .run
started=$SECONDS
PATH="$PWD/$BIN:$PATH" cargo mutants --package flowbotz-security --all-features \
  --output .run/mutants --timeout 120 --no-shuffle "${args[@]}" ${MUTANTS_ARGS:-} || true
.venv/bin/python - "$((SECONDS - started))" <<'PY'
import json, sys
outcomes = json.load(open(".run/mutants/mutants.out/outcomes.json"))
count = {}
missed = []
for o in outcomes["outcomes"]:
    kind = o["summary"]
    if kind in ("Success", "Baseline"):
        continue
    count[kind] = count.get(kind, 0) + 1
    if kind == "MissedMutant":
        m = o["scenario"]["Mutant"]
        missed.append(f'{m["file"]}:{m["span"]["start"]["line"]}: {m.get("name") or m.get("replacement")}')
caught = count.get("CaughtMutant", 0) + count.get("Timeout", 0)
tested = caught + count.get("MissedMutant", 0)
score = 100.0 * caught / tested if tested else 0.0
print(f"mutants: {tested} tested, {caught} caught, {count.get('MissedMutant', 0)} missed, "
      f"{count.get('Unviable', 0)} unviable, in {sys.argv[1]} s")
print(f"caught share: {score:.1f}%")
for m in missed:
    print("  missed:", m)
sys.exit(0 if score >= 90.0 else 1)
PY
