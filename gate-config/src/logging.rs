//! One log format for the daemon and the front. On a terminal or in a file: env_logger's lines
//! with the record's fields after the message as ` key=value` (quoted when the value holds a
//! space, a quote or an `=`), which log systems index (`reason=bad_hmac client=alice`). Under
//! systemd (stderr is the journal's stream, `$JOURNAL_STREAM`): journald's native protocol, each
//! field its own journal field (`REASON=bad_hmac`, `journalctl REASON=bad_hmac`), and the level
//! as the entry's priority. `RUST_LOG` filters both ways (the services log `info` by default,
//! gatectl `warn`: what the libraries it runs say of trouble, beside its own output).
use std::io::Write as _;

use log::{
    Level, Log, Metadata, Record,
    kv::{Key, Value, VisitSource},
};

/// Installs the logger of a binary, logging from `default` up unless `RUST_LOG` says otherwise.
pub fn init(default: &str) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_owned());
    if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => {
                let filter = env_filter::Builder::new().parse(&directives).build();
                log::set_max_level(filter.filter());
                if log::set_boxed_logger(Box::new(Journal { filter, journal })).is_ok() {
                    return;
                }
            }
            Err(e) => eprintln!("journald cannot be reached ({e}); logging to stderr"),
        }
    }
    env_logger::Builder::new().parse_filters(&directives).format_key_values(write_fields).init();
}

/// journald, behind the same `RUST_LOG` filter as the stderr logger.
struct Journal {
    filter: env_filter::Filter,
    journal: systemd_journal_logger::JournalLog,
}

impl Log for Journal {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.filter.matches(record) {
            self.journal.log(record);
        }
    }

    fn flush(&self) {
        self.journal.flush();
    }
}

/// ` key=value` for each field of a record.
fn write_fields(out: &mut env_logger::fmt::Formatter, fields: &dyn log::kv::Source) -> std::io::Result<()> {
    struct Writer<'a>(&'a mut env_logger::fmt::Formatter);
    impl<'kvs> VisitSource<'kvs> for Writer<'_> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            write!(self.0, " {}", field(key.as_str(), &value.to_string()))?;
            Ok(())
        }
    }
    fields.visit(&mut Writer(out)).map_err(std::io::Error::other)
}

/// `key=value`, the value quoted (Rust's escapes) when it would not read back as one word.
fn field(key: &str, value: &str) -> String {
    if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) {
        format!("{key}={value:?}")
    } else {
        format!("{key}={value}")
    }
}

/// Logs `message` at `level` for `target` (the caller's `module_path!()`) with `fields`, each
/// a `(key, value)`: what the log macros do, with fields chosen at run time (a client only
/// when one is known).
pub fn with_fields(level: Level, target: &str, fields: &[(&str, &str)], message: std::fmt::Arguments<'_>) {
    let logger = log::logger();
    let record = Record::builder().level(level).target(target).args(message).key_values(&fields).build();
    if logger.enabled(record.metadata()) {
        logger.log(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_quoted_only_when_it_would_not_read_back_as_one_word() {
        assert_eq!(field("reason", "bad_hmac"), "reason=bad_hmac");
        assert_eq!(field("address", "2001:db8::7"), "address=2001:db8::7");
        assert_eq!(field("client", "a b"), "client=\"a b\"");
        assert_eq!(field("client", "x=\"y\""), "client=\"x=\\\"y\\\"\"");
        assert_eq!(field("client", "line\nbreak"), "client=\"line\\nbreak\"");
        assert_eq!(field("gate", ""), "gate=\"\"");
    }
}
