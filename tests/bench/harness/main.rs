//! `bench-harness`: measures every function binary beside the bare `lambda_http` baseline and
//! writes `BENCHMARKS.md`. `make bench` (`scripts/bench.sh`) builds the release binaries, runs
//! the criterion pipeline benchmark, starts moto and the Stripe stand-in, then runs this.
//!
//! The harness plays the Lambda Runtime API on 127.0.0.1 for each process it starts, and a
//! local OpenAI-compatible provider for chat. It measures, per binary: init (process start to
//! the first `/next`, and to the first response), per-invocation latency and CPU time over
//! `BENCH_EVENTS` events, peak RSS, the stripped size, and — through a counting proxy in front
//! of moto, with the default limits — the DynamoDB requests of each path.
//!
//! Settings, from the environment: `BENCH_BIN_DIR` (the release binaries), `BENCH_ENV_FILE`
//! (the functions' environment, `KEY=VALUE` lines), `BENCH_EVENTS` (1000),
//! `BENCH_COLD_STARTS` (20), `BENCH_TIMING_PAIRS` (300 login pairs, wrong password and unknown
//! email), `BENCH_CRITERION_DIR`, `BENCH_OUTPUT` (`BENCHMARKS.md`), `BENCH_RESULTS` (raw
//! results as JSON), `BENCH_LOG_DIR` (the functions' logs), `BENCH_DATE`, `BENCH_RUSTC`,
//! `BENCH_STARTED` (epoch seconds) for the report, and `BENCH_ONLY` (comma-separated binaries, to
//! investigate a few; the report then covers only those).

mod http;
mod process;
mod provider;
mod proxy;
mod report;
mod runtime_api;
mod scenarios;
mod stats;

use std::collections::HashMap;
use std::fs::File;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use flowbotz_security::accounts::dynamodb::DynamoUserStore;
use flowbotz_security::accounts::{UserRecord, UserStore, password};
use flowbotz_security::clock::SystemClock;
use flowbotz_security::config::{Config, Defaults, Environment};
use flowbotz_security::session::Sessions;
use serde_json::Value;

use proxy::{CountingProxy, Record};
use runtime_api::{Invocation, Outcome, RuntimeApi};
use scenarios::{Case, Context, Function, PASSWORD};
use stats::Summary;

/// Longest wait for one answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The harness's settings.
pub struct Settings {
    bin_dir: PathBuf,
    env_file: PathBuf,
    events: usize,
    cold_starts: usize,
    timing_pairs: usize,
    criterion_dir: PathBuf,
    output: PathBuf,
    results: PathBuf,
    log_dir: PathBuf,
    date: String,
    rustc: String,
    started: Option<u64>,
    only: Vec<String>,
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn count(name: &str, default: usize) -> Result<usize, String> {
    setting(name, &default.to_string())
        .parse()
        .map_err(|_| format!("{name} is not a number"))
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        Ok(Self {
            bin_dir: setting("BENCH_BIN_DIR", "target/release").into(),
            env_file: setting("BENCH_ENV_FILE", ".run/bench/lambda.env").into(),
            events: count("BENCH_EVENTS", 1000)?,
            cold_starts: count("BENCH_COLD_STARTS", 20)?.max(1),
            timing_pairs: count("BENCH_TIMING_PAIRS", 300)?,
            criterion_dir: setting("BENCH_CRITERION_DIR", ".run/bench/criterion").into(),
            output: setting("BENCH_OUTPUT", "BENCHMARKS.md").into(),
            results: setting("BENCH_RESULTS", ".run/bench/results.json").into(),
            log_dir: setting("BENCH_LOG_DIR", ".run/bench/logs").into(),
            date: setting("BENCH_DATE", "unknown date"),
            rustc: setting("BENCH_RUSTC", "unknown rustc"),
            started: std::env::var("BENCH_STARTED")
                .ok()
                .and_then(|s| s.parse().ok()),
            only: setting("BENCH_ONLY", "")
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The binaries to measure, with their index in [`Function::ALL`].
    fn functions(&self) -> Vec<(usize, Function)> {
        Function::ALL
            .into_iter()
            .enumerate()
            .filter(|(_, f)| self.only.is_empty() || self.only.iter().any(|b| b == f.binary()))
            .collect()
    }
}

type Env = Vec<(String, String)>;

fn read_env_file(path: &Path) -> Result<Env, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// `env` with `extra` set, replacing earlier values.
fn with(env: &Env, extra: &[(String, String)]) -> Env {
    let mut out: Env = env
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(x, _)| x == k))
        .cloned()
        .collect();
    out.extend(extra.iter().cloned());
    out
}

fn get<'a>(env: &'a Env, key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Settings of the timing runs: limits raised so that one client sending thousands of
/// requests is never refused (every per-minute and burst limit, and the failed-login
/// throttle), and a store bound of 10 s instead of 1 s, so that a stall of moto on a shared
/// machine shows as a slow request in the percentiles rather than as a failed one.
fn timing_settings() -> Env {
    let mut env = Env::new();
    for name in Defaults::for_environment(Environment::Development)
        .endpoints
        .keys()
    {
        let key = name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("RATE_LIMIT_{key}_PER_MINUTE"), "100000000".into()));
        env.push((format!("RATE_LIMIT_{key}_BURST"), "100000000".into()));
    }
    env.push(("LOGIN_MAX_FAILURES".into(), "100000000".into()));
    env.push(("STORE_TIMEOUT_MS".into(), "10000".into()));
    env
}

/// One function process and its Runtime API.
struct Instance {
    function: Function,
    child: Option<Child>,
    api: RuntimeApi,
    spawned: Instant,
    sent: usize,
    log: PathBuf,
}

impl Instance {
    /// Starts `f` with `env`; `first` is queued before the process starts, so the first
    /// `/next` gets it at once.
    fn launch(s: &Settings, f: Function, env: &Env, first: Option<&Case>) -> Result<Self, String> {
        let api = RuntimeApi::start(f.binary()).map_err(|e| format!("runtime API: {e}"))?;
        if let Some(case) = first {
            api.push(Invocation {
                id: format!("{}-0", f.binary()),
                body: case.event.to_string().into_bytes(),
            });
        }
        let log = s.log_dir.join(format!("{}.log", f.binary()));
        let file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let binary = s.bin_dir.join(f.binary());
        let spawned = Instant::now();
        let child = process::spawn(&binary, f.binary(), env, &api.address(), &file)
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Self {
            function: f,
            child: Some(child),
            api,
            spawned,
            sent: usize::from(first.is_some()),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(format!(
            "{} exited ({status}) before answering; see {}",
            self.function.binary(),
            self.log.display()
        ))
    }

    /// Waits for the answer to the event in flight and checks its status.
    fn wait(&mut self, case: &Case) -> Result<Outcome, String> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let outcome = loop {
            if let Some(o) = self.api.next_outcome(Duration::from_millis(100)) {
                break o;
            }
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer within {ANSWER_TIMEOUT:?}",
                    self.function.binary()
                ));
            }
        };
        let body = String::from_utf8_lossy(&outcome.body);
        let expected = format!("{}-{}", self.function.binary(), self.sent.saturating_sub(1));
        if outcome.id != expected {
            return Err(format!(
                "{} answered {} while {expected} was in flight",
                self.function.binary(),
                outcome.id
            ));
        }
        if outcome.error {
            return Err(format!(
                "{} reported an error for {}: {body}",
                self.function.binary(),
                case.label
            ));
        }
        let status = serde_json::from_slice::<Value>(&outcome.body)
            .ok()
            .and_then(|v| v["statusCode"].as_u64());
        if status != Some(u64::from(case.status)) {
            return Err(format!(
                "{} answered {status:?} instead of {} for {}: {}",
                self.function.binary(),
                case.status,
                case.label,
                body.chars().take(600).collect::<String>()
            ));
        }
        Ok(outcome)
    }

    /// Sends `case` and waits for its answer.
    fn send(&mut self, case: &Case) -> Result<Outcome, String> {
        self.api.push(Invocation {
            id: format!("{}-{}", self.function.binary(), self.sent),
            body: case.event.to_string().into_bytes(),
        });
        self.sent += 1;
        self.wait(case)
    }

    /// Waits until the process first asks for an event.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while self.api.first_next().is_none() {
            if let Some(e) = self.exited() {
                return Err(e);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} never asked for an event",
                    self.function.binary()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            process::stop(child);
        }
    }
}

/// One cold start: process start to the first `/next`, and to the first answer.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    to_next: Duration,
    to_response: Duration,
}

fn cold_start(
    s: &Settings,
    ctx: &Context,
    accounts: &Accounts,
    f: Function,
    env: &Env,
    i: usize,
    ip: &str,
) -> Result<ColdStart, String> {
    let case = ctx.timed(f, i, ip);
    accounts.before(ctx, f, i)?;
    let mut inst = Instance::launch(s, f, env, Some(&case))?;
    let outcome = inst.wait(&case)?;
    accounts.after(ctx, f, i)?;
    let next = inst
        .api
        .first_next()
        .ok_or("the first answer came before any /next")?;
    Ok(ColdStart {
        to_next: next.saturating_duration_since(inst.spawned),
        to_response: outcome.received.saturating_duration_since(inst.spawned),
    })
}

/// What one function's latency run measured.
pub struct LatencyRun {
    function: Function,
    latency: Summary,
    cpu_per_invocation_us: f64,
    peak_rss_kib: Option<u64>,
    /// Login: wrong password, then unknown email; register: new email, then a taken one.
    pair_timing: Option<(Summary, Summary)>,
}

fn latency_run(
    s: &Settings,
    ctx: &Context,
    accounts: &Accounts,
    f: Function,
    env: &Env,
    ip: &str,
) -> Result<LatencyRun, String> {
    let first = ctx.timed(f, s.cold_starts, ip);
    accounts.before(ctx, f, s.cold_starts)?;
    let mut inst = Instance::launch(s, f, env, Some(&first))?;
    inst.wait(&first)?;
    accounts.after(ctx, f, s.cold_starts)?;
    let pid = inst.pid();
    let mut cpu = 0;
    let mut sample = Vec::with_capacity(s.events);
    for i in s.cold_starts + 1..s.cold_starts + 1 + s.events {
        let case = ctx.timed(f, i, ip);
        accounts.before(ctx, f, i)?;
        let cpu_before = process::cpu_ns(pid);
        let outcome = inst.send(&case)?;
        cpu += process::cpu_ns(pid).saturating_sub(cpu_before);
        accounts.after(ctx, f, i)?;
        sample.push(outcome.latency().ok_or("an answer without its event")?);
    }
    // The no-enumeration evidence: the two answers that must not tell accounts apart, sent
    // alternately to the same warm process.
    let pair_timing = if s.timing_pairs == 0 {
        None
    } else if f == Function::Login {
        let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
        let (w, u) = (ctx.login_wrong_password(ip), ctx.login_unknown_email(ip));
        for _ in 0..s.timing_pairs {
            wrong.extend(inst.send(&w)?.latency());
            unknown.extend(inst.send(&u)?.latency());
        }
        Some((Summary::of(&wrong), Summary::of(&unknown)))
    } else if f == Function::Register {
        let (mut new, mut taken) = (Vec::new(), Vec::new());
        let t = ctx.register_taken_email(ip);
        let base = 10 * (s.cold_starts + s.events + 1);
        for i in base..base + s.timing_pairs {
            new.extend(inst.send(&ctx.timed(f, i, ip))?.latency());
            accounts.after(ctx, f, i)?;
            taken.extend(inst.send(&t)?.latency());
        }
        Some((Summary::of(&new), Summary::of(&taken)))
    } else {
        None
    };
    Ok(LatencyRun {
        function: f,
        latency: Summary::of(&sample),
        cpu_per_invocation_us: cpu as f64 / 1e3 / s.events.max(1) as f64,
        peak_rss_kib: process::peak_rss_kib(pid),
        pair_timing,
    })
}

/// The DynamoDB requests of one counted request.
pub struct Counted {
    function: Function,
    label: &'static str,
    checks: u32,
    records: Vec<Record>,
}

fn count_requests(
    s: &Settings,
    ctx: &Context,
    env: &Env,
    moto: SocketAddr,
) -> Result<Vec<Counted>, String> {
    let tables = ["RATE_LIMIT_TABLE", "USERS_TABLE", "PAYMENTS_TABLE"]
        .iter()
        .filter_map(|k| get(env, k).map(str::to_string))
        .collect();
    let proxy = CountingProxy::start(moto, tables).map_err(|e| format!("proxy: {e}"))?;
    let env = with(env, &[("AWS_ENDPOINT_URL_DYNAMODB".into(), proxy.url())]);
    let mut out = Vec::new();
    for (k, f) in s.functions() {
        for cases in ctx.counted(f, k as u8 + 1) {
            let before_start = proxy.mark();
            let mut inst = Instance::launch(s, f, &env, None)?;
            inst.wait_ready()?;
            out.push(Counted {
                function: f,
                label: "start-up (before the first event)",
                checks: 0,
                records: proxy.since(before_start),
            });
            for case in &cases {
                let mark = proxy.mark();
                inst.send(case)?;
                out.push(Counted {
                    function: f,
                    label: case.label,
                    checks: case.checks,
                    records: proxy.since(mark),
                });
            }
        }
    }
    Ok(out)
}

/// In-process Argon2 cost with the production parameters: the mean CPU time of one operation.
#[derive(Debug, Clone, Copy)]
pub struct Argon2Cost {
    hash_ms: f64,
    verify_ms: f64,
}

/// Runs `op` `n` times on a worker thread and returns the CPU time per run in milliseconds.
/// The process's CPU is read while the worker is blocked: a running thread's own `schedstat`
/// is only brought up to date at scheduler ticks.
fn cpu_per_run(n: u32, op: fn()) -> f64 {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        while wait.recv().is_ok() {
            for _ in 0..n {
                op();
            }
            let _ = done.send(());
        }
    });
    let pid = std::process::id();
    // A first round warms the allocator as a long-lived function process is warm.
    let _ = go.send(());
    let _ = finished.recv();
    let before = process::cpu_ns(pid);
    let _ = go.send(());
    let _ = finished.recv();
    let cpu = process::cpu_ns(pid).saturating_sub(before);
    drop(go);
    let _ = worker.join();
    cpu as f64 / 1e6 / f64::from(n)
}

fn argon2_cost() -> Argon2Cost {
    static STORED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STORED.get_or_init(|| password::hash(PASSWORD).expect("hash"));
    Argon2Cost {
        hash_ms: cpu_per_run(20, || {
            let _ = password::hash(PASSWORD);
        }),
        verify_ms: cpu_per_run(20, || {
            let _ = password::verify(PASSWORD, STORED.get().map(String::as_str));
        }),
    }
}

fn dynamodb_client(env: &Env) -> Result<aws_sdk_dynamodb::Client, String> {
    let need = |k: &str| get(env, k).ok_or(format!("{k} is not set in the environment file"));
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(need("AWS_REGION")?.to_string()))
        .endpoint_url(need("AWS_ENDPOINT_URL_DYNAMODB")?)
        .credentials_provider(Credentials::new(
            need("AWS_ACCESS_KEY_ID")?,
            need("AWS_SECRET_ACCESS_KEY")?,
            None,
            None,
            "bench",
        ))
        .build();
    Ok(aws_sdk_dynamodb::Client::from_conf(conf))
}

/// The accounts the runs need, kept in moto through the shared crate's user store (the
/// functions' own item mapping).
///
/// moto copies every table a `TransactWriteItems` touches, so its transactions slow down as the
/// users table grows, which DynamoDB's do not. The register and account runs therefore leave
/// the table as they found it: each account is created just before the event that erases it,
/// and each registration is removed after its answer, both outside the timed part.
pub struct Accounts {
    rt: tokio::runtime::Runtime,
    store: DynamoUserStore,
    hash: String,
}

impl Accounts {
    fn new(env: &Env) -> Result<Self, String> {
        let table = get(env, "USERS_TABLE")
            .unwrap_or("flowbotz-users")
            .to_string();
        Ok(Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?,
            store: DynamoUserStore::new(dynamodb_client(env)?, table),
            hash: password::hash(PASSWORD).map_err(|e| e.to_string())?,
        })
    }

    /// Creates an account with the benchmark password.
    fn create(&self, user_id: String, email: String) -> Result<(), String> {
        let record = UserRecord {
            user_id,
            email,
            password_hash: self.hash.clone(),
            name: None,
            created_at: 1,
            // A verified account, as one created through its mailed link: the store reports an
            // account without `email_verified_at` as absent, so logins would fail like an
            // unknown email.
            email_verified_at: 1,
            session_gen: 0,
        };
        let created = self
            .rt
            .block_on(self.store.create(&record))
            .map_err(|e| e.to_string())?;
        if created {
            Ok(())
        } else {
            Err(format!("account {} already exists", record.email))
        }
    }

    /// Removes the account of `email`, if any.
    fn remove(&self, email: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let (user, _) = self.store.lookup(email).await.map_err(|e| e.to_string())?;
            if let Some(user) = user {
                self.store
                    .erase(&user.user_id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }

    /// The accounts every run needs: the login runs' and the counted paths'.
    fn seed(&self, ctx: &Context) -> Result<(), String> {
        self.create(format!("login-{}", ctx.run), ctx.login_email.clone())?;
        self.create(
            format!("count-login-{}", ctx.run),
            ctx.count_login_email.clone(),
        )?;
        self.create(
            ctx.count_account_user(),
            format!("{}-account@example.com", ctx.count_account_user()),
        )?;
        // The users the timed and counted requests authenticate as: a token's session stands
        // only while its account exists.
        self.create(
            "bench-user".into(),
            format!("bench-user-{}@example.com", ctx.run),
        )?;
        self.create(
            format!("count-user-{}", ctx.run),
            format!("count-user-{}@example.com", ctx.run),
        )
    }

    /// State the `i`-th timed event of `f` needs, made before it is sent.
    fn before(&self, ctx: &Context, f: Function, i: usize) -> Result<(), String> {
        match f {
            Function::Account => self.create(ctx.account_user(i), ctx.account_email(i)),
            _ => Ok(()),
        }
    }

    /// Undoes what the `i`-th timed event of `f` stored, after its answer.
    fn after(&self, ctx: &Context, f: Function, i: usize) -> Result<(), String> {
        match f {
            Function::Register => self.remove(&ctx.registered_email(i)),
            _ => Ok(()),
        }
    }
}

fn moto_address(env: &Env) -> Result<SocketAddr, String> {
    let url = get(env, "AWS_ENDPOINT_URL_DYNAMODB").ok_or("AWS_ENDPOINT_URL_DYNAMODB is unset")?;
    let authority = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(format!("cannot resolve {url}"))
}

fn run() -> Result<(), String> {
    let s = Settings::from_env()?;
    std::fs::create_dir_all(&s.log_dir).map_err(|e| e.to_string())?;
    let base_env = read_env_file(&s.env_file)?;
    let moto = moto_address(&base_env)?;
    let provider = provider::LocalProvider::start().map_err(|e| e.to_string())?;
    let base_env = with(
        &base_env,
        &[
            (
                "AI_API_KEY".into(),
                "dev-only-benchmark-provider-key".into(),
            ),
            ("AI_API_BASE".into(), provider.base_url()),
        ],
    );
    let timed_env = with(&base_env, &timing_settings());
    // The functions fetch their secrets from the local Secrets Manager by id; the harness signs
    // its own tokens and webhook deliveries with the development values they were made from.
    let dev_secrets = read_env_file(Path::new(".env"))?;
    let config = Config::from_lookup(|k| {
        if k.ends_with("_ID") {
            return None;
        }
        get(&base_env, k)
            .or_else(|| get(&dev_secrets, k))
            .map(str::to_string)
    })
    .map_err(|e| format!("the functions' environment is refused: {e}"))?;
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let ctx = Context {
        sessions: Sessions::new(&config, Arc::new(SystemClock)).map_err(|e| e.to_string())?,
        webhook_secret: get(&dev_secrets, "STRIPE_WEBHOOK_SECRET")
            .and_then(|v| v.split(',').next())
            .ok_or("STRIPE_WEBHOOK_SECRET is unset")?
            .trim()
            .to_string(),
        login_email: format!("login-{run_id}@example.com"),
        count_login_email: format!("count-login-{run_id}@example.com"),
        run: run_id,
    };
    let load_before = report::load_average();

    let accounts = Accounts::new(&base_env)?;
    accounts.seed(&ctx)?;

    eprintln!(
        "==> init: {} cold starts of each binary, interleaved",
        s.cold_starts
    );
    // The TLS clients read the system's trust store when they are built, during init:
    // rustls-native-certs reads the CA bundle and then every file of the certificate directory.
    // Two more series of cold starts, interleaved with the first, isolate that cost: the bundle
    // file alone (Lambda's Amazon Linux 2023 has one bundle file and no hashed directory), and a
    // single root certificate (nearly no trust store at all).
    let trust = trust_variants(&s, &timed_env)?;
    let mut cold: HashMap<&str, Vec<ColdStart>> = HashMap::new();
    let mut cold_variants: Vec<report::ColdVariant> = trust
        .iter()
        .map(|(label, _)| report::ColdVariant {
            label: label.clone(),
            runs: HashMap::new(),
        })
        .collect();
    for i in 0..s.cold_starts {
        for (k, f) in s.functions() {
            let ip = ctx.ip(1, k, i);
            let c = cold_start(&s, &ctx, &accounts, f, &timed_env, i, &ip)?;
            cold.entry(f.binary()).or_default().push(c);
            for (v, (_, env)) in trust.iter().enumerate() {
                let ip = ctx.ip(3 + v as u16, k, i);
                let j = s.cold_starts + s.events + 1 + (v + 1) * s.cold_starts + i;
                let c = cold_start(&s, &ctx, &accounts, f, env, j, &ip)?;
                cold_variants[v].runs.entry(f.binary()).or_default().push(c);
            }
        }
    }

    let mut latency = Vec::new();
    for (k, f) in s.functions() {
        eprintln!("==> latency: {} events to {}", s.events, f.binary());
        let ip = ctx.ip(2, k, 0);
        latency.push(latency_run(&s, &ctx, &accounts, f, &timed_env, &ip)?);
    }

    eprintln!("==> DynamoDB requests per path, default limits");
    let counts = count_requests(&s, &ctx, &base_env, moto)?;

    eprintln!("==> Argon2 in process");
    let argon2 = argon2_cost();

    let results = report::Results {
        settings: &s,
        cold,
        cold_variants,
        latency,
        counts,
        argon2,
        provider_calls: provider.calls(),
        load_before,
        load_after: report::load_average(),
    };
    let raw = results.to_json();
    if let Some(dir) = s.results.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(
        &s.results,
        serde_json::to_string_pretty(&raw).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let previous = std::fs::read_to_string(&s.output).unwrap_or_default();
    std::fs::write(&s.output, results.markdown(&previous)).map_err(|e| e.to_string())?;
    eprintln!(
        "==> wrote {} and {}",
        s.output.display(),
        s.results.display()
    );
    Ok(())
}

/// The cold-start variants beside the machine's own trust store: `(label, environment)`.
fn trust_variants(s: &Settings, env: &Env) -> Result<Vec<(String, Env)>, String> {
    let Some(bundle) = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file()) else {
        return Ok(Vec::new());
    };
    let pem = std::fs::read_to_string(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let end = "-----END CERTIFICATE-----";
    let first = pem
        .find(end)
        .map(|i| &pem[..i + end.len()])
        .ok_or("the CA bundle holds no certificate")?;
    let one = s.log_dir.join("one-root.pem");
    std::fs::write(&one, format!("{first}\n")).map_err(|e| format!("{}: {e}", one.display()))?;
    let no_dir = s.log_dir.join("no-certificate-directory");
    let variant = |file: &std::path::Path| {
        with(
            env,
            &[
                ("SSL_CERT_FILE".into(), file.display().to_string()),
                ("SSL_CERT_DIR".into(), no_dir.display().to_string()),
            ],
        )
    };
    Ok(vec![
        (
            format!(
                "the CA bundle only (`SSL_CERT_FILE={}`, no directory), as on Lambda",
                bundle.display()
            ),
            variant(&bundle),
        ),
        (
            "one root certificate only (nearly no trust store)".into(),
            variant(&one),
        ),
    ])
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-harness: {e}");
            ExitCode::FAILURE
        }
    }
}
