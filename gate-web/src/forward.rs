//! The way to the daemon: HTTP/1.1 over its Unix socket, with a deadline per request. Connections
//! are kept open and reused (a pool of idle ones, `limits.daemon_connections_kept`), so a request
//! costs no connect and no new connection task on either side. The answer is read up to a small cap; anything
//! unexpected is an error, never passed through.
use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// A daemon answer is a few hundred bytes.
const MAX_ANSWER: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("daemon unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("daemon did not answer in time")]
    Timeout,
    #[error("daemon answered badly: {0}")]
    Protocol(String),
}

type Sender = SendRequest<Full<Bytes>>;

pub struct Daemon {
    socket: PathBuf,
    timeout: Duration,
    idle: Mutex<Vec<Sender>>,
    /// Idle connections kept for the next requests; a burst beyond opens more, closed after it.
    keep: usize,
}

impl Daemon {
    #[must_use]
    pub fn new(socket: PathBuf, timeout: Duration, keep: usize) -> Self {
        Self { socket, timeout, idle: Mutex::new(Vec::new()), keep }
    }

    /// Sends `request` and returns the status and body.
    ///
    /// # Errors
    /// The daemon cannot be reached, is too slow, or answers something that is not HTTP.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ForwardError> {
        tokio::time::timeout(self.timeout, self.exchange(request)).await.map_err(|_| ForwardError::Timeout)?
    }

    async fn exchange(&self, mut request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ForwardError> {
        // A kept connection the daemon closed meanwhile (idle, a `web` shutdown, a restart)
        // hands the request back unsent: it goes to the next one, and at last to a new one.
        // A request that was sent is never sent twice (an approval is not idempotent).
        while let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(request).await {
                Ok(response) => return self.answer(sender, response).await,
                Err(mut unsent) => match unsent.take_message() {
                    Some(back) => request = back,
                    None => return Err(ForwardError::Protocol(unsent.into_error().to_string())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender.send_request(request).await.map_err(|e| ForwardError::Protocol(e.to_string()))?;
        self.answer(sender, response).await
    }

    async fn connect(&self) -> Result<Sender, ForwardError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(ForwardError::Unreachable)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ForwardError::Protocol(e.to_string()))?;
        // Runs until the daemon closes the connection or its sender is dropped.
        tokio::spawn(connection);
        Ok(sender)
    }

    /// Reads the answer, then keeps the connection for the next request if it can take one.
    async fn answer(&self, sender: Sender, response: Response<Incoming>) -> Result<(StatusCode, Bytes), ForwardError> {
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| ForwardError::Protocol(e.to_string()))?
            .to_bytes();
        if !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < self.keep {
                idle.push(sender);
            }
        }
        Ok((status, body))
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }
}
