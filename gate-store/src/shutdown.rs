//! Shutdown states in the store, so a restart honours them: what the last accepted
//! notification said, and what the operator set by hand (which wins while it is set).
use gate_notify::{Notification, Part, Published, State};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::{
    Store, StoreError,
    store::{from_sql, to_sql},
};

pub const FROM_NOTIFICATION: &str = "notification";
pub const FROM_OPERATOR: &str = "operator";

/// One part's state from one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownRow {
    pub part: Part,
    pub source: String,
    pub state: State,
    pub message: String,
    pub set_at: u64,
}

impl Store {
    /// The serial of the last notification accepted on `host` (0: none yet).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn last_notification_serial(&self, host: &str) -> Result<u64, StoreError> {
        let serial: Option<i64> = self
            .connection()
            .query_row("SELECT serial FROM notifications_accepted WHERE host = ?1", [host], |r| r.get(0))
            .optional()?;
        Ok(serial.map_or(0, from_sql))
    }

    /// Records an accepted notification: its states and its serial, at once.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn record_notification(&mut self, notification: &Notification, host: &str, now: u64) -> Result<(), StoreError> {
        let tx = self.connection_mut().transaction_with_behavior(TransactionBehavior::Immediate)?;
        for part in Part::ALL {
            tx.execute(
                "INSERT INTO shutdown (part, source, state, message, set_at, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (part, source, host) DO UPDATE SET state = excluded.state, message = excluded.message, \
                 set_at = excluded.set_at",
                params![
                    part.name(),
                    FROM_NOTIFICATION,
                    notification.state(part).name(),
                    notification.message,
                    to_sql(now),
                    host
                ],
            )?;
        }
        tx.execute(
            "INSERT INTO notifications_accepted (host, serial, accepted_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (host) DO UPDATE SET serial = excluded.serial, accepted_at = excluded.accepted_at",
            params![host, to_sql(notification.serial), to_sql(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets (`Some`) or clears (`None`) the operator's state for `part`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn set_operator_state(
        &self,
        part: Part,
        state: Option<State>,
        message: &str,
        host: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        match state {
            Some(state) => self.connection().execute(
                "INSERT INTO shutdown (part, source, state, message, set_at, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (part, source, host) DO UPDATE SET state = excluded.state, message = excluded.message, \
                 set_at = excluded.set_at",
                params![part.name(), FROM_OPERATOR, state.name(), message, to_sql(now), host],
            )?,
            None => self.connection().execute(
                "DELETE FROM shutdown WHERE part = ?1 AND source = ?2 AND host = ?3",
                params![part.name(), FROM_OPERATOR, host],
            )?,
        };
        Ok(())
    }

    /// Every stored state of `host`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn shutdown_rows(&self, host: &str) -> Result<Vec<ShutdownRow>, StoreError> {
        let mut statement = self.connection().prepare(
            "SELECT part, source, state, message, set_at FROM shutdown WHERE host = ?1 ORDER BY part, source",
        )?;
        let rows = statement.query_map([host], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (part, source, state, message, set_at) = row?;
            let Some(part) = Part::parse(&part) else { continue };
            let state = if state == "disabled" { State::Disabled } else { State::Ok };
            out.push(ShutdownRow { part, source, state, message, set_at: from_sql(set_at) });
        }
        Ok(out)
    }

    /// The states in force: the operator's where set, else the last notification's, else ok.
    /// The message is the operator's if it disabled anything, else the notification's.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn effective_shutdown(&self, host: &str) -> Result<Published, StoreError> {
        let rows = self.shutdown_rows(host)?;
        let pick = |part: Part| {
            rows.iter()
                .find(|r| r.part == part && r.source == FROM_OPERATOR)
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
