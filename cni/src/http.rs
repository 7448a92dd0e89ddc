//! A small blocking HTTP/1.1 client of a leviathan server, over its unix
//! socket (`unix:///run/leviathan/leviathan.sock`) or TCP
//! (`http://127.0.0.1:8080`, with a bearer token): one request per
//! connection (`Connection: close`), GraphQL over `POST /graphql` and
//! `GET /healthz`. No TLS: the socket is the way in on the same host.
//!
//! Invariants: every read and write has a deadline; an answer larger than
//! [`MAX_ANSWER`] is refused, never buffered whole.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

/// Room made up front for an answer (most fit).
const ANSWER_ROOM: usize = 16 * 1024;
/// Largest answer read.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Unix(String),
    Tcp { authority: String },
}

impl Server {
    /// `unix:///path`, `unix:/path`, `http://host:port` (or `host:port`).
    pub fn parse(s: &str) -> Result<Server, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(format!(
                    "server '{s}': a unix socket needs an absolute path (unix:///run/leviathan/leviathan.sock)"
                ));
            }
            return Ok(Server::Unix(path.to_string()));
        }
        if s.starts_with("https://") {
            return Err(format!(
                "server '{s}': the plugin speaks to the local server over its unix socket or plain http://"
            ));
        }
        let authority = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("server '{s}': expected unix:///PATH or http://HOST:PORT"));
        }
        Ok(Server::Tcp { authority: authority.to_string() })
    }
}

/// Why a request did not get an answer, or got a bad one.
#[derive(Debug)]
pub enum HttpError {
    /// Nothing answers (refused, no socket, timed out connecting).
    Unreachable(String),
    /// The answer is not what HTTP or GraphQL promise.
    Protocol(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Unreachable(m) | HttpError::Protocol(m) => f.write_str(m),
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A client of one server.
pub struct Client {
    pub server: Server,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl Client {
    fn connect(&self) -> Result<Box<dyn Stream>, HttpError> {
        let unreachable = |e: std::io::Error| {
            HttpError::Unreachable(format!("cannot reach the leviathan server at {}: {e}", self.shown()))
        };
        match &self.server {
            Server::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
                s.set_read_timeout(Some(self.timeout)).map_err(unreachable)?;
                s.set_write_timeout(Some(self.timeout)).map_err(unreachable)?;
                Ok(Box::new(s))
            }
            Server::Tcp { authority } => {
                use std::net::ToSocketAddrs;
                let addr = authority
                    .to_socket_addrs()
                    .map_err(unreachable)?
                    .next()
                    .ok_or_else(|| HttpError::Unreachable(format!("'{authority}' has no address")))?;
                let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(unreachable)?;
                s.set_read_timeout(Some(self.timeout)).map_err(unreachable)?;
                s.set_write_timeout(Some(self.timeout)).map_err(unreachable)?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
        }
    }

    pub fn shown(&self) -> String {
        match &self.server {
            Server::Unix(p) => format!("unix://{p}"),
            Server::Tcp { authority } => format!("http://{authority}"),
        }
    }

    /// One request; the status and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Vec<u8>), HttpError> {
        let mut stream = self.connect()?;
        let host = match &self.server {
            Server::Unix(_) => "localhost",
            Server::Tcp { authority } => authority.as_str(),
        };
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n");
        if let Some(t) = &self.token {
            head += &format!("Authorization: Bearer {t}\r\n");
        }
        if let Some(b) = body {
            head += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len());
        }
        head += "\r\n";
        let io = |e: std::io::Error| {
            HttpError::Unreachable(format!("talking to the leviathan server at {}: {e}", self.shown()))
        };
        // One write for the request, and for an answer under 16 KiB (an
        // attach's is under 1 KiB) one read and the one that finds its end.
        let body = body.unwrap_or_default();
        let mut request = Vec::with_capacity(head.len() + body.len());
        request.extend_from_slice(head.as_bytes());
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(io)?;
        stream.flush().map_err(io)?;
        let mut raw = Vec::with_capacity(ANSWER_ROOM);
        stream.take(MAX_ANSWER as u64 + 65536).read_to_end(&mut raw).map_err(io)?;
        parse_response(&raw)
    }

    /// A GraphQL request; the whole answer (`data` and `errors`).
    pub fn graphql(&self, query: &str, variables: Value) -> Result<Value, HttpError> {
        let body = json!({"query": query, "variables": variables}).to_string();
        let (status, body) = self.request("POST", "/graphql", Some(body.as_bytes()))?;
        serde_json::from_slice(&body).map_err(|_| {
            HttpError::Protocol(format!(
                "the server at {} answered {status} with a body that is not JSON",
                self.shown()
            ))
        })
    }
}

/// Splits an HTTP/1.1 answer into its status and body (Content-Length,
/// chunked, or up to the close).
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let bad = |m: &str| HttpError::Protocol(format!("the server's answer is not HTTP/1.1: {m}"));
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not text"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("a broken chunked body"))?
    } else if let Some(n) = length {
        rest.get(..n).ok_or_else(|| bad("the body is shorter than its Content-Length"))?.to_vec()
    } else {
        rest.to_vec()
    };
    if body.len() > MAX_ANSWER {
        return Err(HttpError::Protocol(format!("the server's answer is over {MAX_ANSWER} bytes")));
    }
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse() {
        assert_eq!(Server::parse("unix:///run/l.sock").unwrap(), Server::Unix("/run/l.sock".into()));
        assert_eq!(Server::parse("unix:/run/l.sock").unwrap(), Server::Unix("/run/l.sock".into()));
        assert_eq!(
            Server::parse("http://127.0.0.1:8080/").unwrap(),
            Server::Tcp { authority: "127.0.0.1:8080".into() }
        );
        assert!(Server::parse("unix:relative").is_err());
        assert!(Server::parse("https://x").is_err());
        assert!(Server::parse("http://x/y").is_err());
    }

    #[test]
    fn answers_parse() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let (s, b) =
            parse_response(b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n1\r\n \r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((s, b.as_slice()), (503, &b"{} "[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
