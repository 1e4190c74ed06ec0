//! Just enough HTTP/1.1 for the harness's servers and proxy: one message at a time over a
//! keep-alive connection, bodies framed by `Content-Length` or chunked encoding.

use std::io::{self, BufRead, Write};

/// One request or response.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The request line or status line, without the line end.
    pub start: String,
    /// Headers in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the peer ends the connection after this message.
    pub close: bool,
}

impl Message {
    /// A header's value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The method of a request.
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or_default()
    }

    /// The target of a request.
    pub fn target(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or_default()
    }

    /// The status code of a response.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// Reads one message. `Ok(None)` is a clean end of the connection before a message started.
/// A response to HEAD, or with status 1xx, 204 or 304, has no body (`bodiless`).
pub fn read_message(
    r: &mut impl BufRead,
    is_response: bool,
    bodiless: bool,
) -> io::Result<Option<Message>> {
    let start = loop {
        match read_line(r)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut msg = Message {
        start,
        ..Message::default()
    };
    loop {
        let line = read_line(r)?.ok_or_else(|| invalid("connection closed in the headers"))?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid("malformed header"))?;
        msg.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    msg.close = msg
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let status = if is_response { msg.status() } else { 0 };
    if bodiless || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some(msg));
    }
    let chunked = msg
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let size = read_line(r)?.ok_or_else(|| invalid("connection closed in a chunk"))?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                while read_line(r)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            let at = msg.body.len();
            msg.body.resize(at + size, 0);
            r.read_exact(&mut msg.body[at..])?;
            read_line(r)?;
        }
    } else if let Some(len) = msg.header("content-length") {
        let len: usize = len.parse().map_err(|_| invalid("bad content-length"))?;
        msg.body.resize(len, 0);
        r.read_exact(&mut msg.body)?;
    } else if is_response {
        r.read_to_end(&mut msg.body)?;
        msg.close = true;
    }
    Ok(Some(msg))
}

/// Writes a message in one write, with a `Content-Length` for `body`; framing headers in
/// `headers` are dropped.
pub fn write_message(
    w: &mut impl Write,
    start: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Writes a response with a status, a content type and a body.
pub fn respond(w: &mut impl Write, status: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        404 => "Not Found",
        _ => "Status",
    };
    write_message(
        w,
        &format!("HTTP/1.1 {status} {reason}"),
        &[("content-type".into(), content_type.into())],
        body,
    )
}
