# FlowBotz secure API. Needs only Rust, Python 3, Node.js, make and git; everything else is
# installed into .venv/ on first use.

.PHONY: run test fuzz stop lint build bench mutants clean help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

run: ## Serve the whole API on http://127.0.0.1:9000 with local DynamoDB and Secrets Manager (moto), Stripe and AI stand-ins
	@scripts/stack.sh run

test: ## Run every check: fmt, clippy, unit, fixture, template, OpenAPI, end-to-end, attacks, headers, fuzz
	@scripts/test.sh

fuzz: ## The OpenAPI fuzz run alone (schemathesis against its own stack; FUZZ_EXAMPLES, FUZZ_SEED)
	@scripts/fuzz.sh

stop: ## Stop a stack left running by an interrupted test run
	@scripts/stack.sh stop
	@API_PORT=9100 scripts/stack.sh stop
	@API_PORT=9200 scripts/stack.sh stop
	@API_PORT=9500 scripts/stack.sh stop

bench: ## Benchmarks against a bare Lambda: init, latency, pipeline CPU, DynamoDB requests, size; writes BENCHMARKS.md
	@scripts/bench.sh

lint: ## Formatting, clippy and the template only
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings
	scripts/venv.sh && SAM_CLI_TELEMETRY=0 .venv/bin/sam validate --lint && .venv/bin/cfn-lint template.yaml && .venv/checkov/bin/checkov --file template.yaml --framework cloudformation --quiet --compact --skip-download

build: ## sam build every function for x86_64 with the native compiler (slow, not in CI)
	@scripts/sam-build.sh

mutants: ## Mutation testing of the security modules (cargo-mutants; slow, not in CI)
	@scripts/mutants.sh

clean: ## Remove build output and the local stack's state
	cargo clean
	rm -rf .run
