//! Environment-based configuration.
//!
//! [`Config::from_env`] reads every setting once at start. Defaults come from one table per
//! [`Environment`] ([`Defaults::for_environment`]); every value can be overridden by an
//! environment variable. Staging and production refuse to start when a required secret is
//! missing, shorter than 32 bytes, or one of the well-known development values.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Minimum length, in bytes, of a secret accepted outside development.
pub const MIN_SECRET_BYTES: usize = 32;

/// Prefix shared by every development secret, so that staging and production can recognise
/// and refuse them.
pub const DEV_SECRET_PREFIX: &str = "dev-only-";

/// The deployment environment, from `ENVIRONMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// A developer's machine: generated secrets and local services are accepted.
    Development,
    /// A production-like deployment used for testing; secrets are enforced.
    Staging,
    /// The live deployment; secrets are enforced.
    Production,
}

impl Environment {
    /// The lower-case name used in `ENVIRONMENT` and in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }

    /// Whether secrets and real upstream services are enforced.
    pub fn is_deployed(self) -> bool {
        !matches!(self, Self::Development)
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Environment {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "staging" => Ok(Self::Staging),
            "production" | "prod" => Ok(Self::Production),
            _ => Err(ConfigError::Invalid {
                var: "ENVIRONMENT".into(),
                reason: "expected development, staging or production".into(),
            }),
        }
    }
}

/// A secret value. `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; keep the result out of logs and errors.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A configuration error, raised at start so a misconfigured function never serves.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{var} is required in {environment}")]
    Missing {
        /// The variable's name.
        var: String,
        /// The environment that requires it.
        environment: Environment,
    },
    /// A variable that every environment requires is not set.
    #[error("{var} is required: {hint}")]
    Required {
        /// The variable's name.
        var: String,
        /// What to set it to.
        hint: String,
    },
    /// A variable is set where the environment forbids it (a secret value, or a local endpoint
    /// override, outside development).
    #[error("{var} must not be set in {environment}: {hint}")]
    Forbidden {
        /// The variable's name.
        var: String,
        /// The environment that forbids it.
        environment: Environment,
        /// What to do instead.
        hint: String,
    },
    /// A variable is set to a value that cannot be used.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: String,
        /// Why it was refused (never the value itself).
        reason: String,
    },
}

/// Limits of one rate-limit policy: a per-minute sliding window and a 10-second burst window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in any 60-second sliding window.
    pub per_minute: u32,
    /// Requests allowed in any 10-second sliding window, if the policy has a burst limit.
    pub burst: Option<u32>,
}

impl RateLimit {
    /// `per_minute` requests per sliding minute and, if given, `burst` per 10 seconds.
    pub const fn new(per_minute: u32, burst: Option<u32>) -> Self {
        Self { per_minute, burst }
    }
}

/// Limits of one endpoint: its rate-limit policy and its request body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLimits {
    /// The per-IP (and, where the endpoint says so, per-user) rate limit.
    pub rate: RateLimit,
    /// The largest request body accepted, in bytes; 0 means the endpoint takes no body.
    pub body_bytes: usize,
}

/// Password rules applied at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in characters.
    pub min_chars: usize,
    /// Maximum length in characters (never truncated).
    pub max_chars: usize,
    /// Minimum zxcvbn score (0 to 4).
    pub min_score: u8,
}

/// Per-account failed-login throttling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failed attempts allowed within the window.
    pub max_failures: u32,
    /// The window.
    pub window: Duration,
}

/// IP blocking after repeated rate-limit violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPolicy {
    /// Violations within `window` that block the IP.
    pub violations: u32,
    /// The window in which violations are counted.
    pub window: Duration,
    /// How long the block lasts.
    pub duration: Duration,
}

/// The per-environment defaults: one row of the table in the README.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Allowed CORS origins.
    pub cors_origins: Vec<String>,
    /// Access-token lifetime.
    pub jwt_ttl: Duration,
    /// CSRF-token lifetime.
    pub csrf_ttl: Duration,
    /// Password rules.
    pub password: PasswordPolicy,
    /// Failed-login throttling per account.
    pub login_throttle: LoginThrottle,
    /// IP blocking.
    pub block: BlockPolicy,
    /// Limits per endpoint name.
    pub endpoints: BTreeMap<&'static str, EndpointLimits>,
    /// Log level filter when `LOG_LEVEL` is unset.
    pub log_level: &'static str,
}

impl Defaults {
    /// The defaults of one environment. Limits are the endpoint catalogue's
    /// ([`crate::catalogue`]) in every environment, so a laptop behaves like production;
    /// lifetimes, origins and log level differ.
    pub fn for_environment(env: Environment) -> Self {
        let endpoints = crate::catalogue::ENDPOINTS
            .iter()
            .map(|e| {
                (
                    e.name,
                    EndpointLimits {
                        rate: e.rate,
                        body_bytes: e.body_bytes,
                    },
                )
            })
            .collect();
        let (cors_origins, jwt_minutes, log_level) = match env {
            Environment::Development => (
                vec![
                    "http://localhost:3000".to_string(),
                    "http://localhost:5173".to_string(),
                ],
                60,
                "debug",
            ),
            Environment::Staging => (Vec::new(), 30, "info"),
            Environment::Production => (Vec::new(), 15, "info"),
        };
        Self {
            cors_origins,
            jwt_ttl: Duration::from_secs(jwt_minutes * 60),
            csrf_ttl: Duration::from_secs(3600),
            password: PasswordPolicy {
                min_chars: 12,
                max_chars: 128,
                min_score: 3,
            },
            login_throttle: LoginThrottle {
                max_failures: 5,
                window: Duration::from_secs(15 * 60),
            },
            block: BlockPolicy {
                violations: 10,
                window: Duration::from_secs(10 * 60),
                duration: Duration::from_secs(15 * 60),
            },
            endpoints,
            log_level,
        }
    }
}

/// DynamoDB table names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// Rate-limit counters and IP blocks (`RATE_LIMIT_TABLE`).
    pub rate_limits: String,
    /// Users and everything keyed to them (`USERS_TABLE`).
    pub users: String,
    /// Processed webhook events and payment records (`PAYMENTS_TABLE`).
    pub payments: String,
}

/// The whole configuration of a function, read once at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The environment.
    pub environment: Environment,
    /// The service version reported by health.
    pub version: String,
    /// Allowed CORS origins (exact `scheme://host[:port]` strings).
    pub cors_origins: Vec<String>,
    /// Where each secret comes from: a Secrets Manager id (`<VAR>_ID`), or in development
    /// only, a value in the environment. See [`SecretOrigin`].
    pub secrets: BTreeMap<Need, SecretOrigin>,
    /// How long a fetched secret is used before it is fetched again (`SECRETS_TTL_SECONDS`,
    /// default 300), so a rotated value reaches warm instances without a redeploy.
    pub secrets_ttl: Duration,
    /// Access-token lifetime.
    pub jwt_ttl: Duration,
    /// Token issuer (`iss`).
    pub jwt_issuer: String,
    /// Token audience (`aud`).
    pub jwt_audience: String,
    /// CSRF-token lifetime.
    pub csrf_ttl: Duration,
    /// Password rules.
    pub password: PasswordPolicy,
    /// Failed-login throttling per account.
    pub login_throttle: LoginThrottle,
    /// IP blocking.
    pub block: BlockPolicy,
    /// Limits per endpoint name.
    pub endpoints: BTreeMap<&'static str, EndpointLimits>,
    /// Bound on each DynamoDB call made by the rate limiter.
    pub store_timeout: Duration,
    /// Table names.
    pub tables: Tables,
    /// Log level filter (`LOG_LEVEL`).
    pub log_level: String,
    /// The sender identity of mail (`MAIL_FROM`, verified in SES); development default
    /// `no-reply@flowbotz.test`, unset elsewhere unless given ([`Config::mail`] requires it).
    pub mail_from: Option<String>,
    /// The application's base URL, under which mailed links open (`APP_BASE_URL`, no trailing
    /// `/`; https outside development); development default `http://localhost:5173`.
    pub app_base_url: Option<String>,
}

/// What a function that sends mail needs from the configuration ([`Config::mail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// The sender identity (`MAIL_FROM`).
    pub from: String,
    /// The application's base URL (`APP_BASE_URL`), without a trailing `/`.
    pub app_base_url: String,
}

/// The development sender identity (verified in the local SES by the stack).
pub const DEV_MAIL_FROM: &str = "no-reply@flowbotz.test";
/// The development application URL.
pub const DEV_APP_BASE_URL: &str = "http://localhost:5173";

impl Config {
    /// The mail settings, for a function that sends mail to call at start: fails, naming the
    /// variable, when `MAIL_FROM` or `APP_BASE_URL` is not set (outside development, where
    /// they have no default).
    pub fn mail(&self) -> Result<MailSettings, ConfigError> {
        let missing = |var: &str| ConfigError::Missing {
            var: var.into(),
            environment: self.environment,
        };
        Ok(MailSettings {
            from: self.mail_from.clone().ok_or_else(|| missing("MAIL_FROM"))?,
            app_base_url: self
                .app_base_url
                .clone()
                .ok_or_else(|| missing("APP_BASE_URL"))?,
        })
    }

    /// Reads the configuration from the process environment.
    ///
    /// Outside development it also refuses every `AWS_ENDPOINT_URL*` variable in the process
    /// environment ([`check_overrides`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self::from_lookup(|name| std::env::var(name).ok())?;
        let vars: Vec<(String, String)> = std::env::vars().collect();
        check_overrides(
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            config.environment,
        )?;
        Ok(config)
    }

    /// Reads the configuration through `lookup`, which maps a variable name to its value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let environment: Environment = match get("ENVIRONMENT") {
            Some(v) => v.parse()?,
            None => {
                return Err(ConfigError::Required {
                    var: "ENVIRONMENT".into(),
                    hint: "set it to development, staging or production".into(),
                });
            }
        };
        let d = Defaults::for_environment(environment);
        if environment.is_deployed() {
            for var in LOCAL_OVERRIDES {
                for name in [var.to_string(), var.to_ascii_lowercase()] {
                    if get(&name).is_some() {
                        return Err(local_override(&name, environment));
                    }
                }
            }
        }
        let mut secrets = BTreeMap::new();
        for need in Need::ALL {
            if let Some(origin) = secret_origin(&get, need, environment)? {
                secrets.insert(need, origin);
            }
        }

        let cors_origins = match get("CORS_ORIGINS") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|o| check_origin(o, environment))
                .collect::<Result<_, _>>()?,
            None => d.cors_origins,
        };

        let mut endpoints = d.endpoints;
        for (name, limits) in endpoints.iter_mut() {
            let key = name.to_ascii_uppercase().replace('-', "_");
            limits.rate.per_minute = parse_or(
                &get,
                &format!("RATE_LIMIT_{key}_PER_MINUTE"),
                limits.rate.per_minute,
            )?;
            if let Some(burst) = limits.rate.burst {
                let burst = parse_or(&get, &format!("RATE_LIMIT_{key}_BURST"), burst)?;
                limits.rate.burst = (burst > 0).then_some(burst);
            }
            limits.body_bytes = parse_or(&get, &format!("BODY_LIMIT_{key}"), limits.body_bytes)?;
        }

        let password = PasswordPolicy {
            min_chars: parse_or(&get, "PASSWORD_MIN_CHARS", d.password.min_chars)?,
            max_chars: parse_or(&get, "PASSWORD_MAX_CHARS", d.password.max_chars)?,
            min_score: parse_or(&get, "PASSWORD_MIN_SCORE", d.password.min_score)?,
        };
        if password.min_chars == 0
            || password.min_chars > password.max_chars
            || password.min_score > 4
        {
            return Err(ConfigError::Invalid {
                var: "PASSWORD_MIN_CHARS".into(),
                reason: "needs 0 < PASSWORD_MIN_CHARS <= PASSWORD_MAX_CHARS and a score of 0 to 4"
                    .into(),
            });
        }

        Ok(Self {
            environment,
            version: get("SERVICE_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            cors_origins,
            secrets,
            secrets_ttl: secrets_ttl(&get)?,
            jwt_ttl: secs_or(&get, "JWT_TTL_SECONDS", d.jwt_ttl)?,
            jwt_issuer: get("JWT_ISSUER").unwrap_or_else(|| "flowbotz-api".into()),
            jwt_audience: get("JWT_AUDIENCE").unwrap_or_else(|| "flowbotz-clients".into()),
            csrf_ttl: secs_or(&get, "CSRF_TTL_SECONDS", d.csrf_ttl)?,
            password,
            login_throttle: LoginThrottle {
                max_failures: parse_or(&get, "LOGIN_MAX_FAILURES", d.login_throttle.max_failures)?,
                window: secs_or(
                    &get,
                    "LOGIN_FAILURE_WINDOW_SECONDS",
                    d.login_throttle.window,
                )?,
            },
            block: BlockPolicy {
                violations: parse_or(&get, "IP_BLOCK_VIOLATIONS", d.block.violations)?,
                window: secs_or(&get, "IP_BLOCK_WINDOW_SECONDS", d.block.window)?,
                duration: secs_or(&get, "IP_BLOCK_SECONDS", d.block.duration)?,
            },
            endpoints,
            store_timeout: Duration::from_millis(parse_or(&get, "STORE_TIMEOUT_MS", 1000u64)?),
            tables: Tables {
                rate_limits: get("RATE_LIMIT_TABLE")
                    .unwrap_or_else(|| "flowbotz-rate-limits".into()),
                users: get("USERS_TABLE").unwrap_or_else(|| "flowbotz-users".into()),
                payments: get("PAYMENTS_TABLE").unwrap_or_else(|| "flowbotz-payments".into()),
            },
            log_level: log_level(get("LOG_LEVEL"), d.log_level, environment)?,
            mail_from: match get("MAIL_FROM") {
                Some(v) => Some(check_mail_from(&v)?),
                None => (environment == Environment::Development).then(|| DEV_MAIL_FROM.into()),
            },
            app_base_url: match get("APP_BASE_URL") {
                Some(v) => Some(check_app_base_url(&v, environment)?),
                None => (environment == Environment::Development).then(|| DEV_APP_BASE_URL.into()),
            },
        })
    }

    /// Fails, naming the variable, unless every secret in `needs` has an origin: its
    /// Secrets Manager id, or in development a value. Each function declares only the secrets
    /// it uses, so none holds a key it does not need.
    pub fn require(&self, needs: &[Need]) -> Result<(), ConfigError> {
        for need in needs {
            if !self.secrets.contains_key(need) && need.required_in(self.environment) {
                return Err(ConfigError::Missing {
                    var: need.id_var().into(),
                    environment: self.environment,
                });
            }
        }
        Ok(())
    }

    /// The limits of the endpoint `name`.
    ///
    /// # Panics
    /// If `name` is not an endpoint of the defaults table: a programming error caught by the
    /// first test of the function.
    pub fn endpoint(&self, name: &str) -> EndpointLimits {
        match self.endpoints.get(name) {
            Some(l) => *l,
            None => panic!("no limits configured for endpoint {name}"),
        }
    }
}

/// Variables that point a client at a local service, a proxy or another trust store instead
/// of the real service; refused outside development, so a deployed function's keys and data
/// never go anywhere else. Proxy variables are checked in either case.
pub const LOCAL_OVERRIDES: [&str; 13] = [
    "STRIPE_API_BASE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SESV2",
    "AWS_ENDPOINT_URL_SES",
    "AWS_ENDPOINT_URL_STS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSLKEYLOGFILE",
];

fn local_override(var: &str, environment: Environment) -> ConfigError {
    ConfigError::Forbidden {
        var: var.into(),
        environment,
        hint: "local endpoints, proxies and other trust stores are for development only".into(),
    }
}

/// Refuses, naming the first one, any variable of `vars` that overrides an endpoint
/// (`AWS_ENDPOINT_URL*`, [`LOCAL_OVERRIDES`]) outside development. [`Config::from_env`] applies it
/// to the whole process environment, so service names the list does not know are caught too.
pub fn check_overrides<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    environment: Environment,
) -> Result<(), ConfigError> {
    if !environment.is_deployed() {
        return Ok(());
    }
    for (name, value) in vars {
        let upper = name.to_ascii_uppercase();
        let overrides =
            upper.starts_with("AWS_ENDPOINT_URL") || LOCAL_OVERRIDES.contains(&upper.as_str());
        if overrides && !value.trim().is_empty() {
            return Err(local_override(name, environment));
        }
    }
    Ok(())
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// A Secrets Manager secret id (name or ARN) from `<VAR>_ID`; fetched at run time.
    Id(String),
    /// Development only: the value itself from `<VAR>` (and, for the JWT key, a previous key
    /// from `JWT_SECRET_KEY_PREVIOUS`).
    Value {
        /// The value.
        current: Secret,
        /// The previous value, still accepted for verification.
        previous: Option<Secret>,
    },
}

fn secret_origin(
    get: &impl Fn(&str) -> Option<String>,
    need: Need,
    env: Environment,
) -> Result<Option<SecretOrigin>, ConfigError> {
    let previous_var = (need == Need::JwtKey).then_some("JWT_SECRET_KEY_PREVIOUS");
    if env.is_deployed() {
        for var in std::iter::once(need.var()).chain(previous_var) {
            if get(var).is_some() {
                return Err(ConfigError::Forbidden {
                    var: var.into(),
                    environment: env,
                    hint: format!(
                        "secret values come from Secrets Manager; set {} to the secret's name or ARN",
                        need.id_var()
                    ),
                });
            }
        }
    }
    if let Some(id) = get(need.id_var()) {
        let id = id.trim().to_string();
        if id.len() > 2048 || id.chars().any(char::is_control) {
            return Err(ConfigError::Invalid {
                var: need.id_var().into(),
                reason: "not a secret name or ARN".into(),
            });
        }
        return Ok(Some(SecretOrigin::Id(id)));
    }
    let Some(current) = get(need.var()) else {
        return Ok(None);
    };
    let previous = previous_var
        .and_then(&get)
        .map(|v| check_secret(previous_var.unwrap_or_default(), v, env))
        .transpose()?;
    Ok(Some(SecretOrigin::Value {
        current: check_secret(need.var(), current, env)?,
        previous,
    }))
}

/// A secret a function declares it needs at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Need {
    /// The JWT signing key (`JWT_SECRET_KEY_ID`); rotated, so its previous version verifies.
    JwtKey,
    /// The CSRF HMAC key (`CSRF_SECRET_KEY_ID`); rotated, so its previous version verifies.
    CsrfKey,
    /// Stripe's secret API key (`STRIPE_SECRET_KEY_ID`).
    StripeSecretKey,
    /// Stripe's webhook signing secret(s), comma-separated while one is rolled
    /// (`STRIPE_WEBHOOK_SECRET_ID`).
    StripeWebhookSecret,
    /// The AI provider's API key (`AI_API_KEY_ID`).
    AiApiKey,
}

impl Need {
    /// Every secret, in a fixed order.
    pub const ALL: [Need; 5] = [
        Self::JwtKey,
        Self::CsrfKey,
        Self::StripeSecretKey,
        Self::StripeWebhookSecret,
        Self::AiApiKey,
    ];

    /// The variable that holds the value in development (and names the secret in messages).
    pub fn var(self) -> &'static str {
        match self {
            Self::JwtKey => "JWT_SECRET_KEY",
            Self::CsrfKey => "CSRF_SECRET_KEY",
            Self::StripeSecretKey => "STRIPE_SECRET_KEY",
            Self::StripeWebhookSecret => "STRIPE_WEBHOOK_SECRET",
            Self::AiApiKey => "AI_API_KEY",
        }
    }

    /// The variable that holds the secret's Secrets Manager id (name or ARN).
    pub fn id_var(self) -> &'static str {
        match self {
            Self::JwtKey => "JWT_SECRET_KEY_ID",
            Self::CsrfKey => "CSRF_SECRET_KEY_ID",
            Self::StripeSecretKey => "STRIPE_SECRET_KEY_ID",
            Self::StripeWebhookSecret => "STRIPE_WEBHOOK_SECRET_ID",
            Self::AiApiKey => "AI_API_KEY_ID",
        }
    }

    /// Whether the secret rotates through Secrets Manager's stages, so its `AWSPREVIOUS`
    /// version still verifies what the last key signed.
    pub fn rotates(self) -> bool {
        matches!(self, Self::JwtKey | Self::CsrfKey)
    }

    /// Whether the value is a comma-separated list of secrets, each checked on its own (Stripe's
    /// webhook signing secrets while one is rolled).
    pub fn is_list(self) -> bool {
        matches!(self, Self::StripeWebhookSecret)
    }

    /// Whether a function that declares the secret refuses to start without it in `env`.
    /// Stripe's and the AI provider's keys may be absent in development (the endpoints then
    /// answer 503, or chat uses its offline provider).
    pub fn required_in(self, env: Environment) -> bool {
        env.is_deployed() || !matches!(self, Self::StripeSecretKey | Self::AiApiKey)
    }
}

/// Checks a secret's strength for `env`; returns it wrapped.
pub fn check_secret(var: &str, value: String, env: Environment) -> Result<Secret, ConfigError> {
    if env.is_deployed() {
        if value.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                var: var.into(),
                reason: format!("must be at least {MIN_SECRET_BYTES} bytes in {env}"),
            });
        }
        if value.starts_with(DEV_SECRET_PREFIX) {
            return Err(ConfigError::Invalid {
                var: var.into(),
                reason: format!("a development secret is not accepted in {env}"),
            });
        }
    }
    Ok(Secret(value))
}

fn check_mail_from(value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    let ok = v.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.contains('@')
    }) && !v
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>');
    if ok {
        Ok(v.to_string())
    } else {
        Err(ConfigError::Invalid {
            var: "MAIL_FROM".into(),
            reason: "a bare sender address such as no-reply@example.com".into(),
        })
    }
}

fn check_app_base_url(value: &str, env: Environment) -> Result<String, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        var: "APP_BASE_URL".into(),
        reason: reason.into(),
    };
    let v = value.trim().trim_end_matches('/');
    let rest = if let Some(r) = v.strip_prefix("https://") {
        r
    } else if let Some(r) = v.strip_prefix("http://") {
        if env.is_deployed() {
            return Err(invalid("must use https outside development"));
        }
        r
    } else {
        return Err(invalid("must start with https:// (http:// in development)"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || rest.contains(['?', '#', '@', ' ', '\\'])
        || rest.chars().any(char::is_control)
    {
        return Err(invalid(
            "scheme://host[:port][/path] with no query, fragment or user",
        ));
    }
    Ok(v.to_string())
}

fn check_origin(origin: &str, env: Environment) -> Result<String, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        var: "CORS_ORIGINS".into(),
        reason: reason.into(),
    };
    if origin == "*" || origin.contains('*') {
        return Err(invalid("wildcards are not allowed; list each origin"));
    }
    let rest = if let Some(r) = origin.strip_prefix("https://") {
        r
    } else if let Some(r) = origin.strip_prefix("http://") {
        if env == Environment::Production {
            return Err(invalid("production origins must use https"));
        }
        r
    } else {
        return Err(invalid("each origin must start with https:// or http://"));
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return Err(invalid("each origin is scheme://host[:port] with no path"));
    }
    Ok(origin.to_ascii_lowercase())
}

/// The levels `LOG_LEVEL` may name outside development, where it is one level for the
/// project's own code (dependencies never log below `info`: see [`crate::log::filter`]).
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

fn log_level(
    value: Option<String>,
    default: &str,
    env: Environment,
) -> Result<String, ConfigError> {
    let Some(value) = value else {
        return Ok(default.into());
    };
    let level = value.trim().to_ascii_lowercase();
    if env.is_deployed() && !LOG_LEVELS.contains(&level.as_str()) {
        return Err(ConfigError::Invalid {
            var: "LOG_LEVEL".into(),
            reason: format!("one of {} in {env}", LOG_LEVELS.join(", ")),
        });
    }
    Ok(level)
}

/// The longest `SECRETS_TTL_SECONDS`: a rotated value reaches every warm instance within it.
pub const MAX_SECRETS_TTL_SECS: u64 = 3600;

fn secrets_ttl(get: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    let ttl = secs_or(get, "SECRETS_TTL_SECONDS", Duration::from_secs(300))?;
    if ttl.as_secs() > MAX_SECRETS_TTL_SECS {
        return Err(ConfigError::Invalid {
            var: "SECRETS_TTL_SECONDS".into(),
            reason: format!("must be 1 to {MAX_SECRETS_TTL_SECS}"),
        });
    }
    Ok(ttl)
}

fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: T,
) -> Result<T, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError::Invalid {
            var: var.into(),
            reason: "not a valid non-negative number".into(),
        }),
    }
}

fn secs_or(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let secs: u64 = parse_or(get, var, default.as_secs())?;
    if secs == 0 {
        return Err(ConfigError::Invalid {
            var: var.into(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |k| match k {
            "ENVIRONMENT" => Some(map.get(k).cloned().unwrap_or_else(|| "development".into())),
            _ => map.get(k).cloned(),
        })
    }

    const STRONG: &str = "0123456789abcdef0123456789abcdef-strong";

    #[test]
    fn given_development_when_loading_then_development_defaults_apply() {
        let c = cfg(&[
            ("JWT_SECRET_KEY", "dev-only-x"),
            ("CSRF_SECRET_KEY", "dev-only-y"),
        ])
        .expect("config");
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(
            c.cors_origins,
            ["http://localhost:3000", "http://localhost:5173"]
        );
        assert_eq!(
            c.endpoint("login").rate,
            RateLimit {
                per_minute: 5,
                burst: Some(3)
            }
        );
        let table: Vec<(&str, u32, Option<u32>, usize)> = c
            .endpoints
            .iter()
            .map(|(name, l)| (*name, l.rate.per_minute, l.rate.burst, l.body_bytes))
            .collect();
        assert_eq!(
            table,
            [
                ("account", 3, None, 0),
                ("change-password", 5, None, 4096),
                ("chat", 20, Some(5), 65536),
                ("csrf-token", 100, None, 0),
                ("health", 100, None, 0),
                ("login", 5, Some(3), 4096),
                ("logout", 20, None, 0),
                ("logout-all", 20, None, 0),
                ("password-reset", 3, None, 4096),
                ("password-reset-confirm", 5, None, 4096),
                ("payment-intent", 10, Some(5), 8192),
                ("register", 3, Some(2), 4096),
                ("verify-email", 10, None, 4096),
                ("webhook", 300, None, 262144),
            ],
            "the API contract's limits"
        );
    }

    #[test]
    fn given_production_without_jwt_secret_when_required_then_error_names_the_variable() {
        let c = cfg(&[
            ("ENVIRONMENT", "production"),
            ("CSRF_SECRET_KEY_ID", "csrf"),
        ])
        .expect("config");
        assert!(c.require(&[Need::CsrfKey]).is_ok());
        let err = c.require(&[Need::CsrfKey, Need::JwtKey]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JWT_SECRET_KEY_ID is required in production"
        );
    }

    #[test]
    fn given_production_with_short_or_dev_secret_when_checked_then_refused() {
        let err = check_secret(
            "JWT_SECRET_KEY_ID",
            "0123456789".into(),
            Environment::Production,
        )
        .unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET_KEY_ID"));
        assert!(
            !err.to_string().contains("0123456789"),
            "the value must not be echoed"
        );
        let dev = format!("{DEV_SECRET_PREFIX}{STRONG}");
        let err = check_secret("CSRF_SECRET_KEY_ID", dev, Environment::Staging).unwrap_err();
        assert!(err.to_string().contains("CSRF_SECRET_KEY_ID"));
    }

    #[test]
    fn given_production_with_strong_secrets_when_loading_then_ok_and_debug_is_redacted() {
        let c = cfg(&[
            ("ENVIRONMENT", "production"),
            (
                "JWT_SECRET_KEY_ID",
                "arn:aws:secretsmanager:eu-west-1:1:secret:jwt",
            ),
            ("CSRF_SECRET_KEY_ID", "csrf"),
        ])
        .expect("config");
        assert!(c.cors_origins.is_empty());
        assert_eq!(
            c.secrets.get(&Need::JwtKey),
            Some(&SecretOrigin::Id(
                "arn:aws:secretsmanager:eu-west-1:1:secret:jwt".into()
            ))
        );
        let c = cfg(&[("JWT_SECRET_KEY", STRONG), ("CSRF_SECRET_KEY", STRONG)]).expect("config");
        let debug = format!("{c:?}");
        assert!(!debug.contains(STRONG));
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn given_overrides_when_loading_then_they_win() {
        let c = cfg(&[
            ("JWT_SECRET_KEY", "k"),
            ("CSRF_SECRET_KEY", "k"),
            ("RATE_LIMIT_LOGIN_PER_MINUTE", "1000"),
            ("RATE_LIMIT_LOGIN_BURST", "0"),
            ("BODY_LIMIT_PAYMENT_INTENT", "100"),
            (
                "CORS_ORIGINS",
                "https://app.example.test, http://localhost:8080",
            ),
        ])
        .expect("config");
        assert_eq!(
            c.endpoint("login").rate,
            RateLimit {
                per_minute: 1000,
                burst: None
            }
        );
        assert_eq!(c.endpoint("payment-intent").body_bytes, 100);
        assert_eq!(c.cors_origins.len(), 2);
    }

    #[test]
    fn given_wildcard_or_http_origin_in_production_when_loading_then_refused() {
        assert!(
            cfg(&[
                ("JWT_SECRET_KEY", "k"),
                ("CSRF_SECRET_KEY", "k"),
                ("CORS_ORIGINS", "*")
            ])
            .is_err()
        );
        let err = cfg(&[
            ("ENVIRONMENT", "production"),
            ("CORS_ORIGINS", "http://app.example.test"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("https"));
        for bad in [
            "https://*.example.test",
            "https://",
            "https://app.example.test/",
            "https://app.example.test/app",
            "https://app.example.test?x=1",
            "https://user@app.example.test",
            "app.example.test",
        ] {
            assert!(
                cfg(&[
                    ("JWT_SECRET_KEY", "k"),
                    ("CSRF_SECRET_KEY", "k"),
                    ("CORS_ORIGINS", bad)
                ])
                .is_err(),
                "{bad} is not an origin"
            );
        }
    }

    #[test]
    fn given_secret_of_exactly_the_minimum_length_when_deployed_then_accepted() {
        let exact = "k".repeat(MIN_SECRET_BYTES);
        let short = "k".repeat(MIN_SECRET_BYTES - 1);
        for env in [Environment::Staging, Environment::Production] {
            assert!(check_secret("JWT_SECRET_KEY", exact.clone(), env).is_ok());
            assert!(check_secret("JWT_SECRET_KEY", short.clone(), env).is_err());
        }
        assert!(check_secret("JWT_SECRET_KEY", short, Environment::Development).is_ok());
    }

    #[test]
    fn given_each_environment_when_loading_defaults_then_windows_and_lifetimes_are_the_documented_ones()
     {
        let minutes = |d: Duration| d.as_secs() / 60;
        for (env, jwt) in [("dev", 60), ("staging", 30), ("production", 15)] {
            let c = cfg(&[
                ("ENVIRONMENT", env),
                ("JWT_SECRET_KEY_ID", "jwt"),
                ("CSRF_SECRET_KEY_ID", "csrf"),
            ])
            .expect("config");
            assert_eq!(minutes(c.jwt_ttl), jwt, "{env}");
            assert_eq!(c.csrf_ttl.as_secs(), 3600);
            assert_eq!(
                (
                    c.login_throttle.max_failures,
                    minutes(c.login_throttle.window)
                ),
                (5, 15)
            );
            assert_eq!(
                (
                    c.block.violations,
                    minutes(c.block.window),
                    minutes(c.block.duration)
                ),
                (10, 10, 15)
            );
        }
        assert_eq!(format!("{}", Secret::new("s3cret")), "[redacted]");
        for bad in [
            ("PASSWORD_MIN_CHARS", "0"),
            ("PASSWORD_MIN_CHARS", "200"),
            ("PASSWORD_MIN_SCORE", "5"),
        ] {
            assert!(
                cfg(&[("JWT_SECRET_KEY", "k"), ("CSRF_SECRET_KEY", "k"), bad]).is_err(),
                "{bad:?}"
            );
        }
        // The bounds themselves are allowed: one exact length, and the strongest score.
        let edge = cfg(&[
            ("JWT_SECRET_KEY", "k"),
            ("CSRF_SECRET_KEY", "k"),
            ("PASSWORD_MIN_CHARS", "20"),
            ("PASSWORD_MAX_CHARS", "20"),
            ("PASSWORD_MIN_SCORE", "4"),
        ])
        .expect("min = max and score 4 are valid");
        assert_eq!(
            (
                edge.password.min_chars,
                edge.password.max_chars,
                edge.password.min_score
            ),
            (20, 20, 4)
        );
    }

    #[test]
    fn given_secrets_ttl_when_loading_then_default_300_and_bounded_to_an_hour() {
        assert_eq!(cfg(&[]).expect("config").secrets_ttl.as_secs(), 300);
        let c = cfg(&[("SECRETS_TTL_SECONDS", "3600")]).expect("config");
        assert_eq!(c.secrets_ttl.as_secs(), 3600);
        for bad in ["0", "3601", "x"] {
            let err = cfg(&[("SECRETS_TTL_SECONDS", bad)]).unwrap_err();
            assert!(err.to_string().contains("SECRETS_TTL_SECONDS"), "{bad}");
        }
    }

    #[test]
    fn given_bad_number_when_loading_then_error_names_variable() {
        let err = cfg(&[
            ("JWT_SECRET_KEY", "k"),
            ("CSRF_SECRET_KEY", "k"),
            ("JWT_TTL_SECONDS", "x"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("JWT_TTL_SECONDS"));
    }

    #[test]
    fn given_development_when_loading_then_mail_defaults_to_the_local_sender_and_app() {
        let mail = cfg(&[]).expect("config").mail().expect("mail");
        assert_eq!(mail.from, DEV_MAIL_FROM);
        assert_eq!(mail.app_base_url, DEV_APP_BASE_URL);
        let c = cfg(&[
            ("MAIL_FROM", " hello@mail.example.com "),
            ("APP_BASE_URL", "http://127.0.0.1:5173/app/"),
        ])
        .expect("config");
        assert_eq!(c.mail_from.as_deref(), Some("hello@mail.example.com"));
        assert_eq!(c.app_base_url.as_deref(), Some("http://127.0.0.1:5173/app"));
    }

    #[test]
    fn given_staging_or_production_when_mail_is_unset_then_the_mailer_is_refused_naming_it() {
        for env in ["staging", "production"] {
            let c = cfg(&[("ENVIRONMENT", env)]).expect("config loads for functions without mail");
            assert!(
                c.mail().unwrap_err().to_string().contains("MAIL_FROM"),
                "{env}"
            );
            let c = cfg(&[("ENVIRONMENT", env), ("MAIL_FROM", "no-reply@example.com")])
                .expect("config");
            assert!(
                c.mail().unwrap_err().to_string().contains("APP_BASE_URL"),
                "{env}"
            );
            let c = cfg(&[
                ("ENVIRONMENT", env),
                ("MAIL_FROM", "no-reply@example.com"),
                ("APP_BASE_URL", "https://app.example.com"),
            ])
            .expect("config");
            assert_eq!(
                c.mail().expect("mail").app_base_url,
                "https://app.example.com"
            );
        }
    }

    #[test]
    fn given_bad_mail_settings_when_loading_then_refused_naming_the_variable() {
        for bad in [
            "nobody",
            "@example.com",
            "a@localhost",
            "Name <a@example.com>",
            "a@example.com\r\nBcc: x@example.com",
            "a@b@example.com",
        ] {
            let err = cfg(&[("MAIL_FROM", bad)]).unwrap_err();
            assert!(err.to_string().contains("MAIL_FROM"), "{bad}");
        }
        let err = cfg(&[
            ("ENVIRONMENT", "production"),
            ("APP_BASE_URL", "http://app.example.com"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");
        for bad in [
            "app.example.com",
            "https://",
            "https://app.example.com/?x=1",
            "https://app.example.com/#x",
            "https://user@app.example.com",
            "javascript:alert(1)",
        ] {
            let err = cfg(&[("APP_BASE_URL", bad)]).unwrap_err();
            assert!(err.to_string().contains("APP_BASE_URL"), "{bad}");
        }
    }
}
