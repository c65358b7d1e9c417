//! A config's reference, key by key, for its man page (gate.toml(5), gate-web.toml(5)): each
//! config keeps a table of [`ConfigKey`]s beside its types, and its tests hold the table to the
//! types both ways with [`accepted_keys`] (every key the parser takes is documented, every
//! documented key is taken) and [`parse_raw`] (every documented default is what the parser
//! fills in). So the page cannot drift from what the daemon reads.
use std::path::Path;

use serde::de::DeserializeOwned;

/// One key of a config file.
#[derive(Clone, Copy, Debug)]
pub struct ConfigKey {
    /// The table it sits in: `""` for the top level, `"leases"` for `[leases]`, `"gate"` for
    /// the `[[gate]]` array of tables (see [`ConfigTable`]).
    pub table: &'static str,
    pub name: &'static str,
    /// Its value when left out, as TOML (`"\"3m\""`, `"65536"`); `None` when it has none (a
    /// required key, or an optional one whose absence means "not set": see `text`).
    pub default: Option<&'static str>,
    /// What it is and what it does, one paragraph of plain text.
    pub text: &'static str,
}

/// One table of a config file.
#[derive(Clone, Copy, Debug)]
pub struct ConfigTable {
    pub name: &'static str,
    /// `[[name]]`: an array of tables, each entry one thing (an interface, a gate).
    pub array: bool,
    /// What the table is for, one paragraph.
    pub text: &'static str,
    /// For an array of tables: the smallest entry the parser takes (its required keys, one a
    /// line), which the default checks put a key beside and the example config shows.
    pub minimal: &'static str,
    /// An array of tables a config needs at least one entry of (`[[interface]]`, `[[gate]]`):
    /// the smallest config holds its minimal entry.
    pub required: bool,
}

impl ConfigTable {
    /// How the table opens in a file: `[name]`, or `[[name]]` for an array of tables.
    #[must_use]
    pub fn header(&self) -> String {
        if self.array { format!("[[{}]]", self.name) } else { format!("[{}]", self.name) }
    }

    /// The table's header and its minimal entry (empty for a plain table), as TOML lines.
    #[must_use]
    pub fn minimal_entry(&self) -> String {
        let minimal = self.minimal.trim_end();
        if minimal.is_empty() { format!("{}\n", self.header()) } else { format!("{}\n{minimal}\n", self.header()) }
    }
}

/// Whether `entry` (TOML lines) sets `name`.
#[must_use]
pub fn sets(entry: &str, name: &str) -> bool {
    entry.lines().any(|line| line.split_once('=').is_some_and(|(key, _)| key.trim() == name))
}

/// The smallest config: `top` (the top-level keys every config needs), then the minimal entry of
/// every required array of tables.
#[must_use]
pub fn smallest_config(top: &str, tables: &[ConfigTable]) -> String {
    let mut text = String::new();
    if !top.is_empty() {
        text.push_str(top.trim_end());
        text.push('\n');
    }
    for table in tables.iter().filter(|t| t.array && t.required) {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&table.minimal_entry());
    }
    text
}

/// The keys the parser of `T` takes in `table` (`""`: the top level; `array`: `[[table]]`),
/// read from the error it gives for a key that does not exist. Needs `T` to deny unknown keys.
///
/// # Panics
/// If the parser takes an unknown key or its error does not list the expected ones.
#[must_use]
pub fn accepted_keys<T: DeserializeOwned>(table: &str, array: bool) -> Vec<String> {
    const PROBE: &str = "no_such_key_probe";
    let header = match (table, array) {
        ("", _) => String::new(),
        (name, true) => format!("[[{name}]]\n"),
        (name, false) => format!("[{name}]\n"),
    };
    let text = format!("{header}{PROBE} = 0\n");
    let Err(error) = crate::parse::<T>(Path::new("probe.toml"), &text) else {
        panic!("table {table:?} took an unknown key: it must deny unknown fields");
    };
    let message = error.to_string();
    let (_, expected) =
        message.split_once("expected ").unwrap_or_else(|| panic!("table {table:?}: no expected keys in {message:?}"));
    let expected = expected.split_once("there are no fields").map_or(expected, |_| "");
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Parses `text` as `T` without the checks of values a config's `load` adds: what the
/// deserializer alone makes of it.
///
/// # Errors
/// As [`crate::parse`].
pub fn parse_raw<T: DeserializeOwned>(text: &str) -> Result<T, crate::ConfigError> {
    crate::parse(Path::new("reference.toml"), text)
}

/// The TOML text of a config holding `top` (the top-level keys every config needs) and one key
/// set: `[table]` (or `[[table]]` with its minimal entry) then `name = value`; at the top level
/// just the line after `top`.
#[must_use]
pub fn with_key(top: &str, table: Option<&ConfigTable>, name: &str, value: &str) -> String {
    format!("{}{name} = {value}\n", without_keys(top, table))
}

/// As [`with_key`] with no key set: the table's defaults.
#[must_use]
pub fn without_keys(top: &str, table: Option<&ConfigTable>) -> String {
    match table {
        None => format!("{top}\n"),
        Some(t) => format!("{top}\n{}", t.minimal_entry()),
    }
}

/// Checks a config's reference against its parser `T`: every table's keys are the documented
/// ones, each key documented once, and every documented default is what leaving the key out
/// gives (`top`: the top-level keys every config needs, as TOML). Returns every difference
/// found, one a line (empty: they agree).
#[must_use]
pub fn disagreements<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
    top: &str,
    tables: &[ConfigTable],
    keys: &[ConfigKey],
) -> Vec<String> {
    let mut found = Vec::new();
    let table_names: Vec<&str> = tables.iter().map(|t| t.name).collect();
    for key in keys {
        if !key.table.is_empty() && !table_names.contains(&key.table) {
            found.push(format!("{}.{}: the reference has no table {:?}", key.table, key.name, key.table));
        }
        if keys.iter().filter(|k| k.table == key.table && k.name == key.name).count() > 1 {
            found.push(format!("{}.{}: documented twice", key.table, key.name));
        }
    }
    let top_level = accepted_keys::<T>("", false);
    let mut scopes: Vec<(&str, bool)> = vec![("", false)];
    scopes.extend(tables.iter().map(|t| (t.name, t.array)));
    for (table, array) in scopes {
        let accepted = if table.is_empty() { top_level.clone() } else { accepted_keys::<T>(table, array) };
        for name in &accepted {
            let documented = keys.iter().any(|k| k.table == table && k.name == *name)
                || (table.is_empty() && table_names.contains(&name.as_str()));
            if !documented {
                found.push(format!("[{table}] {name}: taken by the parser, not documented"));
            }
        }
        for key in keys.iter().filter(|k| k.table == table) {
            if !accepted.iter().any(|a| a == key.name) {
                found.push(format!("[{table}] {}: documented, not taken by the parser", key.name));
            }
        }
        if !table.is_empty() && !top_level.iter().any(|a| a == table) {
            found.push(format!("[{table}]: documented, not a table the parser takes"));
        }
    }
    for key in keys {
        let Some(default) = key.default else { continue };
        let table = tables.iter().find(|t| t.name == key.table);
        let set = parse_raw::<T>(&with_key(top, table, key.name, default));
        let unset = parse_raw::<T>(&without_keys(top, table));
        match (set, unset) {
            (Ok(set), Ok(unset)) if set == unset => {}
            (Ok(_), Ok(_)) => {
                found.push(format!(
                    "[{}] {} = {default}: documented default, not what leaving it out gives",
                    key.table, key.name
                ));
            }
            (Err(e), _) | (_, Err(e)) => found.push(format!("[{}] {} = {default}: {e}", key.table, key.name)),
        }
    }
    found
}
