//! A counting HTTP proxy between a function and the local DynamoDB: every request is forwarded
//! unchanged and recorded, with its operation (from `X-Amz-Target`), the tables it names and
//! moto's round-trip time, before the answer goes back.
//! The function points `AWS_ENDPOINT_URL_DYNAMODB` at it, so the counts are what the SDK
//! really sent, retries included.

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{read_message, write_message};

/// One request the function sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The DynamoDB operation, such as `UpdateItem`.
    pub operation: String,
    /// The known tables the request names.
    pub tables: Vec<String>,
    /// From forwarding the request to reading moto's whole answer.
    pub elapsed: Duration,
    /// The error moto answered (the `__type` after `#`, such as
    /// `ConditionalCheckFailedException`), if any.
    pub error: Option<String>,
}

/// The error type of a DynamoDB answer, if it is one.
fn error_type(status: u16, body: &[u8]) -> Option<String> {
    if status < 400 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let kind = v["__type"].as_str().unwrap_or("unknown error");
    Some(kind.rsplit('#').next().unwrap_or(kind).to_string())
}

/// The proxy; it stops serving when dropped (connections end with the function process).
pub struct CountingProxy {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
}

impl CountingProxy {
    /// Forwards to `upstream`, recognising the table names in `tables`.
    pub fn start(upstream: SocketAddr, tables: Vec<String>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&records);
        let tables = Arc::new(tables);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let r = Arc::clone(&r);
                let tables = Arc::clone(&tables);
                thread::spawn(move || {
                    let _ = relay(stream, upstream, &r, &tables);
                });
            }
        });
        Ok(Self { addr, records })
    }

    /// The endpoint URL to give the function.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests were recorded so far.
    pub fn mark(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The requests recorded since `mark`.
    pub fn since(&self, mark: usize) -> Vec<Record> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.get(mark..).unwrap_or_default().to_vec()
    }
}

type Upstream = (BufReader<TcpStream>, TcpStream);

fn connect(upstream: SocketAddr) -> io::Result<Upstream> {
    let s = TcpStream::connect(upstream)?;
    s.set_nodelay(true)?;
    Ok((BufReader::new(s.try_clone()?), s))
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    records: &Mutex<Vec<Record>>,
    tables: &[String],
) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut to_client = client.try_clone()?;
    let mut from_client = BufReader::new(client);
    let mut conn: Option<Upstream> = None;
    while let Some(req) = read_message(&mut from_client, false, false)? {
        let operation = req
            .header("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_string();
        let body = String::from_utf8_lossy(&req.body);
        let named = tables
            .iter()
            .filter(|t| body.contains(&format!("\"{t}\"")))
            .cloned()
            .collect();
        let head = req.method() == "HEAD";
        let mut attempt = 0;
        let started = Instant::now();
        let resp = loop {
            attempt += 1;
            let (reader, writer) = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(connect(upstream)?),
            };
            let sent = write_message(writer, &req.start, &req.headers, &req.body);
            match sent.and_then(|()| read_message(reader, true, head)) {
                Ok(Some(resp)) => break resp,
                // A kept-alive upstream connection may have been closed: retry once on a new one.
                Ok(None) | Err(_) if attempt == 1 => conn = None,
                Ok(None) => return Err(io::Error::other("upstream closed")),
                Err(e) => return Err(e),
            }
        };
        records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Record {
                operation,
                tables: named,
                elapsed: started.elapsed(),
                error: error_type(resp.status(), &resp.body),
            });
        if resp.close {
            conn = None;
        }
        write_message(&mut to_client, &resp.start, &resp.headers, &resp.body)?;
    }
    Ok(())
}
