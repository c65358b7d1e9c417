//! Shutdown states in the store, so a restart honours them: what the last accepted
//! notification said, and what the operator set by hand (which wins while it is set).
use crate::{
    Store, StoreError,
    sql::{Tx, args},
    store::{from_sql, to_sql},
};
use gate_notify::{Notification, Part, Published, State};

pub const FROM_NOTIFICATION: &str = "notification";
pub const FROM_OPERATOR: &str = "operator";
/// The host of an operator's state that applies to every host of a cluster (one host's own
/// operator state wins over it).
pub const ALL_HOSTS: &str = "*";

/// One part's state from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownRow {
    pub part: Part,
    pub source: String,
    pub state: State,
    pub message: String,
    pub set_at: u64,
    /// The host it was set for, or [`ALL_HOSTS`].
    pub host: String,
}

/// Sets one part's state from one source on one host.
const UPSERT_STATE: &str = "INSERT INTO shutdown (part, source, state, message, set_at, host) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (part, source, host) DO UPDATE SET state = excluded.state, \
     message = excluded.message, set_at = excluded.set_at";

impl Store {
    /// The serial of the last notification accepted on `host` (0: none yet).
    ///
    /// # Errors
    /// The database failed.
    pub fn last_notification_serial(&self, host: &str) -> Result<u64, StoreError> {
        match self.db().query_opt("SELECT serial FROM notifications_accepted WHERE host = ?1", args![host])? {
            Some(mut row) => Ok(from_sql(row.int(0)?)),
            None => Ok(0),
        }
    }

    /// Records an accepted notification: its states and its serial, at once.
    ///
    /// # Errors
    /// The database failed.
    pub fn record_notification(&mut self, notification: &Notification, host: &str, now: u64) -> Result<(), StoreError> {
        self.db().transaction(Tx::Rows, |db| {
            for part in Part::ALL {
                db.execute(
                    UPSERT_STATE,
                    args![
                        part.name(),
                        FROM_NOTIFICATION,
                        notification.state(part).name(),
                        &notification.message,
                        to_sql(now),
                        host
                    ],
                )?;
            }
            db.execute(
                "INSERT INTO notifications_accepted (host, serial, accepted_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (host) DO UPDATE SET serial = excluded.serial, accepted_at = excluded.accepted_at",
                args![host, to_sql(notification.serial), to_sql(now)],
            )?;
            Ok(())
        })
    }

    /// Sets (`Some`) or clears (`None`) the operator's state for `part`.
    ///
    /// # Errors
    /// The database failed.
    pub fn set_operator_state(
        &self,
        part: Part,
        state: Option<State>,
        message: &str,
        host: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        match state {
            Some(state) => self
                .db()
                .execute(UPSERT_STATE, args![part.name(), FROM_OPERATOR, state.name(), message, to_sql(now), host])?,
            None => self.db().execute(
                "DELETE FROM shutdown WHERE part = ?1 AND source = ?2 AND host = ?3",
                args![part.name(), FROM_OPERATOR, host],
            )?,
        };
        Ok(())
    }

    /// Every stored state of `host`, and the operator's for every host.
    ///
    /// # Errors
    /// The database failed.
    pub fn shutdown_rows(&self, host: &str) -> Result<Vec<ShutdownRow>, StoreError> {
        let rows = self.db().query(
            "SELECT part, source, state, message, set_at, host FROM shutdown \
             WHERE host = ?1 OR (host = ?2 AND source = ?3) ORDER BY part, source, host",
            args![host, ALL_HOSTS, FROM_OPERATOR],
        )?;
        let mut out = Vec::new();
        for mut row in rows {
            let Some(part) = Part::parse(&row.text(0)?) else { continue };
            let state = if row.text(2)? == "disabled" { State::Disabled } else { State::Ok };
            out.push(ShutdownRow {
                part,
                source: row.text(1)?,
                state,
                message: row.text(3)?,
                set_at: from_sql(row.int(4)?),
                host: row.text(5)?,
            });
        }
        Ok(out)
    }

    /// The states in force: the operator's for this host where set, else the operator's for
    /// every host, else the last notification's, else ok. The message is the operator's if it
    /// disabled anything, else the notification's.
    ///
    /// # Errors
    /// The database failed.
    pub fn effective_shutdown(&self, host: &str) -> Result<Published, StoreError> {
        let rows = self.shutdown_rows(host)?;
        let pick = |part: Part| {
            let operator = |for_host: &str| {
                rows.iter().find(|r| r.part == part && r.source == FROM_OPERATOR && r.host == for_host)
            };
            operator(host)
                .or_else(|| operator(ALL_HOSTS))
                .or_else(|| rows.iter().find(|r| r.part == part && r.source == FROM_NOTIFICATION))
        };
        let mut published = Published::default();
        let mut message = String::new();
        for part in Part::ALL {
            if let Some(row) = pick(part) {
                let state = row.state;
                match part {
                    Part::Www => published.www = state,
                    Part::Web => published.web = state,
                    Part::Vpn => published.vpn = state,
                }
                if state == State::Disabled && message.is_empty() {
                    message.clone_from(&row.message);
                }
            }
        }
        published.message = message;
        Ok(published)
    }
}
