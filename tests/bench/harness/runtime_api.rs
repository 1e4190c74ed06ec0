//! The Lambda Runtime API, played on 127.0.0.1 for one function process.
//!
//! `GET /2018-06-01/runtime/invocation/next` hands out the queued events one at a time with the
//! `Lambda-Runtime-*` headers; `POST …/invocation/{id}/response` and `…/error` return the
//! function's answer, and `POST /2018-06-01/runtime/init/error` reports a failed start. Each
//! event is timed from the moment its bytes are written to the moment the whole answer has
//! been read, both on the connection threads, so a channel hand-off never counts.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::http::{Message, read_message, respond, write_message};

const PREFIX: &str = "/2018-06-01/runtime";

/// An event to hand to the function.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The request id (`Lambda-Runtime-Aws-Request-Id`).
    pub id: String,
    /// The event JSON.
    pub body: Vec<u8>,
}

/// What the function answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The request id, or `init` for an init error.
    pub id: String,
    /// When the event's bytes were written (`None` for an init error).
    pub sent: Option<Instant>,
    /// When the whole answer had been read.
    pub received: Instant,
    /// The answer's body.
    pub body: Vec<u8>,
    /// Whether the function reported an error instead of a response.
    pub error: bool,
}

impl Outcome {
    /// The time from handing out the event to reading the answer.
    pub fn latency(&self) -> Option<Duration> {
        self.sent
            .map(|s| self.received.saturating_duration_since(s))
    }
}

struct Shared {
    arn: String,
    queue: Mutex<VecDeque<Invocation>>,
    ready: Condvar,
    sent: Mutex<HashMap<String, Instant>>,
    first_next: Mutex<Option<Instant>>,
    stop: AtomicBool,
    outcomes: Mutex<Sender<Outcome>>,
}

/// A Runtime API server for one function process.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    outcomes: Receiver<Outcome>,
}

impl RuntimeApi {
    /// Listens on an ephemeral port of 127.0.0.1 for `function`.
    pub fn start(function: &str) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            sent: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            stop: AtomicBool::new(false),
            outcomes: Mutex::new(tx),
        });
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let s = Arc::clone(&s);
                    thread::spawn(move || {
                        let _ = serve(stream, &s);
                    });
                }
            }
        });
        Ok(Self {
            addr,
            shared,
            outcomes: rx,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Queues an event.
    pub fn push(&self, invocation: Invocation) {
        lock(&self.shared.queue).push_back(invocation);
        self.shared.ready.notify_all();
    }

    /// The next answer, waiting at most `timeout`.
    pub fn next_outcome(&self, timeout: Duration) -> Option<Outcome> {
        self.outcomes.recv_timeout(timeout).ok()
    }

    /// When the function first asked for an event.
    pub fn first_next(&self) -> Option<Instant> {
        *lock(&self.shared.first_next)
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
        let _ = TcpStream::connect(self.addr);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn serve(stream: TcpStream, s: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_message(&mut reader, false, false)? {
        let received = Instant::now();
        let path = req
            .target()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        let rest = path.strip_prefix(PREFIX).unwrap_or_default();
        match (req.method(), rest) {
            ("GET", "/invocation/next") => {
                lock(&s.first_next).get_or_insert(received);
                let Some(inv) = next_invocation(s) else {
                    return Ok(());
                };
                let headers = [
                    ("content-type".to_string(), "application/json".to_string()),
                    ("lambda-runtime-aws-request-id".into(), inv.id.clone()),
                    (
                        "lambda-runtime-deadline-ms".into(),
                        (epoch_ms() + 60_000).to_string(),
                    ),
                    ("lambda-runtime-invoked-function-arn".into(), s.arn.clone()),
                    (
                        "lambda-runtime-trace-id".into(),
                        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
                    ),
                ];
                let sent = Instant::now();
                lock(&s.sent).insert(inv.id.clone(), sent);
                write_message(&mut writer, "HTTP/1.1 200 OK", &headers, &inv.body)?;
            }
            ("POST", "/init/error") => {
                report(s, "init".into(), received, req, true);
                respond(&mut writer, 202, "application/json", br#"{"status":"OK"}"#)?;
            }
            ("POST", r) if r.starts_with("/invocation/") => {
                let tail = &r["/invocation/".len()..];
                let (id, kind) = tail.split_once('/').unwrap_or((tail, ""));
                if kind != "response" && kind != "error" {
                    respond(&mut writer, 404, "text/plain", b"not found")?;
                    continue;
                }
                report(s, id.to_string(), received, req, kind == "error");
                respond(&mut writer, 202, "application/json", br#"{"status":"OK"}"#)?;
            }
            _ => respond(&mut writer, 404, "text/plain", b"not found")?,
        }
    }
    Ok(())
}

fn next_invocation(s: &Shared) -> Option<Invocation> {
    let mut queue = lock(&s.queue);
    loop {
        if s.stop.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(inv) = queue.pop_front() {
            return Some(inv);
        }
        queue = s
            .ready
            .wait_timeout(queue, Duration::from_millis(200))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn report(s: &Shared, id: String, received: Instant, req: Message, error: bool) {
    let sent = lock(&s.sent).remove(&id);
    let _ = lock(&s.outcomes).send(Outcome {
        id,
        sent,
        received,
        body: req.body,
        error,
    });
}
