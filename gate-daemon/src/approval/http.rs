//! The internal HTTP API on a Unix socket: the approval route, the source echo and the
//! counters. Only the front's user (and root) may connect: the socket is the front user's, mode
//! 0600, and every connection's peer credentials are checked again. Requests from the front's
//! user must carry its marker that it rebuilt them (root, the operator, is trusted as is: local
//! tools and tests). The front passes the client's observed address in a header that is trusted
//! here because nothing else can reach this socket.
//! Every request is logged (method, path, peer uid), so tests can prove what the front let
//! through.
use std::{
    fs,
    io::ErrorKind,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, State, connect_info::Connected},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::IncomingStream,
};
use gate_protocol::wire::{
    APPROVE_PATH, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_TOKEN, INTERNAL_HEADER_OBSERVED_SOURCE,
    INTERNAL_HEADER_VALIDATED, MAX_BODY_BYTES, REJECTED_BODY, RequestHeaders, SOURCE_PATH, SourceAnswer,
};
use tokio::{net::UnixListener, sync::Semaphore};

use crate::approval::{ApprovalService, Incoming, Rejection, service::unix_now};

pub const COUNTERS_PATH: &str = "/internal/counters";
/// Longer than any valid header value (the HMAC's 88 characters); longer ones are refused unread.
const MAX_HEADER_VALUE: usize = 128;

/// Approvals past the cheap checks at once, per core: more than one, so that while one waits
/// for the store (its commit, the file's locks) the core verifies another's signature, and the
/// store's group commit finds writes to share a commit (docs/benchmarks.md, the storm: one a
/// core left a fifth of the CPU idle).
const APPROVALS_PER_CORE: usize = 4;

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self { uid: stream.io().peer_cred().ok().map(|c| c.uid()) }
    }
}

struct App {
    service: Arc<ApprovalService>,
    /// The front's uid; `None`: only root may call.
    front_uid: Option<u32>,
    /// The rest of an approval (store writes, box, RSA, leases) runs on blocking threads, at
    /// most [`APPROVALS_PER_CORE`] a core at a time.
    crypto: Semaphore,
}

/// The uniform answer to every refused request.
fn rejected() -> Response {
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], REJECTED_BODY).into_response()
}

fn one_header(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() || value.len() > MAX_HEADER_VALUE {
        return None;
    }
    value.to_str().ok().map(str::to_owned)
}

fn request_headers(headers: &HeaderMap) -> Option<RequestHeaders> {
    Some(RequestHeaders {
        token: one_header(headers, HEADER_TOKEN)?,
        timestamp: one_header(headers, HEADER_TIMESTAMP)?,
        nonce: one_header(headers, HEADER_NONCE)?,
        signature: one_header(headers, HEADER_SIGNATURE)?,
    })
}

/// The observed source: absent is fine (a local caller), malformed is not.
fn observed_source(headers: &HeaderMap) -> Result<Option<IpAddr>, ()> {
    if headers.get(INTERNAL_HEADER_OBSERVED_SOURCE).is_none() {
        return Ok(None);
    }
    one_header(headers, INTERNAL_HEADER_OBSERVED_SOURCE).and_then(|v| v.parse().ok()).map(Some).ok_or(())
}

/// Counts every request (at debug level, logs it: a stranger's requests through the front must
/// not cost a log line each), and lets through only root and the front's user.
async fn gatekeeper(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let uid = peer.uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
    log::debug!("internal request {} {} from uid {uid}", request.method(), request.uri().path());
    if request.uri().path() != COUNTERS_PATH {
        app.service.counters.request();
    }
    let root = peer.uid == Some(0);
    let front = peer.uid.is_some() && peer.uid == app.front_uid;
    let marked = from_front(request.headers());
    if !(root || front && marked) {
        app.service.refused(Rejection::NotFromFront, &format!("uid {uid}, marker {marked}"));
        return rejected();
    }
    next.run(request).await
}

/// Whether the front marked the request as rebuilt by it.
fn from_front(headers: &HeaderMap) -> bool {
    one_header(headers, INTERNAL_HEADER_VALIDATED).is_some_and(|v| v == "1")
}

async fn approve(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let service = &app.service;
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        service.refused(Rejection::TooLarge, "unauthenticated");
        return rejected();
    };
    let (Some(request_headers), Ok(observed)) = (request_headers(&headers), observed_source(&headers)) else {
        service.refused(Rejection::Malformed, "unauthenticated");
        return rejected();
    };
    let incoming = Incoming { headers: request_headers, body: body.to_vec(), observed };
    let now = unix_now();
    // The cheap checks here on the worker: a refused stranger never costs a thread handoff.
    let Ok(checked) = service.check_cheap(&incoming, now) else { return rejected() };
    let Ok(_permit) = app.crypto.acquire().await else { return rejected() };
    match tokio::task::block_in_place(|| service.approve_checked(checked, &incoming, now)) {
        Ok(sealed) => (StatusCode::OK, Json(sealed)).into_response(),
        Err(_) => rejected(),
    }
}

async fn source(headers: HeaderMap) -> Response {
    match observed_source(&headers) {
        Ok(Some(address)) => Json(SourceAnswer { address }).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn counters(State(app): State<Arc<App>>) -> Response {
    Json(app.service.counters.snapshot()).into_response()
}

/// The routes; anything else is 404 or 405 and never reaches the service. Serve it with
/// `into_make_service_with_connect_info::<Peer>()`.
pub fn router(service: Arc<ApprovalService>, front_uid: Option<u32>) -> Router {
    let permits = APPROVALS_PER_CORE * std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let app = Arc::new(App { service, front_uid, crypto: Semaphore::new(permits) });
    Router::new()
        .route(APPROVE_PATH, post(approve))
        .route(SOURCE_PATH, get(source))
        .route(COUNTERS_PATH, get(counters))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), gatekeeper))
        .with_state(app)
}

/// The internal API being served.
pub struct InternalApi {
    stop: tokio::sync::oneshot::Sender<()>,
    _file: SocketFile,
}

impl InternalApi {
    /// Serves `router` on `listener` until [`Self::close`].
    #[must_use]
    pub fn serve(listener: UnixListener, router: Router, file: SocketFile) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
        tokio::spawn(async move {
            if let Err(e) = server.await {
                log::error!("the internal API stopped: {e}");
            }
        });
        Self { stop, _file: file }
    }

    /// Stops accepting and removes the socket file; requests in progress are answered, and
    /// connections kept open between requests (the front's pool) are closed, so no request is
    /// served after this on an old connection.
    pub fn close(self) {
        let _ = self.stop.send(());
    }
}

/// Removes the socket file when dropped.
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds the socket at `path`, mode 0600, owned by `owner` (the front's uid and gid) if given.
/// A stale socket is replaced; a live one (another daemon) is an error.
///
/// # Errors
/// The directory or socket cannot be made, or another process serves it.
pub fn bind(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!("{} is served by another process (is a gate daemon already running?)", path.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(_) => fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?,
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    let file = SocketFile { path: path.to_owned() };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("give {} to uid {uid}", path.display()))?;
    }
    Ok((listener, file))
}
