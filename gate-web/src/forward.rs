//! The way to the daemon: one HTTP/1.1 exchange over its Unix socket per request, with a
//! deadline. The answer is read up to a small cap; anything unexpected is an error, never
//! passed through.
use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode};
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

pub struct Daemon {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Daemon {
    /// Sends `request` and returns the status and body.
    ///
    /// # Errors
    /// The daemon cannot be reached, is too slow, or answers something that is not HTTP.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ForwardError> {
        tokio::time::timeout(self.timeout, self.exchange(request)).await.map_err(|_| ForwardError::Timeout)?
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ForwardError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(ForwardError::Unreachable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ForwardError::Protocol(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|e| ForwardError::Protocol(e.to_string()));
        let result = match response {
            Ok(response) => {
                let status = response.status();
                Limited::new(response.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map(|body| (status, body.to_bytes()))
                    .map_err(|e| ForwardError::Protocol(e.to_string()))
            }
            Err(e) => Err(e),
        };
        driver.abort();
        result
    }
}
