//! A local OpenAI-compatible provider for the chat function: `POST /v1/chat/completions`
//! answers at once with a fixed completion, so chat's latency is its own work plus one local
//! HTTP round trip through its real provider client.

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use crate::http::{read_message, respond};

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the local benchmark provider."},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":8,"total_tokens":50}}"#;

/// The provider; it serves until the harness exits.
pub struct LocalProvider {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
}

impl LocalProvider {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(AtomicU64::new(0));
        let c = Arc::clone(&calls);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    let _ = serve(stream, &c);
                });
            }
        });
        Ok(Self { addr, calls })
    }

    /// The value for `AI_API_BASE`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Completions served so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

fn serve(stream: TcpStream, calls: &AtomicU64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_message(&mut reader, false, false)? {
        if req.method() == "POST" && req.target() == "/v1/chat/completions" {
            calls.fetch_add(1, Ordering::Relaxed);
            respond(&mut writer, 200, "application/json", COMPLETION.as_bytes())?;
        } else {
            respond(
                &mut writer,
                404,
                "application/json",
                br#"{"error":"not found"}"#,
            )?;
        }
    }
    Ok(())
}
