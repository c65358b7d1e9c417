//! Getting a request to a gate host. `unix:/path` speaks HTTP/1.1 over the daemon's socket
//! (until the front exists, and for local tools); HTTPS through the front comes with it.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    time::Duration,
};

/// The largest answer read; a gate answer is a few hundred bytes.
const MAX_RESPONSE: u64 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("unsupported server {0:?} (use unix:/path)")]
    Unsupported(String),
    #[error("{server}: {source}")]
    Io { server: String, source: std::io::Error },
    #[error("{server}: not an HTTP/1.1 answer")]
    BadResponse { server: String },
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A server named as in a profile.
#[derive(Clone, Debug)]
pub enum Server {
    Unix(std::path::PathBuf),
}

impl Server {
    /// # Errors
    /// Not a form this client speaks.
    pub fn parse(text: &str) -> Result<Self, TransportError> {
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(Self::Unix(path.into())),
            _ => Err(TransportError::Unsupported(text.to_owned())),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// Sends `raw` (a whole HTTP/1.1 request, sent as given) and reads the answer.
    ///
    /// # Errors
    /// The server cannot be reached, or answers something that is not HTTP/1.1.
    pub fn exchange(&self, raw: &[u8]) -> Result<Response, TransportError> {
        let io = |source| TransportError::Io { server: self.name(), source };
        let Self::Unix(path) = self;
        let mut stream = UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.write_all(raw).map_err(io)?;
        let mut answer = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut answer).map_err(io)?;
        parse_response(&answer).ok_or_else(|| TransportError::BadResponse { server: self.name() })
    }

    /// A request with `headers` and `body` to `path`.
    ///
    /// # Errors
    /// As [`Self::exchange`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, TransportError> {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            raw.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body);
        self.exchange(&bytes)
    }
}

fn parse_response(answer: &[u8]) -> Option<Response> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &answer[end + 4..];
    let body = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, length)) => rest.get(..length.parse::<usize>().ok()?)?.to_vec(),
        None if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) => {
            dechunk(rest)?
        }
        None => rest.to_vec(),
    };
    Some(Response { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}junk").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, b"{}".as_slice()));
        let r = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"abc");
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\n").is_none());
        assert!(parse_response(b"garbage").is_none());
    }
}
