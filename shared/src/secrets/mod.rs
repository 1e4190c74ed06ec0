//! Secrets fetched at run time and cached with a TTL.
//!
//! A deployed function's environment names its secrets (`JWT_SECRET_KEY_ID`, ...; see
//! [`Need`]) and never holds their values. [`Secrets::load`] fetches each one once during
//! init through a [`SecretSource`] (AWS Secrets Manager in [`aws`]); the pipeline then calls
//! [`Secrets::refresh_if_due`] on each request, which fetches again only when the TTL has passed,
//! so a rotated value reaches warm instances without a redeploy. Consumers read the current
//! values from [`Secrets::snapshot`], which never waits on the network.
//!
//! Rotating secrets ([`Need::rotates`]) are read at two stages: `AWSCURRENT` signs and verifies,
//! `AWSPREVIOUS` only verifies, so nothing signed just before a rotation breaks, and a key two
//! rotations old verifies nothing. A verifier that meets a key it does not know may ask for an
//! early refresh ([`Secrets::refresh_now`], at most once per [`FORCED_REFRESH_INTERVAL`]): an
//! instance that rotated first may already sign with the new key.
//!
//! In development (and in unit tests) a value may come from the environment instead
//! ([`SecretOrigin::Value`]); staging and production refuse that at start.

#[cfg(feature = "secrets")]
pub mod aws;
pub mod memory;
#[cfg(feature = "secrets")]
pub mod rotation;

use crate::events::Event;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, Environment, Need, Secret, SecretOrigin, check_secret};

/// How soon after a failed refresh the next one is tried.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The shortest interval between two forced refreshes ([`Secrets::refresh_now`]), so forged
/// tokens naming unknown keys cannot turn into a flood of Secrets Manager calls.
pub const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// A version stage of a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `AWSCURRENT`: the value in use.
    Current,
    /// `AWSPREVIOUS`: the value before the last rotation.
    Previous,
}

impl Stage {
    /// Secrets Manager's label for the stage.
    pub fn label(self) -> &'static str {
        match self {
            Self::Current => "AWSCURRENT",
            Self::Previous => "AWSPREVIOUS",
        }
    }
}

/// Why a secret could not be read. Never carries a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret, or its current version, does not exist.
    #[error("secret {id} not found")]
    NotFound {
        /// The secret's id.
        id: String,
    },
    /// The secret holds no string value (binary secrets are not used).
    #[error("secret {id} has no string value")]
    NotAString {
        /// The secret's id.
        id: String,
    },
    /// Secrets Manager could not be reached, refused access, or failed.
    #[error("reading secret {id} failed: {reason}")]
    Unavailable {
        /// The secret's id.
        id: String,
        /// What failed (an error code, never a value).
        reason: String,
    },
}

/// Where secret values are read from.
#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The value of secret `id` at `stage`; `Ok(None)` when the secret has no version at that
    /// stage (a secret that never rotated has no `AWSPREVIOUS`).
    async fn fetch(&self, id: &str, stage: Stage) -> Result<Option<String>, SecretError>;
}

/// A secret's values: the current one, and for a rotating secret the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// The value that signs (`AWSCURRENT`).
    pub current: Secret,
    /// The value before the last rotation (`AWSPREVIOUS`), accepted for verification only.
    pub previous: Option<Secret>,
}

impl Versions {
    /// A secret with one value.
    pub fn single(value: impl Into<String>) -> Self {
        Self {
            current: Secret::new(value),
            previous: None,
        }
    }
}

/// The values in use at one moment, with a generation that changes whenever one changes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    values: BTreeMap<Need, Versions>,
    generation: u64,
}

impl Snapshot {
    /// The values of `need`, if the function has that secret.
    pub fn get(&self, need: Need) -> Option<&Versions> {
        self.values.get(&need)
    }

    /// Increases each time a refresh brings a different value.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// A function's secrets, shared by every consumer; cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Inner>,
}

struct Inner {
    environment: Environment,
    source: Option<Arc<dyn SecretSource>>,
    ids: Vec<(Need, String)>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    state: RwLock<Arc<Snapshot>>,
    refreshing: tokio::sync::Mutex<()>,
    due_ms: AtomicU64,
    last_forced_ms: AtomicU64,
    stale_since_ms: AtomicU64,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.snapshot();
        f.debug_struct("Secrets")
            .field("needs", &snapshot.values.keys().collect::<Vec<_>>())
            .field("generation", &snapshot.generation)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Fixed values that never refresh (unit tests, benchmarks).
    pub fn fixed(environment: Environment, values: BTreeMap<Need, Versions>) -> Self {
        Self::build(
            environment,
            None,
            Vec::new(),
            Duration::MAX,
            Arc::new(crate::clock::SystemClock),
            values,
        )
    }

    /// The values that `config` holds itself (development only: [`SecretOrigin::Value`]);
    /// secrets named by id are left out. Never refreshes.
    pub fn from_config(config: &Config) -> Self {
        let values = config
            .secrets
            .iter()
            .filter_map(|(need, origin)| match origin {
                SecretOrigin::Value { current, previous } => Some((
                    *need,
                    Versions {
                        current: current.clone(),
                        previous: previous.clone(),
                    },
                )),
                SecretOrigin::Id(_) => None,
            })
            .collect();
        Self::fixed(config.environment, values)
    }

    /// Reads every secret of `needs` that `config` names by id from `source`, all at once,
    /// and takes the others' values from `config`. Fails, naming the variable, when a secret a
    /// function requires is missing, unreadable or too weak for the environment
    /// ([`check_secret`]).
    pub async fn load(
        config: &Config,
        needs: &[Need],
        source: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        config.require(needs)?;
        let mut values = BTreeMap::new();
        let mut ids = Vec::new();
        for need in needs {
            match config.secrets.get(need) {
                Some(SecretOrigin::Id(id)) => ids.push((*need, id.clone())),
                Some(SecretOrigin::Value { current, previous }) => {
                    values.insert(
                        *need,
                        Versions {
                            current: current.clone(),
                            previous: previous.clone(),
                        },
                    );
                }
                None => {}
            }
        }
        let secrets = Self::build(
            config.environment,
            Some(source),
            ids,
            config.secrets_ttl,
            clock,
            values,
        );
        let mut fetched = Vec::new();
        for (need, result) in secrets.fetch_each().await {
            fetched.push((need, result?));
        }
        secrets.install(fetched, false);
        Ok(secrets)
    }

    fn build(
        environment: Environment,
        source: Option<Arc<dyn SecretSource>>,
        ids: Vec<(Need, String)>,
        ttl: Duration,
        clock: Arc<dyn Clock>,
        values: BTreeMap<Need, Versions>,
    ) -> Self {
        let due = clock.now_ms().saturating_add(ttl.as_millis() as u64);
        Self {
            inner: Arc::new(Inner {
                environment,
                source,
                ids,
                ttl,
                clock,
                state: RwLock::new(Arc::new(Snapshot {
                    values,
                    generation: 0,
                })),
                refreshing: tokio::sync::Mutex::new(()),
                due_ms: AtomicU64::new(due),
                last_forced_ms: AtomicU64::new(0),
                stale_since_ms: AtomicU64::new(0),
                fetches: AtomicU64::new(0),
            }),
        }
    }

    /// The values in use now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.inner.state.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Requests made to the source so far (one per secret and stage), for tests and benchmarks.
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// Fetches every secret again when the TTL has passed since the last fetch; otherwise
    /// returns at once. A failed refresh keeps the values in use, logs an ERROR
    /// (`secrets.refresh_failed`, naming the variable) and is tried again after
    /// [`RETRY_AFTER_FAILURE`].
    pub async fn refresh_if_due(&self) {
        let i = &self.inner;
        if i.source.is_none() || i.clock.now_ms() < i.due_ms.load(Ordering::Acquire) {
            return;
        }
        let Ok(_guard) = i.refreshing.try_lock() else {
            return;
        };
        if i.clock.now_ms() < i.due_ms.load(Ordering::Acquire) {
            return;
        }
        self.refresh().await;
    }

    /// Fetches every secret now, unless a forced refresh ran within the last
    /// [`FORCED_REFRESH_INTERVAL`]; returns whether any value changed.
    pub async fn refresh_now(&self) -> bool {
        let i = &self.inner;
        if i.source.is_none() {
            return false;
        }
        let now = i.clock.now_ms();
        let last = i.last_forced_ms.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < FORCED_REFRESH_INTERVAL.as_millis() as u64 {
            return false;
        }
        let _guard = i.refreshing.lock().await;
        if i.last_forced_ms.load(Ordering::Acquire) != last {
            return false;
        }
        i.last_forced_ms.store(now.max(1), Ordering::Release);
        self.refresh().await
    }

    async fn refresh(&self) -> bool {
        let i = &self.inner;
        let now = i.clock.now_ms();
        let mut fetched = Vec::new();
        let mut failed = false;
        for (need, result) in self.fetch_each().await {
            match result {
                Ok(v) => fetched.push((need, v)),
                Err(err) => {
                    failed = true;
                    tracing::error!(event = Event::SecretsRefreshFailed.as_str(), secret = need.id_var(), error = %err, "refreshing a secret failed; its value in use is kept");
                }
            }
        }
        let next = if failed {
            let _ = i.stale_since_ms.compare_exchange(
                0,
                now.max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            RETRY_AFTER_FAILURE
        } else {
            i.stale_since_ms.store(0, Ordering::Release);
            i.ttl
        };
        i.due_ms.store(
            now.saturating_add(next.as_millis() as u64),
            Ordering::Release,
        );
        self.install(fetched, true)
    }

    /// Whether refreshes have failed for longer than [`Secrets::max_staleness`]: the values in
    /// use may then be keys already rotated away to revoke them, and the pipeline refuses
    /// authenticated requests (503) until a refresh succeeds.
    pub fn expired(&self) -> bool {
        let i = &self.inner;
        let since = i.stale_since_ms.load(Ordering::Acquire);
        since != 0
            && i.clock.now_ms().saturating_sub(since) > self.max_staleness().as_millis() as u64
    }

    /// How long values may be used while every refresh fails: four TTLs, and at least a minute.
    pub fn max_staleness(&self) -> Duration {
        self.inner
            .ttl
            .saturating_mul(4)
            .max(Duration::from_secs(60))
    }

    /// Every secret read on its own, so one unreadable secret never holds back another's new
    /// value.
    async fn fetch_each(&self) -> Vec<(Need, Result<Versions, ConfigError>)> {
        let i = &self.inner;
        let Some(source) = &i.source else {
            return Vec::new();
        };
        let reads = i.ids.iter().map(|(need, id)| async move {
            let stages: &[Stage] = if need.rotates() {
                &[Stage::Current, Stage::Previous]
            } else {
                &[Stage::Current]
            };
            let fetched = futures_util::future::try_join_all(
                stages.iter().map(|stage| source.fetch(id, *stage)),
            )
            .await;
            i.fetches.fetch_add(stages.len() as u64, Ordering::Relaxed);
            (*need, fetched)
        });
        let mut out = Vec::with_capacity(i.ids.len());
        for (need, fetched) in futures_util::future::join_all(reads).await {
            out.push((need, self.checked(need, fetched)));
        }
        out
    }

    fn checked(
        &self,
        need: Need,
        fetched: Result<Vec<Option<String>>, SecretError>,
    ) -> Result<Versions, ConfigError> {
        let i = &self.inner;
        let unreadable = |reason: String| ConfigError::Invalid {
            var: need.id_var().into(),
            reason,
        };
        let mut values = fetched.map_err(|e| unreadable(e.to_string()))?.into_iter();
        let current = values
            .next()
            .flatten()
            .ok_or_else(|| unreadable("the secret has no current value".into()))?;
        let previous = values.next().flatten();
        let check = |value: String| {
            let strength = |v: &str| {
                check_secret(need.id_var(), v.to_string(), i.environment).map_err(|e| match e {
                    ConfigError::Invalid { reason, .. } => unreadable(reason),
                    other => other,
                })
            };
            if need.is_list() {
                // Each signing secret of a list must be strong on its own.
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    strength(part)?;
                }
            }
            strength(&value)
        };
        Ok(Versions {
            current: check(current)?,
            // A weak previous value (the one a stack was created with, say) verifies
            // nothing rather than stopping the function.
            previous: previous.and_then(|p| check(p).ok()),
        })
    }

    fn install(&self, fetched: Vec<(Need, Versions)>, announce: bool) -> bool {
        if fetched.is_empty() {
            return false;
        }
        let mut state = match self.inner.state.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let changed: Vec<Need> = fetched
            .iter()
            .filter(|(need, v)| state.values.get(need) != Some(v))
            .map(|(need, _)| *need)
            .collect();
        if changed.is_empty() {
            return false;
        }
        let mut values = state.values.clone();
        values.extend(fetched);
        *state = Arc::new(Snapshot {
            values,
            generation: state.generation + 1,
        });
        if announce {
            let names: Vec<&str> = changed.iter().map(|n| n.id_var()).collect();
            tracing::info!(event = Event::SecretsRotated.as_str(), secrets = ?names, "new secret values in use");
        }
        true
    }
}

#[cfg(test)]
mod tests;
