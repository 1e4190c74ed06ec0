//! `BENCHMARKS.md` and the raw results: a table per measure with the bare function beside
//! each, the ratios, the targets, the machine and the date. The text between the notes
//! markers of an existing file is kept, so the analysis survives a new run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::scenarios::Function;
use crate::stats::Summary;
use crate::{Argon2Cost, ColdStart, Counted, LatencyRun, Settings};

const NOTES_START: &str = "<!-- notes:start (kept by make bench) -->";
const NOTES_END: &str = "<!-- notes:end -->";

/// The project's functions: every binary but the two baselines, which [`Function::ALL`] lists
/// first.
const FUNCTIONS: &[Function] = Function::ALL.split_at(2).1;

/// Every measurement of one run.
pub struct Results<'a> {
    /// The harness's settings.
    pub settings: &'a Settings,
    /// Cold starts per binary.
    pub cold: HashMap<&'static str, Vec<ColdStart>>,
    /// Cold starts per binary with other trust stores.
    pub cold_variants: Vec<ColdVariant>,
    /// One latency run per binary.
    pub latency: Vec<LatencyRun>,
    /// Counted DynamoDB requests.
    pub counts: Vec<Counted>,
    /// Argon2 in process.
    pub argon2: Argon2Cost,
    /// Completions the local AI provider served.
    pub provider_calls: u64,
    /// `/proc/loadavg` before the measurements.
    pub load_before: String,
    /// `/proc/loadavg` after them.
    pub load_after: String,
}

/// Two paths' latencies side by side, with their difference.
fn pair_table(w: &mut String, a: (&str, Summary), b: (&str, Summary), difference: &str) {
    let _ = writeln!(
        w,
        "| path | p50 | p90 | p99 | mean |\n|---|---|---|---|---|"
    );
    for (name, s) in [a, b] {
        let _ = writeln!(
            w,
            "| {name} | {} | {} | {} | {} |",
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.mean)
        );
    }
    let (a, b) = (a.1, b.1);
    let _ = writeln!(
        w,
        "| difference ({difference}) | {:+.3} ms | {:+.3} ms | {:+.3} ms | {:+.3} ms |\n",
        (b.p50 - a.p50) / 1000.0,
        (b.p90 - a.p90) / 1000.0,
        (b.p99 - a.p99) / 1000.0,
        (b.mean - a.mean) / 1000.0
    );
}

/// Cold starts with one change to the functions' environment.
pub struct ColdVariant {
    /// What the change is.
    pub label: String,
    /// Cold starts per binary.
    pub runs: HashMap<&'static str, Vec<ColdStart>>,
}

/// The first three fields of `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Size of a binary and whether it has no symbol table.
fn binary_size(path: &Path) -> Option<(u64, bool)> {
    let bytes = std::fs::read(path).ok()?;
    let stripped = !bytes.windows(8).any(|w| w == b".symtab\0");
    Some((bytes.len() as u64, stripped))
}

/// One criterion benchmark: median and mean with their 95% intervals, in nanoseconds.
struct Criterion {
    name: String,
    median: [f64; 3],
    mean: [f64; 3],
}

fn criterion_results(dir: &Path) -> Vec<Criterion> {
    criterion_group_results(dir, "pipeline")
}

fn criterion_group_results(dir: &Path, group: &str) -> Vec<Criterion> {
    let Ok(entries) = std::fs::read_dir(dir.join(group)) else {
        return Vec::new();
    };
    let mut out: Vec<Criterion> = entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("new/estimates.json")).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            let est = |k: &str| {
                let p = |f: &str| v[k][f].as_f64().unwrap_or(f64::NAN);
                [
                    p("point_estimate"),
                    v[k]["confidence_interval"]["lower_bound"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                    v[k]["confidence_interval"]["upper_bound"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                ]
            };
            Some(Criterion {
                name: e.file_name().to_string_lossy().into_owned(),
                median: est("median"),
                mean: est("mean"),
            })
        })
        .collect();
    out.sort_by_key(|c| (!c.name.starts_with("handler_only"), c.name.clone()));
    out
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        ms(v)
    } else {
        format!("{v:.0} µs")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
}

fn range(values: impl Iterator<Item = usize>) -> String {
    let v: Vec<usize> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "—".into(),
    }
}

/// A counted path: its samples aggregated.
struct CountedPath<'a> {
    function: Function,
    label: &'static str,
    checks: u32,
    samples: Vec<&'a Counted>,
}

impl CountedPath<'_> {
    fn rate_limit_requests(c: &Counted, table: &str) -> usize {
        c.records
            .iter()
            .filter(|r| r.tables.iter().any(|t| t == table))
            .count()
    }

    fn operations(c: &Counted) -> String {
        let mut ops: Vec<(String, usize)> = Vec::new();
        for r in &c.records {
            let name = match &r.error {
                Some(e) => format!("{} ({e})", r.operation),
                None => r.operation.clone(),
            };
            match ops.iter_mut().find(|(o, _)| *o == name) {
                Some((_, n)) => *n += 1,
                None => ops.push((name, 1)),
            }
        }
        if ops.is_empty() {
            return "none".into();
        }
        ops.iter()
            .map(|(o, n)| format!("{o} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Results<'_> {
    fn bare_latency(&self) -> Option<&LatencyRun> {
        self.latency.iter().find(|l| l.function == Function::Bare)
    }

    fn cold_summary(&self, f: Function) -> (Summary, Summary) {
        Self::summarise(&self.cold, f)
    }

    fn cold_bundle_summary(&self, f: Function) -> (Summary, Summary) {
        self.cold_variants.first().map_or_else(
            || Self::summarise(&self.cold, f),
            |v| Self::summarise(&v.runs, f),
        )
    }

    fn summarise(cold: &HashMap<&'static str, Vec<ColdStart>>, f: Function) -> (Summary, Summary) {
        let runs = cold.get(f.binary()).cloned().unwrap_or_default();
        let next: Vec<_> = runs.iter().map(|c| c.to_next).collect();
        let first: Vec<_> = runs.iter().map(|c| c.to_response).collect();
        (Summary::of(&next), Summary::of(&first))
    }

    fn size(&self, f: Function) -> Option<(u64, bool)> {
        binary_size(&self.settings.bin_dir.join(f.binary()))
    }

    fn paths(&self) -> Vec<CountedPath<'_>> {
        let mut paths: Vec<CountedPath<'_>> = Vec::new();
        for c in &self.counts {
            match paths
                .iter_mut()
                .find(|p| p.function == c.function && p.label == c.label)
            {
                Some(p) => p.samples.push(c),
                None => paths.push(CountedPath {
                    function: c.function,
                    label: c.label,
                    checks: c.checks,
                    samples: vec![c],
                }),
            }
        }
        paths
    }

    fn moto_round_trip(&self) -> Summary {
        let all: Vec<_> = self
            .counts
            .iter()
            .flat_map(|c| c.records.iter().map(|r| r.elapsed))
            .collect();
        Summary::of(&all)
    }

    fn rate_limit_table(&self) -> String {
        let env = crate::read_env_file(&self.settings.env_file).unwrap_or_default();
        crate::get(&env, "RATE_LIMIT_TABLE")
            .unwrap_or("flowbotz-rate-limits")
            .to_string()
    }

    /// The raw results.
    pub fn to_json(&self) -> Value {
        let table = self.rate_limit_table();
        json!({
            "date": self.settings.date,
            "events": self.settings.events,
            "cold_starts": self.settings.cold_starts,
            "functions": Function::ALL.iter().map(|&f| {
                let (next, first) = self.cold_summary(f);
                let lat = self.latency.iter().find(|l| l.function == f);
                json!({
                    "binary": f.binary(),
                    "init_to_next": next.to_json(),
                    "init_to_first_response": first.to_json(),
                    "init_variants": self.cold_variants.iter().map(|v| {
                        let (next, first) = Self::summarise(&v.runs, f);
                        json!({"variant": v.label, "init_to_next": next.to_json(), "init_to_first_response": first.to_json()})
                    }).collect::<Vec<_>>(),
                    "latency": lat.map(|l| l.latency.to_json()),
                    "cpu_per_invocation_us": lat.map(|l| l.cpu_per_invocation_us),
                    "peak_rss_kib": lat.and_then(|l| l.peak_rss_kib),
                    "size_bytes": self.size(f).map(|s| s.0),
                })
            }).collect::<Vec<_>>(),
            "login_timing": self.pair(Function::Login).map(|(w, u)| json!({
                "wrong_password": w.to_json(), "unknown_email": u.to_json(),
            })),
            "register_timing": self.pair(Function::Register).map(|(n, t)| json!({
                "new_email": n.to_json(), "taken_email": t.to_json(),
            })),
            "dynamodb": self.counts.iter().map(|c| json!({
                "binary": c.function.binary(),
                "path": c.label,
                "checks": c.checks,
                "requests": c.records.len(),
                "rate_limit_requests": CountedPath::rate_limit_requests(c, &table),
                "operations": CountedPath::operations(c),
            })).collect::<Vec<_>>(),
            "argon2_ms": {"hash": self.argon2.hash_ms, "verify": self.argon2.verify_ms},
            "criterion": criterion_results(&self.settings.criterion_dir).iter().map(|c| json!({
                "name": c.name, "median_ns": c.median[0], "mean_ns": c.mean[0],
            })).collect::<Vec<_>>(),
        })
    }

    /// `BENCHMARKS.md`, keeping the notes of `previous`.
    pub fn markdown(&self, previous: &str) -> String {
        let s = self.settings;
        let mut md = String::new();
        let w = &mut md;
        let elapsed = s.started.and_then(|t0| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|now| now.as_secs().saturating_sub(t0))
        });
        let _ = writeln!(w, "# Benchmarks\n");
        let _ = writeln!(
            w,
            "Cold start, per-request cost, DynamoDB round trips, size and memory of every function \
             beside a bare `lambda_http` hello function built with the same release profile. \
             Generated by `make bench` ([`scripts/bench.sh`](scripts/bench.sh), the `bench-harness` \
             binary in [`tests/bench/`](tests/bench/)); every number below comes from that run. \
             The notes at the end are written by hand and kept when the file is regenerated.\n"
        );
        let _ = writeln!(w, "## Machine and run\n");
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| date | {} |", s.date);
        let _ = writeln!(
            w,
            "| CPU | {} × {} |",
            cpu_model(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let _ = writeln!(w, "| memory | {:.1} GiB |", memory_gib());
        let _ = writeln!(w, "| kernel | Linux {} |", kernel());
        let _ = writeln!(w, "| compiler | {} |", s.rustc);
        let _ = writeln!(
            w,
            "| release profile | `opt-level = 3`, `lto = true`, `codegen-units = 1`, `strip = true`, `panic = \"unwind\"` |"
        );
        let _ = writeln!(
            w,
            "| load average (1, 5, 15 min) | {} before, {} after |",
            self.load_before, self.load_after
        );
        let _ = writeln!(
            w,
            "| events | {} timed events per binary after its first; {} cold starts per binary, interleaved (and as many with each narrowed trust store); {} login and {} register pairs for the timing comparisons |",
            s.events, s.cold_starts, s.timing_pairs, s.timing_pairs
        );
        let _ = writeln!(
            w,
            "| services | moto_server (DynamoDB, `scripts/dynamodb_local.py`, one request at a time), the Stripe stand-in (`scripts/stripe_standin.py`), the harness's OpenAI-compatible provider ({} completions served) |",
            self.provider_calls
        );
        if let Some(secs) = elapsed {
            let _ = writeln!(
                w,
                "| `make bench` until this file was written | {} min {} s (release build, criterion, stack start-up and measurements) |",
                secs / 60,
                secs % 60
            );
        }
        let _ = writeln!(w);
        self.targets(w);
        self.init_table(w);
        self.latency_table(w);
        self.criterion_table(w);
        self.password_table(w);
        self.dynamodb_table(w);
        self.size_table(w);
        self.argon2_section(w);
        let _ = writeln!(w, "## Notes\n");
        let notes = previous
            .split_once(NOTES_START)
            .and_then(|(_, rest)| rest.split_once(NOTES_END))
            .map(|(n, _)| n.trim_matches('\n').to_string())
            .unwrap_or_default();
        let _ = writeln!(w, "{NOTES_START}");
        if !notes.is_empty() {
            let _ = writeln!(w, "{notes}");
        }
        let _ = writeln!(w, "{NOTES_END}");
        md
    }

    fn targets(&self, w: &mut String) {
        let _ = writeln!(w, "## Targets\n");
        let _ = writeln!(w, "| target | measured | met |\n|---|---|---|");
        let mark = |ok: bool| if ok { "yes" } else { "**no**" };
        let worst_init = |summary: &dyn Fn(Function) -> (Summary, Summary)| {
            let bare = summary(Function::Bare).0.p50;
            let floor = summary(Function::BareDynamodb).0.p50;
            FUNCTIONS
                .iter()
                .map(|&f| (f, summary(f).0.p50 / bare, summary(f).0.p50 / floor))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        if let Some((f, r, floor)) = worst_init(&|f| self.cold_summary(f)) {
            let bundle = worst_init(&|f| self.cold_bundle_summary(f))
                .filter(|_| !self.cold_variants.is_empty())
                .map_or(String::new(), |(g, q, qf)| {
                    format!(
                        "; with the CA bundle only, as on Lambda: `{}` {q:.2}× ({qf:.2}× `bare-dynamodb`)",
                        g.binary()
                    )
                });
            let _ = writeln!(
                w,
                "| init (start → first `/next`, p50) at most 1.3 × the bare function's | worst: `{}` {r:.2}× ({floor:.2}× `bare-dynamodb`){bundle} | {} |",
                f.binary(),
                mark(r <= 1.3)
            );
        }
        let crit = criterion_results(&self.settings.criterion_dir);
        if let Some(c) = crit
            .iter()
            .filter(|c| !c.name.starts_with("handler_only"))
            .max_by(|a, b| a.median[0].total_cmp(&b.median[0]))
        {
            let _ = writeln!(
                w,
                "| pipeline overhead at most 30 µs p50 | slowest: `{}` {:.1} µs median | {} |",
                c.name,
                c.median[0] / 1000.0,
                mark(c.median[0] <= 30_000.0)
            );
        }
        let table = self.rate_limit_table();
        let steady: Vec<f64> = self
            .counts
            .iter()
            .filter(|c| c.label == "steady state" && c.checks > 0)
            .map(|c| CountedPath::rate_limit_requests(c, &table) as f64 / f64::from(c.checks))
            .collect();
        if !steady.is_empty() {
            let worst = steady.iter().copied().fold(0.0, f64::max);
            let best = steady.iter().copied().fold(f64::INFINITY, f64::min);
            let _ = writeln!(
                w,
                "| one DynamoDB request per rate-limit check in the steady state | {best}–{worst} per check over {} counted steady-state requests | {} |",
                steady.len(),
                mark(worst <= 1.0)
            );
        }
        let cpu = |f: Function| {
            self.latency
                .iter()
                .find(|l| l.function == f)
                .map_or(0.0, |l| l.cpu_per_invocation_us / 1000.0)
        };
        let (login, register) = (
            cpu(Function::Login) / self.argon2.verify_ms,
            cpu(Function::Register) / self.argon2.hash_ms,
        );
        let _ = writeln!(
            w,
            "| exactly one Argon2 operation per login or register | counted by the handler tests (see below); CPU per request = {login:.2} × one verification (login), {register:.2} × one hash (register) | {} |",
            mark((1.0..2.0).contains(&login) && (1.0..2.0).contains(&register))
        );
        let bare = self.size(Function::Bare).map_or(0, |s| s.0) as f64;
        let floor = self.size(Function::BareDynamodb).map_or(0, |s| s.0) as f64;
        let worst_size = FUNCTIONS
            .iter()
            .filter_map(|&f| {
                self.size(f)
                    .map(|s| (f, s.0 as f64 / bare, s.0 as f64 / floor))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((f, r, rf)) = worst_size {
            let _ = writeln!(
                w,
                "| stripped binary at most 3 × the bare function's | largest: `{}` {r:.2}× ({rf:.2}× `bare-dynamodb`, itself {:.2}×) | {} |",
                f.binary(),
                floor / bare,
                mark(r <= 3.0)
            );
        }
        let _ = writeln!(w);
    }

    fn init_table(&self, w: &mut String) {
        let _ = writeln!(w, "## 1. Init\n");
        let _ = writeln!(
            w,
            "From `spawn` of the binary to its first `GET /runtime/invocation/next` (the function's \
             own init: configuration, logging, SDK clients), and to the first answer (init plus \
             the first invocation, which opens the first connections). The first event is queued \
             before the process starts. Medians and 90th percentiles of {} cold starts per binary, \
             the binaries interleaved round by round; the page cache is warm, as on a Lambda host \
             that has the code already.\n",
            self.settings.cold_starts
        );
        let (bn, bf) = self.cold_summary(Function::Bare);
        let (fln, flf) = self.cold_summary(Function::BareDynamodb);
        let _ = writeln!(
            w,
            "| binary | first `/next` p50 | p90 | × bare (p50) | × `bare-dynamodb` | first answer p50 | p90 | × bare (p50) | × `bare-dynamodb` |\n|---|---|---|---|---|---|---|---|---|"
        );
        for f in Function::ALL {
            let (n, fr) = self.cold_summary(f);
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.binary(),
                ms(n.p50),
                ms(n.p90),
                ratio(n.p50, bn.p50),
                ratio(n.p50, fln.p50),
                ms(fr.p50),
                ms(fr.p90),
                ratio(fr.p50, bf.p50),
                ratio(fr.p50, flf.p50)
            );
        }
        let _ = writeln!(w);
        if !self.cold_variants.is_empty() {
            let _ = writeln!(
                w,
                "### Init and the trust store\n\n\
                 The TLS clients (the AWS SDK's, and reqwest's in `chat` and `payment-intent`) read \
                 the system's root certificates when they are built, during init: \
                 rustls-native-certs reads the CA bundle file and then every file of the \
                 certificate directory, about 150 more here, and parses each. Lambda's Amazon \
                 Linux 2023 has one bundle file. The same cold starts, interleaved with those \
                 above, with the trust store narrowed through `SSL_CERT_FILE` and `SSL_CERT_DIR`:\n"
            );
        }
        for v in &self.cold_variants {
            let (bn, bf) = Self::summarise(&v.runs, Function::Bare);
            let (fln, flf) = Self::summarise(&v.runs, Function::BareDynamodb);
            let _ = writeln!(
                w,
                "With {}:\n\n\
                 | binary | first `/next` p50 | p90 | × bare (p50) | × `bare-dynamodb` | first answer p50 | × bare (p50) | × `bare-dynamodb` |\n|---|---|---|---|---|---|---|---|",
                v.label
            );
            for f in Function::ALL {
                let (n, fr) = Self::summarise(&v.runs, f);
                let _ = writeln!(
                    w,
                    "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                    f.binary(),
                    ms(n.p50),
                    ms(n.p90),
                    ratio(n.p50, bn.p50),
                    ratio(n.p50, fln.p50),
                    ms(fr.p50),
                    ratio(fr.p50, bf.p50),
                    ratio(fr.p50, flf.p50)
                );
            }
            let _ = writeln!(w);
        }
    }

    fn latency_table(&self, w: &mut String) {
        let _ = writeln!(w, "## 2. Per-invocation latency\n");
        let _ = writeln!(
            w,
            "One process per binary serves {} events from one client IP, one at a time, after its \
             first (cold) event. Latency runs from the harness writing the event on `/next` to it \
             reading the whole answer; CPU is the process's own (all threads, \
             `/proc/<pid>/task/*/schedstat`) divided by the events. Limits are raised so that no \
             request is refused, and the store bound is 10 s instead of 1 s so that a stall of moto on \
             this shared machine counts as a slow request rather than a failed one; every \
             answer's status is checked. moto copies each table a \
             `TransactWriteItems` touches, so the register and account runs remove, outside the \
             timed part, each account they create: the table stays small, and DynamoDB's own \
             latency does not depend on a table's size. DynamoDB is moto, a Python \
             server that applies one request at a time: its round trips ({} median through the \
             counting proxy of section 4, against single-digit milliseconds for DynamoDB in the \
             same region) dominate every function that calls it.\n",
            self.settings.events,
            us(self.moto_round_trip().p50)
        );
        let bare = self.bare_latency();
        let (bp50, bcpu) = bare.map_or((0.0, 0.0), |b| (b.latency.p50, b.cpu_per_invocation_us));
        let _ = writeln!(
            w,
            "| binary | path | p50 | p99 | × bare (p50) | CPU per invocation | × bare | peak RSS |\n|---|---|---|---|---|---|---|---|"
        );
        for l in &self.latency {
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                l.function.binary(),
                l.function.timed_path(),
                us(l.latency.p50),
                us(l.latency.p99),
                ratio(l.latency.p50, bp50),
                us(l.cpu_per_invocation_us),
                ratio(l.cpu_per_invocation_us, bcpu),
                l.peak_rss_kib
                    .map_or("—".into(), |k| mib(k as f64 * 1024.0))
            );
        }
        let _ = writeln!(w);
        if let Some((wrong, unknown)) = self.pair(Function::Login) {
            let _ = writeln!(
                w,
                "### Login: wrong password against unknown email\n\n\
                 The no-enumeration evidence: {} pairs sent alternately to one warm `login` \
                 process (failed-login throttling raised so neither path is refused); both answer \
                 the same 401, and both run one Argon2 verification and one failure-counter write.\n",
                self.settings.timing_pairs
            );
            pair_table(
                w,
                ("wrong password, existing account", wrong),
                ("unknown email", unknown),
                "unknown − wrong",
            );
        }
        if let Some((new, taken)) = self.pair(Function::Register) {
            let _ = writeln!(
                w,
                "### Register: new email against an email already registered\n\n\
                 {} pairs sent alternately to one warm `register` process: a new email (its \
                 account is removed again outside the timed part) and the email of an existing \
                 account. Both answer the same 202 body; both hash the password once and send one \
                 conditional write, which the taken email fails.\n",
                self.settings.timing_pairs
            );
            pair_table(
                w,
                ("new email", new),
                ("email already registered", taken),
                "taken − new",
            );
        }
    }

    fn pair(&self, f: Function) -> Option<(Summary, Summary)> {
        self.latency
            .iter()
            .find(|l| l.function == f)
            .and_then(|l| l.pair_timing)
    }

    fn criterion_table(&self, w: &mut String) {
        let _ = writeln!(w, "## 3. The security pipeline's own CPU time\n");
        let _ = writeln!(
            w,
            "Criterion ([`tests/bench/pipeline.rs`](tests/bench/pipeline.rs)), release profile: \
             `Pipeline::serve` around a handler that returns a small JSON body, with the in-memory \
             rate-limit store, real JWT and CSRF verification and the JSON log line formatted into \
             a sink; building the request from the event JSON is outside the timed part, and there \
             is no Argon2 and no I/O. `handler_only` calls the same handler without the pipeline: \
             the bare function's share.\n"
        );
        let crit = criterion_results(&self.settings.criterion_dir);
        if crit.is_empty() {
            let _ = writeln!(w, "No criterion results were found.\n");
            return;
        }
        let base = crit
            .iter()
            .find(|c| c.name.starts_with("handler_only"))
            .map_or(0.0, |c| c.median[0]);
        let _ = writeln!(
            w,
            "| benchmark | median | 95% interval | mean | overhead over `handler_only` |\n|---|---|---|---|---|"
        );
        for c in &crit {
            let _ = writeln!(
                w,
                "| `{}` | {:.2} µs | {:.2}–{:.2} µs | {:.2} µs | {} |",
                c.name,
                c.median[0] / 1000.0,
                c.median[1] / 1000.0,
                c.median[2] / 1000.0,
                c.mean[0] / 1000.0,
                if c.name.starts_with("handler_only") {
                    "—".into()
                } else {
                    format!("{:.2} µs", (c.median[0] - base) / 1000.0)
                }
            );
        }
        let _ = writeln!(w);
    }

    fn password_table(&self, w: &mut String) {
        let _ = writeln!(w, "## 3b. The password strength estimate's worst cases\n");
        let _ = writeln!(
            w,
            "Criterion, release profile: `check_policy` (length, local part, common list, zxcvbn) \
             on the slowest inputs found for zxcvbn's substitution matcher against an ordinary \
             passphrase. Before the estimate read a bounded input (its longest prefix of at most 40 \
             characters with at most six distinct substitution characters; \
             `shared/src/accounts/password.rs`), the `substitutions_then_108_a` input took 0.86 s \
             in a release build.\n"
        );
        let crit = criterion_group_results(&self.settings.criterion_dir, "password");
        if crit.is_empty() {
            let _ = writeln!(w, "No criterion results were found.\n");
            return;
        }
        let _ = writeln!(w, "| input | median | 95% interval |\n|---|---|---|");
        for c in &crit {
            let _ = writeln!(
                w,
                "| `{}` | {:.2} ms | {:.2}–{:.2} ms |",
                c.name,
                c.median[0] / 1e6,
                c.median[1] / 1e6,
                c.median[2] / 1e6
            );
        }
        let _ = writeln!(w);
    }

    fn dynamodb_table(&self, w: &mut String) {
        let _ = writeln!(w, "## 4. DynamoDB requests per request\n");
        let _ = writeln!(
            w,
            "Counted, not estimated: each function's `AWS_ENDPOINT_URL_DYNAMODB` points at a proxy \
             in the harness that records every request (operation from `X-Amz-Target`, tables \
             named in the body) before forwarding it to moto. Default limits; a fresh process per \
             row group, so the first request of each group is the instance's first. `checks` is \
             the rate-limit checks the request makes (per IP, and per user on chat and \
             payments).\n"
        );
        let table = self.rate_limit_table();
        let _ = writeln!(
            w,
            "| binary | path | samples | requests | of which rate-limit table | checks | per check | operations |\n|---|---|---|---|---|---|---|---|"
        );
        for p in self.paths() {
            let rl = range(
                p.samples
                    .iter()
                    .map(|c| CountedPath::rate_limit_requests(c, &table)),
            );
            let per_check = if p.checks == 0 {
                "—".to_string()
            } else {
                let v: Vec<f64> = p
                    .samples
                    .iter()
                    .map(|c| {
                        CountedPath::rate_limit_requests(c, &table) as f64 / f64::from(p.checks)
                    })
                    .collect();
                let (a, b) = (
                    v.iter().copied().fold(f64::INFINITY, f64::min),
                    v.iter().copied().fold(0.0, f64::max),
                );
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}–{b}")
                }
            };
            let mut ops: Vec<String> = p
                .samples
                .iter()
                .map(|c| CountedPath::operations(c))
                .collect();
            ops.dedup();
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                p.function.binary(),
                p.label,
                p.samples.len(),
                range(p.samples.iter().map(|c| c.records.len())),
                rl,
                p.checks,
                per_check,
                ops.join("; ")
            );
        }
        let _ = writeln!(w);
    }

    fn size_table(&self, w: &mut String) {
        let _ = writeln!(w, "## 5. Binary size and peak memory\n");
        let _ = writeln!(
            w,
            "Size of the release binary as built (`strip = true`; \"stripped\" means it has no \
             `.symtab`). Peak RSS is `VmHWM` of the latency run's process after its {} events.\n",
            self.settings.events
        );
        let bare_size = self.size(Function::Bare).map_or(0.0, |s| s.0 as f64);
        let bare_rss = self
            .bare_latency()
            .and_then(|b| b.peak_rss_kib)
            .map_or(0.0, |k| k as f64);
        let _ = writeln!(
            w,
            "| binary | size | stripped | × bare | × `bare-dynamodb` | peak RSS | × bare |\n|---|---|---|---|---|---|---|"
        );
        let floor_size = self
            .size(Function::BareDynamodb)
            .map_or(0.0, |s| s.0 as f64);
        for f in Function::ALL {
            let (size, stripped) = self.size(f).unwrap_or((0, false));
            let rss = self
                .latency
                .iter()
                .find(|l| l.function == f)
                .and_then(|l| l.peak_rss_kib)
                .map_or(0.0, |k| k as f64);
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                f.binary(),
                mib(size as f64),
                if stripped { "yes" } else { "no" },
                ratio(size as f64, bare_size),
                ratio(size as f64, floor_size),
                mib(rss * 1024.0),
                ratio(rss, bare_rss)
            );
        }
        let _ = writeln!(w);
    }

    fn argon2_section(&self, w: &mut String) {
        let cpu = |f: Function| {
            self.latency
                .iter()
                .find(|l| l.function == f)
                .map_or(0.0, |l| l.cpu_per_invocation_us / 1000.0)
        };
        let _ = writeln!(w, "## Argon2 operations per login and register\n");
        let _ = writeln!(
            w,
            "Counted exactly in process by the handler tests, through the shared crate's \
             `password::operations()` counter: \
             `given_unknown_email_or_wrong_password_when_logging_in_then_identical_401_and_same_work` \
             and `given_valid_credentials_when_logging_in_then_one_argon2_operation` \
             (`functions/login/src/handler.rs`), \
             `given_new_and_taken_emails_when_registering_then_same_answer_and_same_work` \
             (`functions/register/src/handler.rs`). At the binary level the harness compares each \
             request's CPU time with one Argon2id operation (m = 19456 KiB, t = 2, p = 1) timed in \
             process in the same release build: a ratio from 1 to 2 means exactly one operation, \
             the rest being JSON, DynamoDB client and (register) the zxcvbn strength check.\n"
        );
        let _ = writeln!(w, "| | CPU | × one Argon2 operation |\n|---|---|---|");
        let _ = writeln!(
            w,
            "| one Argon2id hash, in process | {:.2} ms | 1 |",
            self.argon2.hash_ms
        );
        let _ = writeln!(
            w,
            "| one Argon2id verification, in process | {:.2} ms | 1 |",
            self.argon2.verify_ms
        );
        let _ = writeln!(
            w,
            "| `register` (new email), per request | {:.2} ms | {:.2} |",
            cpu(Function::Register),
            cpu(Function::Register) / self.argon2.hash_ms
        );
        let _ = writeln!(
            w,
            "| `login` (right password), per request | {:.2} ms | {:.2} |\n",
            cpu(Function::Login),
            cpu(Function::Login) / self.argon2.verify_ms
        );
    }
}
