//! What the daemon's and the front's TOML configs share, once: reading a file into a typed config
//! ([`load`], [`parse`]), errors that name the file and the line or key ([`ConfigError`]), and
//! durations written like `"90s"` ([`duration`], for `#[serde(deserialize_with = ...)]`).
//! Each config keeps its own types and its own checks of values. Also the start both service
//! binaries share ([`run_service`]): load the config, `--check`, run on a tokio runtime; and the
//! signals they stop and reload on ([`ServiceSignals`]); and the service manager's notify protocol
//! ([`systemd`]). And what the configs' man pages are made from ([`reference`]), and the
//! metrics page both serve ([`metrics`]), and their one log format ([`logging`]).
pub mod logging;
pub mod metrics;
pub mod reference;
pub mod systemd;

use std::{
    fs,
    future::Future,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use serde::{Deserialize, Deserializer, de::DeserializeOwned};

/// A config that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("config {file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("config {file}: {key}: {reason}")]
    Invalid { file: PathBuf, key: String, reason: String },
}

impl ConfigError {
    /// `key` in `file` has a value that parses but cannot be used, for `reason`.
    pub fn invalid(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { file: file.to_owned(), key: key.into(), reason: reason.into() }
    }
}

/// Reads `file` and parses it as `T` (see [`parse`]).
///
/// # Errors
/// The file cannot be read, or [`parse`] refuses it.
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_owned(), source })?;
    parse(file, &text)
}

/// Parses `text` as `T`, reporting errors against `file` with the offending line.
///
/// # Errors
/// Not TOML, an unknown key (for types that deny them), or a wrong type.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { file: file.to_owned(), message: one_line(&e, text) })
}

/// A TOML error on one line: `line N: `the line`: what is wrong`.
fn one_line(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else { return message };
    let start = span.start.min(text.len());
    let line_number = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_number - 1).unwrap_or_default().trim();
    format!("line {line_number}: `{}`: {message}", without_url_passwords(line))
}

/// `line` with the password of any `scheme://user:password@host` in it replaced: an error
/// quoting a line must not print a secret someone put there (the store's URL refuses one).
fn without_url_passwords(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after.find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace());
        let authority = &after[..authority_end.unwrap_or(after.len())];
        match authority.rsplit_once('@').and_then(|(user, _)| user.split_once(':').map(|(name, _)| (name, user.len())))
        {
            Some((name, user_len)) => {
                out.push_str(name);
                out.push_str(":***");
                rest = &after[user_len..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// A duration written like `"90s"`, `"5m"` or `"1h 30m"`.
///
/// # Errors
/// Not a string, or not a duration.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"90s\" or \"5m\": {e}")))
}

/// What a signal asks of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop.
    Stop,
    /// SIGHUP: read the config again and apply what changed (its default action would end the
    /// process silently, which systemd counts as a clean exit).
    Reload,
}

/// The signals a service watches.
pub struct ServiceSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl ServiceSignals {
    /// Starts watching.
    ///
    /// # Errors
    /// A signal handler cannot be installed.
    pub fn new() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("watch SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("watch SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("watch SIGHUP")?,
        })
    }

    /// Waits for the next signal, logging which. Cancel-safe (usable in `select!`): each wait is
    /// on the signal streams' own cancel-safe `recv`.
    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => { log::info!("SIGTERM: stopping"); Signal::Stop }
            _ = self.interrupt.recv() => { log::info!("SIGINT: stopping"); Signal::Stop }
            _ = self.hangup.recv() => { log::info!("SIGHUP: reloading the config"); Signal::Reload }
        }
    }
}

/// The body of a service's `main`: loads the config at `file` with `load` (exit status 2 and the
/// reason logged if it is refused), stops there with a confirmation if `check`, else runs `run` on
/// a multi-threaded tokio runtime, given the config and its file (exit status 1 and the error
/// chain logged if it fails). Fatal
/// errors are logged under the target `service`, the service's own name.
pub fn run_service<C, F>(
    service: &'static str,
    file: &Path,
    check: bool,
    load: impl FnOnce(&Path) -> Result<C, ConfigError>,
    run: impl FnOnce(C, PathBuf) -> F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let config = match load(file) {
        Ok(config) => config,
        Err(e) => {
            log::error!(target: service, "{e}");
            return ExitCode::from(2);
        }
    };
    if check {
        println!("config {} is valid", file.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!(target: service, "start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, file.to_owned())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!(target: service, "{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(deserialize_with = "duration")]
        wait: Duration,
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let file = Path::new("/etc/x.toml");
        let e = parse::<Sample>(file, "wait = \"5s\"\nwiat = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("config /etc/x.toml: line 2: `wiat = 1`: unknown field `wiat`"), "{e}");
        let e = parse::<Sample>(file, "wait = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1: `wait = \"soon\"`: \"soon\" is not a duration like \"90s\""), "{e}");
        assert_eq!(
            without_url_passwords("store = \"postgres://gate:hunter2@db/gate\" # or https://a:b@c"),
            "store = \"postgres://gate:***@db/gate\" # or https://a:***@c"
        );
        assert_eq!(without_url_passwords("url = \"https://example.net/x\""), "url = \"https://example.net/x\"");
        assert_eq!(parse::<Sample>(file, "wait = \"1m 30s\"\n").unwrap().wait, Duration::from_secs(90));
        let e = load::<Sample>(Path::new("/nonexistent/gate.toml")).unwrap_err().to_string();
        assert!(e.starts_with("config /nonexistent/gate.toml: cannot read:"), "{e}");
    }
}
