//! The static route table and what the front does with each request: check its HTTP shape,
//! parse it into typed values, and send the daemon a brand-new request built from those values
//! alone. Nothing a client sent is passed on byte for byte; unknown routes, methods, headers and
//! fields never reach the daemon.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use gate_protocol::{
    request::Request as ApprovalRequest,
    wire::{
        APPROVE_PATH, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TOKEN, INTERNAL_HEADER_OBSERVED_SOURCE,
        INTERNAL_HEADER_VALIDATED, MAX_BODY_BYTES, REJECTED_BODY, RequestHeaders, SOURCE_PATH, SealedBody,
        SourceAnswer,
    },
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode, Version,
    body::Incoming,
    header::{self, HeaderValue},
};

use crate::{
    config::Limits,
    forward::Daemon,
    ratelimit::{RateLimit, retry_after},
};

/// Every route the front serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/approve`: an approval request (docs/protocol.md).
    Approve,
    /// `GET /v1/source`: the caller's address as seen here.
    Source,
}

/// Matches the table, or says why not (404: no such path; 405: wrong method).
///
/// # Errors
/// The status to answer with.
pub fn route(method: &Method, path: &str) -> Result<Route, StatusCode> {
    match (path, method) {
        (APPROVE_PATH, &Method::POST) => Ok(Route::Approve),
        (SOURCE_PATH, &Method::GET) => Ok(Route::Source),
        (APPROVE_PATH | SOURCE_PATH, _) => Err(StatusCode::METHOD_NOT_ALLOWED),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

/// What the request handler needs.
pub struct Front {
    pub daemon: Daemon,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpAddr>,
    pub rate: Arc<RateLimit>,
    pub shutdown: Arc<crate::shutdown::ShutdownView>,
    pub tally: Arc<crate::tally::Tally>,
}

impl Front {
    /// What requests need for `config`, with the parts that outlive a reload: the approval rate
    /// limit's buckets, the shutdown view, the tally.
    #[must_use]
    pub fn new(
        config: &crate::config::Config,
        rate: Arc<RateLimit>,
        shutdown: Arc<crate::shutdown::ShutdownView>,
        tally: Arc<crate::tally::Tally>,
    ) -> Self {
        Self {
            daemon: Daemon::new(
                config.daemon_socket.clone(),
                config.limits.daemon_timeout,
                config.limits.daemon_connections_kept.min(config.limits.max_connections),
            ),
            limits: config.limits.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            rate,
            shutdown,
            tally,
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A refusal by the front itself: a short fixed message, and the connection closes (after a
/// malformed request, nothing else on that connection can be trusted to be framed right).
#[must_use]
pub fn refuse(status: StatusCode) -> Answer {
    let reason = status.canonical_reason().unwrap_or("refused").to_ascii_lowercase();
    let mut response = json(status, serde_json::json!({ "error": reason }).to_string());
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Request-smuggling shapes and everything but HTTP/1.1: refused before routing. Bodies come
/// with one `Content-Length` only; `Transfer-Encoding` is never accepted.
fn shape_problem(request: &Request<Incoming>) -> Option<StatusCode> {
    if request.version() != Version::HTTP_11 {
        return Some(StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) || headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Some(StatusCode::BAD_REQUEST);
    }
    None
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address its
/// `X-Forwarded-For` names (the one the proxy itself saw).
fn observed(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> Result<IpAddr, StatusCode> {
    let peer = peer.ip().to_canonical();
    if !trusted.contains(&peer) {
        return Ok(peer);
    }
    let mut values = headers.get_all("x-forwarded-for").iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(peer),
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
            .map(|a| a.to_canonical())
            .ok_or(StatusCode::BAD_REQUEST),
        (Some(_), Some(_)) => Err(StatusCode::BAD_REQUEST),
    }
}

fn one_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok().map(str::to_owned)
}

/// Handles one request from `peer`.
pub async fn handle(front: Arc<Front>, request: Request<Incoming>, peer: SocketAddr) -> Answer {
    if let Some(message) = front.shutdown.www_message() {
        // `www` shut down: every request gets the message, nothing is forwarded.
        let mut answer = json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "unavailable", "message": message }).to_string(),
        );
        answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return answer;
    }
    if let Some(status) = shape_problem(&request) {
        return refuse(status);
    }
    let route = match route(request.method(), request.uri().path()) {
        Ok(route) => route,
        Err(status) => return refuse(status),
    };
    if request.uri().query().is_some() {
        return refuse(StatusCode::BAD_REQUEST);
    }
    let source = match observed(peer, request.headers(), &front.trusted_proxies) {
        Ok(source) => source,
        Err(status) => return refuse(status),
    };
    match route {
        Route::Approve => approve(&front, request, source).await,
        Route::Source => echo_source(&front, &request, source).await,
    }
}

async fn approve(front: &Front, request: Request<Incoming>, source: IpAddr) -> Answer {
    if !front.rate.allow(source, Instant::now()) {
        let mut answer = refuse(StatusCode::TOO_MANY_REQUESTS);
        let wait = retry_after(front.limits.approvals_per_minute).as_secs().to_string();
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_str(&wait).expect("digits"));
        return answer;
    }
    let headers = request.headers();
    if !headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json")) {
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let Some(length) = one_header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) else {
        return refuse(StatusCode::LENGTH_REQUIRED);
    };
    if length > MAX_BODY_BYTES {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let fields = RequestHeaders {
        token: one_header(headers, HEADER_TOKEN).unwrap_or_default(),
        timestamp: one_header(headers, HEADER_TIMESTAMP).unwrap_or_default(),
        nonce: one_header(headers, HEADER_NONCE).unwrap_or_default(),
        signature: one_header(headers, HEADER_SIGNATURE).unwrap_or_default(),
    };
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES);
    let body = match tokio::time::timeout(front.limits.body_timeout, body.collect()).await {
        Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT),
        Ok(Err(_)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Ok(body)) => body.to_bytes(),
    };
    // The typed parse: the same definition the daemon uses, without any key. What survives is
    // rebuilt from the parsed values alone.
    let parsed = match ApprovalRequest::parse(fields, &body) {
        Ok(parsed) => parsed,
        Err(gate_protocol::ProtocolError::TooLarge(_)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => return refuse(StatusCode::BAD_REQUEST),
    };
    let rebuilt_body = serde_json::to_vec(&parsed.body).expect("three strings serialize");
    let h = &parsed.headers;
    let rebuilt = Request::post(APPROVE_PATH)
        .header(header::HOST, "gate-daemon")
        .header(header::CONTENT_TYPE, "application/json")
        .header(HEADER_TOKEN, &h.token)
        .header(HEADER_TIMESTAMP, &h.timestamp)
        .header(HEADER_NONCE, &h.nonce)
        .header(HEADER_SIGNATURE, &h.signature)
        .header(INTERNAL_HEADER_OBSERVED_SOURCE, source.to_string())
        .header(INTERNAL_HEADER_VALIDATED, "1")
        .body(Full::new(Bytes::from(rebuilt_body)))
        .expect("a request from checked parts");
    match front.daemon.send(rebuilt).await {
        Ok((StatusCode::OK, answer)) => match gate_protocol::wire::json_object::<SealedBody>(&answer) {
            Some(sealed) => json(StatusCode::OK, serde_json::to_vec(&sealed).expect("three strings serialize")),
            None => unavailable("the daemon's approval was not a sealed body"),
        },
        Ok((StatusCode::FORBIDDEN, _)) => json(StatusCode::FORBIDDEN, REJECTED_BODY),
        Ok((status, _)) => unavailable(&format!("the daemon answered {status}")),
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn echo_source(front: &Front, request: &Request<Incoming>, source: IpAddr) -> Answer {
    if request.headers().contains_key(header::CONTENT_LENGTH) {
        return refuse(StatusCode::BAD_REQUEST);
    }
    let rebuilt = Request::get(SOURCE_PATH)
        .header(header::HOST, "gate-daemon")
        .header(INTERNAL_HEADER_OBSERVED_SOURCE, source.to_string())
        .header(INTERNAL_HEADER_VALIDATED, "1")
        .body(Full::new(Bytes::new()))
        .expect("a request from checked parts");
    match front.daemon.send(rebuilt).await {
        Ok((StatusCode::OK, answer)) => match serde_json::from_slice::<SourceAnswer>(&answer) {
            Ok(echo) => json(StatusCode::OK, serde_json::to_vec(&echo).expect("an address serializes")),
            Err(_) => unavailable("the daemon's source answer was malformed"),
        },
        Ok((status, _)) => unavailable(&format!("the daemon answered {status}")),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// The daemon is down, slow or confused: 503, never a hang.
fn unavailable(why: &str) -> Answer {
    log::warn!("answering 503: {why}");
    refuse(StatusCode::SERVICE_UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_is_all_there_is() {
        assert_eq!(route(&Method::POST, "/v1/approve"), Ok(Route::Approve));
        assert_eq!(route(&Method::GET, "/v1/source"), Ok(Route::Source));
        assert_eq!(route(&Method::GET, "/v1/approve"), Err(StatusCode::METHOD_NOT_ALLOWED));
        assert_eq!(route(&Method::POST, "/v1/source"), Err(StatusCode::METHOD_NOT_ALLOWED));
        for path in ["/", "/internal/counters", "/v1/approve/", "/V1/approve", "/v1/../internal/counters"] {
            assert_eq!(route(&Method::POST, path), Err(StatusCode::NOT_FOUND), "{path}");
        }
    }

    #[test]
    fn only_trusted_proxies_may_name_the_source() {
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 192.0.2.7"));
        let trusted = ["10.0.0.5".parse().unwrap()];
        assert_eq!(observed(proxy, &headers, &trusted), Ok("192.0.2.7".parse().unwrap()));
        assert_eq!(observed(stranger, &headers, &trusted), Ok("198.51.100.1".parse().unwrap()));
        headers.insert("x-forwarded-for", HeaderValue::from_static("not an address"));
        assert_eq!(observed(proxy, &headers, &trusted), Err(StatusCode::BAD_REQUEST));
        let mapped: SocketAddr = "[::ffff:198.51.100.1]:4000".parse().unwrap();
        assert_eq!(observed(mapped, &HeaderMap::new(), &[]), Ok("198.51.100.1".parse().unwrap()));
    }
}
