//! Getting a request to a gate host: `https://host:port` through the front (the public way), or
//! `unix:/path` straight to the daemon's socket (root on the gate host itself).
//!
//! HTTPS certificates are not verified: the front may use a self-signed certificate, and
//! nothing rests on TLS. Every request is sealed and signed, and an answer is trusted only after
//! its HMAC, its box and its binding to the request check out (docs/protocol.md).
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs},
    os::unix::net::UnixStream,
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// The largest answer read; a gate answer is a few hundred bytes.
const MAX_RESPONSE: u64 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("unsupported server {0:?} (use https://host:port or unix:/path)")]
    Unsupported(String),
    #[error("{server}: no address")]
    NoAddress { server: String },
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
    /// `https://host:port`; `at` pins one resolved address (for asking over IPv4 and IPv6).
    Https {
        host: String,
        port: u16,
        at: Option<SocketAddr>,
    },
}

impl Server {
    /// # Errors
    /// Not a form this client speaks.
    pub fn parse(text: &str) -> Result<Self, TransportError> {
        let unsupported = || TransportError::Unsupported(text.to_owned());
        if let Some(path) = text.strip_prefix("unix:") {
            return if path.starts_with('/') { Ok(Self::Unix(path.into())) } else { Err(unsupported()) };
        }
        let Some(rest) = text.strip_prefix("https://") else { return Err(unsupported()) };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.is_empty() {
            return Err(unsupported());
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && (host.starts_with('[') || !host.contains(':')) => {
                (host, port.parse().map_err(|_| unsupported())?)
            }
            _ => (authority, 443),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(unsupported());
        }
        Ok(Self::Https { host: host.to_owned(), port, at: None })
    }

    /// The server as a person writes it (`https://host:port`, `unix:/path`).
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Unix(path) => format!("unix:{}", path.display()),
            Self::Https { host, port, at: None } => format!("https://{host}:{port}"),
            Self::Https { host, port, at: Some(at) } => format!("https://{host}:{port} at {at}"),
        }
    }

    /// Every address an HTTPS server's host resolves to, one server each.
    ///
    /// # Errors
    /// The host does not resolve.
    pub fn each_address(&self) -> Result<Vec<Self>, TransportError> {
        let Self::Https { host, port, .. } = self else { return Ok(vec![self.clone()]) };
        let addrs = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|source| TransportError::Io { server: self.name(), source })?;
        Ok(addrs.map(|at| Self::Https { host: host.clone(), port: *port, at: Some(at) }).collect())
    }

    /// Sends `raw` (a whole HTTP/1.1 request, sent as given) and reads the answer.
    ///
    /// # Errors
    /// The server cannot be reached, or answers something that is not HTTP/1.1.
    pub fn exchange(&self, raw: &[u8]) -> Result<Response, TransportError> {
        let io = |source| TransportError::Io { server: self.name(), source };
        let mut answer = Vec::new();
        match self {
            Self::Unix(path) => {
                let mut stream = UnixStream::connect(path).map_err(io)?;
                stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
                stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
                talk(&mut stream, raw, &mut answer).map_err(io)?;
            }
            Self::Https { host, port, at } => {
                let addr = match at {
                    Some(at) => *at,
                    None => (host.as_str(), *port)
                        .to_socket_addrs()
                        .map_err(io)?
                        .next()
                        .ok_or_else(|| TransportError::NoAddress { server: self.name() })?,
                };
                let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(io)?;
                tcp.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
                tcp.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
                let name = host.parse::<IpAddr>().map_or_else(
                    |_| ServerName::try_from(host.clone()).map_err(|e| io(std::io::Error::other(e))),
                    |ip| Ok(ServerName::IpAddress(ip.into())),
                )?;
                let connection =
                    ClientConnection::new(insecure_tls_config(), name).map_err(|e| io(std::io::Error::other(e)))?;
                let mut stream = StreamOwned::new(connection, tcp);
                match talk(&mut stream, raw, &mut answer) {
                    Ok(()) => {}
                    // A server that closes without close_notify after a complete answer.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
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
        let host = match self {
            Self::Unix(_) => "gate".to_owned(),
            Self::Https { host, port, .. } if host.contains(':') => {
                format!("[{host}]:{port}")
            }
            Self::Https { host, port, .. } => format!("{host}:{port}"),
        };
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
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

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Writes the request, reads the answer up to [`MAX_RESPONSE`]: until it is complete by its
/// `Content-Length`, or until the server closes.
fn talk(stream: &mut impl ReadWrite, raw: &[u8], answer: &mut Vec<u8>) -> std::io::Result<()> {
    stream.write_all(raw)?;
    stream.flush()?;
    let mut buf = [0; 4096];
    while (answer.len() as u64) < MAX_RESPONSE {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if is_complete(answer) {
            break;
        }
    }
    Ok(())
}

/// Whether `answer` holds a whole response framed by `Content-Length`.
#[must_use]
pub fn is_complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        // Checked: a server may claim any length (found by the fuzz target http_response).
        .and_then(|length| (end + 4).checked_add(length))
        .is_some_and(|whole| answer.len() >= whole)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Accepts any server certificate: see the module's note. The handshake signature is still
/// checked, so the session is at least with the holder of the presented key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client's TLS config: any certificate accepted (see the module's note), HTTP/1.1.
#[must_use]
pub fn insecure_tls_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A server's answer read whole: the status line, headers, and the body framed by
/// `Content-Length` or chunked (else up to the end). `None` for anything else (public for the
/// fuzz target `fuzz/fuzz_targets/http_response.rs`).
#[must_use]
pub fn parse_response(answer: &[u8]) -> Option<Response> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    // Three digits, as RFC 9110 has them: not "003" or "+12", which `parse` alone accepts.
    let code = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
        return None;
    }
    let status = code.parse().ok()?;
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
    fn servers_parse() {
        for (text, host, port) in [
            ("https://gate.example.org", "gate.example.org", 443),
            ("https://192.0.2.1:8443", "192.0.2.1", 8443),
            ("https://[2001:db8::1]:8443/", "2001:db8::1", 8443),
            ("https://[2001:db8::1]", "2001:db8::1", 443),
        ] {
            match Server::parse(text).unwrap() {
                Server::Https { host: h, port: p, at: None } => assert_eq!((h.as_str(), p), (host, port), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(Server::parse("http://127.0.0.1:8080").is_err(), "plain HTTP is not a way to a gate");
        for bad in ["https://", "https://x/path", "unix:relative", "ftp://x", "https://x:notaport"] {
            assert!(Server::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}junk").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, b"{}".as_slice()));
        let r = parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"abc");
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n\r\n").is_none());
        // Found by the fuzz target http_response: statuses that are not three digits.
        assert!(parse_response(b"HTTP/1.1 003 foansfrbid\n0\r\n}\r\n0\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 +12 OK\r\n\r\n").is_none());
        // A length that overflows the sum with the head's: never complete, never a panic.
        assert!(!is_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n{}"));
        assert!(is_complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"));
        assert!(parse_response(b"garbage").is_none());
    }
}
