//! Accepting connections: admitted by [`Admission`] before any TLS work, a deadline for the TLS
//! handshake and for the request's header (slow clients are cut off), one request per
//! connection, HTTP/1.1 only, bounded header buffers, every answer counted by status, and a panic
//! in a handler answered with 500 instead of taking anything else down.
//!
//! The raw request head is also read as it arrives ([`Inspected`]): hyper folds repeated
//! identical `Content-Length` headers into one before the handler sees them, and a request that
//! names its length twice is refused all the same, whether its lines end in CRLF or a bare LF.
use std::{
    io,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body_util::Full;
use hyper::{Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    admission::Admission,
    routes::{Front, handle, refuse},
};

/// The largest request head accepted (hyper answers 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// At most this many header lines.
pub const MAX_HEADERS: usize = 32;

/// What a new connection is served with; replaced as a whole by a reload, so a connection sees
/// one certificate and one set of limits from its start to its end.
pub struct Serving {
    pub tls: TlsAcceptor,
    pub front: Arc<Front>,
}

/// Serves `listener` until the task is dropped. While `web` says false, the listener is paused:
/// taken out of the runtime and shut for reading, so new connections are refused; when it says
/// true again, the same bound socket listens again under a fresh registration.
pub async fn serve(
    listener: TcpListener,
    serving: tokio::sync::watch::Receiver<Arc<Serving>>,
    admission: Arc<Admission>,
    mut web: tokio::sync::watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    loop {
        let Some(active) = listener.as_ref() else { return };
        tokio::select! {
            accepted = active.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        admission.tally.accept_failed(&e);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Refused: closed at once (the drop), before any TLS work.
                let Ok(permit) = admission.admit(peer.ip(), std::time::Instant::now()) else { continue };
                let current = Arc::clone(&serving.borrow());
                let (tls, front) = (current.tls.clone(), Arc::clone(&current.front));
                tokio::spawn(async move {
                    let _permit = permit;
                    connection(tcp, peer, tls, front).await;
                });
            }
            changed = web.changed() => {
                if changed.is_err() || *web.borrow() {
                    continue;
                }
                let Some(paused) = listener.take().and_then(|l| pause(l).ok()) else { return };
                while !*web.borrow() {
                    if web.changed().await.is_err() {
                        return;
                    }
                }
                listener = resume(paused).map_err(|e| log::error!("resume listening: {e}")).ok();
            }
        }
    }
}

/// Takes the listener out of the runtime and stops it listening (connections are refused).
fn pause(listener: TcpListener) -> io::Result<std::net::TcpListener> {
    let listener = listener.into_std()?;
    nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(&listener), nix::sys::socket::Shutdown::Read)
        .map_err(io::Error::from)?;
    Ok(listener)
}

/// Listens again on the same bound socket, under a fresh registration with the runtime.
fn resume(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    let backlog = nix::sys::socket::Backlog::new(1024).map_err(io::Error::from)?;
    nix::sys::socket::listen(&listener, backlog).map_err(io::Error::from)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

async fn connection(tcp: tokio::net::TcpStream, peer: SocketAddr, tls: TlsAcceptor, front: Arc<Front>) {
    let limits = front.limits.clone();
    let stream = match tokio::time::timeout(limits.handshake_timeout, tls.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            log::debug!("TLS handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            log::debug!("TLS handshake with {peer} timed out");
            return;
        }
    };
    serve_http(stream, peer, front).await;
}

/// Serves the one request of a connection from `peer` whose TLS is done (`stream` carries the
/// plain bytes): the raw head check, hyper's parse within the limits, the handler, the answer.
/// Public for the fuzz target that drives it on an in-memory stream.
pub async fn serve_http<S>(stream: S, peer: SocketAddr, front: Arc<Front>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = front.limits.clone();
    let duplicate_length = Arc::new(AtomicBool::new(false));
    let stream =
        Inspected { inner: stream, head: Vec::new(), done: false, duplicate_length: Arc::clone(&duplicate_length) };
    let service = service_fn(move |request| {
        let front = Arc::clone(&front);
        let duplicate_length = duplicate_length.load(Ordering::Relaxed);
        async move {
            let answer = if duplicate_length {
                refuse(StatusCode::BAD_REQUEST)
            } else {
                contained(handle(Arc::clone(&front), request, peer), peer).await
            };
            front.tally.answered(answer.status().as_u16());
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        // One request per connection: clients send one approval at a time, and the raw head
        // seen by `Inspected` is always the head of the request being answered.
        .keep_alive(false);
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
        log::debug!("connection from {peer}: {e}");
    }
}

/// Runs a request handler; if it panics, the request is answered 500 and logged, and nothing else
/// (the connection's task, the listener, other requests) notices.
async fn contained<F>(handler: F, peer: SocketAddr) -> Response<Full<Bytes>>
where
    F: std::future::Future<Output = Response<Full<Bytes>>>,
{
    AssertUnwindSafe(handler).catch_unwind().await.unwrap_or_else(|_| {
        log::error!("a request handler panicked (request from {peer}); answered 500");
        refuse(StatusCode::INTERNAL_SERVER_ERROR)
    })
}

/// Where the head ends: at its first empty line, whether lines end in CRLF or in a bare LF
/// (hyper accepts both).
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'\n' {
            let line = &bytes[start..i];
            if line.is_empty() || line == b"\r" {
                return Some(start);
            }
            start = i + 1;
        }
    }
    None
}

/// A stream whose first request head is read on the way in: it notes a repeated
/// `Content-Length`, which hyper would fold away.
struct Inspected<T> {
    inner: T,
    head: Vec<u8>,
    done: bool,
    duplicate_length: Arc<AtomicBool>,
}

impl<T> Inspected<T> {
    fn inspect(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        self.head.extend_from_slice(bytes);
        let end = head_end(&self.head);
        if end.is_none() && self.head.len() <= MAX_HEAD_BYTES {
            return;
        }
        self.done = true;
        let head = &self.head[..end.unwrap_or(self.head.len())];
        let lengths = head
            .split(|&b| b == b'\n')
            .filter(|line| line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
            .count();
        if lengths > 1 {
            self.duplicate_length.store(true, Ordering::Relaxed);
        }
        self.head = Vec::new();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Inspected<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let new = buf.filled()[before..].to_vec();
            self.inspect(&new);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Inspected<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_its_first_empty_line_with_crlf_or_bare_lf() {
        assert_eq!(head_end(b"POST / HTTP/1.1\r\nA: 1\r\n\r\nbody"), Some(23));
        assert_eq!(head_end(b"POST / HTTP/1.1\nA: 1\n\nbody"), Some(21));
        assert_eq!(head_end(b"POST / HTTP/1.1\r\nA: 1\n\r\nbody"), Some(22));
        assert_eq!(head_end(b"POST / HTTP/1.1\r\nA: 1\r\n"), None, "not yet whole");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_the_next_request_is_served() {
        let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let panicking = async {
            let answers: Vec<Response<Full<Bytes>>> = Vec::new();
            answers.into_iter().next().expect("a handler bug: no answer")
        };
        assert_eq!(contained(panicking, peer).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let fine = async { refuse(StatusCode::NO_CONTENT) };
        assert_eq!(contained(fine, peer).await.status(), StatusCode::NO_CONTENT, "the next request is served");
    }
}
