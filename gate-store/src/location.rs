//! Where a store is, as the daemon's config (`approval.store`) or `gatectl --store` names it: a
//! file path (SQLite, one host) or a `postgres://` URL (a database the hosts of a cluster share),
//! whose password is kept in a file of its own that only the daemon's user may read, never in
//! the URL (a config is often readable by more people than the database's password should be).
use std::{
    fmt, fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crate::{Sealing, Store, StoreError, StoreKey};

/// What opening a store takes besides its location: for PostgreSQL, its password and the CA of
/// its certificate; for either, the store key its secrets are sealed with (required for
/// PostgreSQL: a database the hosts share, and its dumps and backups, must open nothing alone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreAccess {
    /// The password, alone in a file only its owner may read.
    pub password_file: Option<PathBuf>,
    /// The CA that signed the database server's certificate (PEM); else the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The store key new secrets are sealed with (`gatectl store new-key FILE`).
    pub key_file: Option<PathBuf>,
    /// A store key being rotated out: secrets sealed with it still open.
    pub previous_key_file: Option<PathBuf>,
}

impl StoreAccess {
    /// The keys of `key_file` and `previous_key_file`.
    ///
    /// # Errors
    /// A key file is unreadable, readable by others, or not a key; a previous key without a
    /// current one.
    pub fn sealing(&self) -> Result<Sealing, StoreError> {
        match (&self.key_file, &self.previous_key_file) {
            (None, None) => Ok(Sealing::default()),
            (None, Some(_)) => Err(StoreError::Invalid("a previous store key is given without a current one".into())),
            (Some(current), previous) => {
                let previous = previous.as_deref().map(StoreKey::read).transpose()?;
                Ok(Sealing::new(StoreKey::read(current)?, previous.into_iter().collect()))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database: a `postgres://` or `postgresql://` URL without a password.
    Postgres(String),
}

impl StoreLocation {
    /// Reads a location: a URL of PostgreSQL's schemes, else a file path.
    ///
    /// # Errors
    /// [`StoreError::Invalid`]: a URL PostgreSQL's client does not parse, or one that carries
    /// a password.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Ok(Self::File(PathBuf::from(text)));
        }
        let config: postgres::Config =
            text.parse().map_err(|e| StoreError::Invalid(format!("{}: not a PostgreSQL URL: {e}", redact(text))))?;
        if config.get_password().is_some() {
            return Err(StoreError::Invalid(format!(
                "{}: the URL carries a password; put it in a file of its own (approval.store_password_file, \
                 mode 0600) and leave it out of the URL",
                redact(text)
            )));
        }
        Ok(Self::Postgres(text.to_owned()))
    }

    /// Opens the store, making it if there is none: an SQLite file only where no file is (see
    /// [`Store::open_or_create`]); a PostgreSQL database's tables wherever they are missing (the
    /// database itself must exist: a mistyped name fails). `true` if it was made.
    ///
    /// # Errors
    /// As [`Store::open_or_create`] or [`Store::connect`]; the password file is unreadable,
    /// or others than its owner may read it.
    pub fn open_or_create(&self, access: &StoreAccess) -> Result<(Store, bool), StoreError> {
        let sealing = access.sealing()?;
        let (mut store, made) = match self {
            Self::File(path) => Store::open_or_create(path)?,
            Self::Postgres(url) => {
                require_key(url, &sealing)?;
                let password = read_password(access.password_file.as_deref())?;
                Store::connect_with(url, password.as_deref(), access.ca_file.as_deref())?
            }
        };
        store.set_sealing(sealing);
        Ok((store, made))
    }

    /// Opens the existing store (SQLite: never makes one).
    ///
    /// # Errors
    /// As [`Self::open_or_create`], and [`StoreError::Missing`] for a missing file.
    pub fn open(&self, access: &StoreAccess) -> Result<Store, StoreError> {
        match self {
            Self::File(path) => {
                let sealing = access.sealing()?;
                let mut store = Store::open(path)?;
                store.set_sealing(sealing);
                Ok(store)
            }
            Self::Postgres(_) => self.open_or_create(access).map(|(store, _)| store),
        }
    }

    /// Checks what opening the store needs without opening it (for `--check`, offline): the
    /// store keys; for PostgreSQL also that a key is given, the password file (readable, by
    /// its owner alone) and the TLS settings (a CA file that is one, with `sslmode=require`).
    ///
    /// # Errors
    /// The first of those that fails, as opening would report it.
    pub fn check_offline(&self, access: &StoreAccess) -> Result<(), StoreError> {
        let sealing = access.sealing()?;
        if let Self::Postgres(url) = self {
            require_key(url, &sealing)?;
            read_password(access.password_file.as_deref())?;
            crate::postgres::settings(url, access.ca_file.as_deref())?;
        }
        Ok(())
    }

    /// Whether this is a file that exists, or a database (which always may be asked).
    #[must_use]
    pub fn exists(&self) -> bool {
        match self {
            Self::File(path) => path.exists(),
            Self::Postgres(_) => true,
        }
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// A URL as it may be shown: any password in it replaced.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{name}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// A shared store's secrets are sealed: refuses `url` without a store key.
fn require_key(url: &str, sealing: &Sealing) -> Result<(), StoreError> {
    if sealing.is_on() {
        return Ok(());
    }
    Err(StoreError::Invalid(format!(
        "{}: a shared store's secrets are sealed with the cluster's store key: set approval.store_key_file \
         (`gatectl store new-key FILE` makes one; every host needs the same)",
        redact(url)
    )))
}

/// The database password from its file (its first line), after checking that no one but its
/// owner may read it.
fn read_password(file: Option<&Path>) -> Result<Option<String>, StoreError> {
    let Some(file) = file else { return Ok(None) };
    let io = |source| StoreError::Open { path: file.to_owned(), source };
    let meta = fs::metadata(file).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Invalid(format!(
            "{}: mode {mode:o} lets others read the database's password; chmod 600 it",
            file.display()
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid && euid != 0 {
        return Err(StoreError::Invalid(format!(
            "{}: owned by uid {}, not this process's",
            file.display(),
            meta.uid()
        )));
    }
    let text = fs::read_to_string(file).map_err(io)?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(StoreError::Invalid(format!("{}: holds no password", file.display())));
    }
    Ok(Some(password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_as_files_or_databases_and_never_carry_a_password() {
        assert_eq!(
            StoreLocation::parse("/var/lib/gate/gate.db").unwrap(),
            StoreLocation::File("/var/lib/gate/gate.db".into())
        );
        let url = "postgres://gate@db.example.net:5432/gate?sslmode=require";
        assert_eq!(StoreLocation::parse(url).unwrap(), StoreLocation::Postgres(url.into()));
        let error = StoreLocation::parse("postgresql://gate:hunter2@db/gate").unwrap_err().to_string();
        assert!(error.contains("password") && !error.contains("hunter2"), "{error}");
        assert!(StoreLocation::parse("postgres://db:notaport/gate").is_err());
        assert_eq!(redact("postgres://gate:secret@db/gate"), "postgres://gate:***@db/gate");
    }

    #[test]
    fn a_password_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        fs::write(&file, "s3cret\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_password(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("chmod 600") && !error.contains("s3cret"), "{error}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(Some(&file)).unwrap().as_deref(), Some("s3cret"));
    }
}
