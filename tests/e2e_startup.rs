//! Fail closed at start: every function binary (built by `make test`'s stack) refuses to start,
//! naming the variable, without `ENVIRONMENT`, with a secret value in its environment outside
//! development, or with a local endpoint override outside development.

use std::process::{Command, Stdio};

const FUNCTIONS: [&str; 9] = [
    "health",
    "register",
    "login",
    "csrf-token",
    "account",
    "chat",
    "payment-intent",
    "webhook",
    "rotate-keys",
];

/// What a function printed when started with `vars` only (plus Lambda's own variables, with
/// a Runtime API address nothing listens on), and whether it exited with an error.
fn start(name: &str, vars: &[(&str, &str)]) -> (bool, String) {
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/").to_string() + name;
    let out = Command::new(&bin)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
            ("AWS_LAMBDA_FUNCTION_NAME", name),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
        ])
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{bin} (built by make test's stack): {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn given_no_environment_when_any_function_starts_then_it_refuses_naming_environment() {
    for name in FUNCTIONS {
        let (ok, out) = start(
            name,
            &[
                ("JWT_SECRET_KEY", "dev-only-x"),
                ("CSRF_SECRET_KEY", "dev-only-y"),
            ],
        );
        assert!(!ok, "{name} started without ENVIRONMENT");
        assert!(out.contains("ENVIRONMENT is required"), "{name}: {out}");
    }
}

#[test]
fn given_production_with_a_secret_value_in_the_environment_when_starting_then_refused_naming_it() {
    for (name, var) in [
        ("login", "JWT_SECRET_KEY"),
        ("csrf-token", "CSRF_SECRET_KEY"),
        ("payment-intent", "STRIPE_SECRET_KEY"),
        ("webhook", "STRIPE_WEBHOOK_SECRET"),
        ("chat", "AI_API_KEY"),
    ] {
        let value = "0123456789abcdef0123456789abcdef-a-real-looking-secret";
        let (ok, out) = start(name, &[("ENVIRONMENT", "production"), (var, value)]);
        assert!(!ok, "{name} started with {var} in its environment");
        assert!(
            out.contains(&format!("{var} must not be set in production")),
            "{name}: {out}"
        );
        assert!(!out.contains(value), "{name} printed the value");
    }
}

#[test]
fn given_staging_with_a_local_endpoint_override_when_starting_then_refused_naming_it() {
    for var in [
        "STRIPE_API_BASE",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
    ] {
        for name in ["payment-intent", "health"] {
            let (ok, out) = start(
                name,
                &[("ENVIRONMENT", "staging"), (var, "http://127.0.0.1:1")],
            );
            assert!(!ok, "{name} started with {var}");
            assert!(
                out.contains(&format!("{var} must not be set in staging")),
                "{name}: {out}"
            );
        }
    }
}

#[test]
fn given_production_without_a_secret_id_when_starting_then_refused_naming_the_id_variable() {
    for (name, var) in [
        ("login", "JWT_SECRET_KEY_ID"),
        ("payment-intent", "JWT_SECRET_KEY_ID"),
        ("webhook", "STRIPE_WEBHOOK_SECRET_ID"),
        ("chat", "JWT_SECRET_KEY_ID"),
    ] {
        let (ok, out) = start(name, &[("ENVIRONMENT", "production")]);
        assert!(!ok, "{name} started without {var}");
        assert!(
            out.contains(&format!("{var} is required in production")),
            "{name}: {out}"
        );
    }
}
