//! OpenVPN's management interface, as far as the gate uses it: every client authentication
//! (`management-client-auth`) comes here and is answered allow or deny, and established and
//! ended sessions are followed to show who is connected. Passwords (session tokens) are never
//! logged.
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// Decides who may connect.
pub trait Authorizer: Send + Sync {
    /// A new session by the holder of certificate `common_name`, who sent `username` and
    /// `password`.
    ///
    /// # Errors
    /// Why it is refused (logged, and told to OpenVPN).
    fn connect(&self, common_name: &str, username: &str, password: &str) -> Result<(), String>;

    /// A renegotiation of a session that was allowed.
    ///
    /// # Errors
    /// Why it is refused.
    fn reauth(&self, common_name: &str) -> Result<(), String>;
}

/// Told what the interface says beyond logins.
pub trait Observer {
    /// The set of sessions changed.
    fn sessions_changed(&self);
    /// The server's byte counts since it started.
    fn traffic(&self, received: u64, sent: u64);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Reauth,
    Established,
    Disconnect,
}

/// A client event: its header line, then `ENV` lines up to `ENV,END`.
#[derive(Debug)]
pub struct ClientEvent {
    pub kind: Kind,
    pub cid: u64,
    pub kid: Option<u64>,
    pub env: HashMap<String, String>,
}

/// What a line of the management interface completes.
#[derive(Debug)]
pub enum Event {
    /// A session listed in a `status 3` answer: (client id, common name).
    Listed(u64, String),
    /// A client event, its `ENV` lines read.
    Client(ClientEvent),
    /// A `load-stats` answer: bytes the server received and sent on its link since it started.
    Traffic { received: u64, sent: u64 },
}

/// How often the server is asked for its byte counts (`load-stats`), for the metrics page.
pub const TRAFFIC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// `ENV` lines kept for one event: OpenVPN sends a few dozen; a stream of more is not one.
pub const MAX_ENV_LINES: usize = 1024;

/// Reads the management interface line by line (no I/O: `serve` feeds it, and so does the
/// fuzz target `fuzz/fuzz_targets/management.rs`).
#[derive(Default)]
pub struct Reader {
    pending: Option<ClientEvent>,
    /// The columns of the status answer's CLIENT_LIST rows, once its header is seen.
    listed: Vec<String>,
}

impl Reader {
    /// Takes one line (without its newline); returns the event it completes, if any.
    pub fn read(&mut self, line: &str) -> Option<Event> {
        if let Some(columns) = line.strip_prefix("HEADER\tCLIENT_LIST\t") {
            self.listed = columns.split('\t').map(str::to_owned).collect();
            return None;
        }
        if let Some((cid, name)) = listed_session(&self.listed, line) {
            return Some(Event::Listed(cid, name));
        }
        if let Some(traffic) = load_stats(line) {
            return Some(traffic);
        }
        if let Some(event) = header(line) {
            self.pending = Some(event);
            return None;
        }
        let env = line.strip_prefix(">CLIENT:ENV,")?;
        if env != "END" {
            if let (Some(event), Some((key, value))) = (self.pending.as_mut(), env.split_once('='))
                && event.env.len() < MAX_ENV_LINES
            {
                event.env.insert(key.to_owned(), value.to_owned());
            }
            return None;
        }
        self.pending.take().map(Event::Client)
    }
}

/// Sessions by client id: the certificate name.
pub type Sessions = Arc<Mutex<BTreeMap<u64, String>>>;

fn header(line: &str) -> Option<ClientEvent> {
    let rest = line.strip_prefix(">CLIENT:")?;
    let (kind, args) = rest.split_once(',')?;
    let kind = match kind {
        "CONNECT" => Kind::Connect,
        "REAUTH" => Kind::Reauth,
        "ESTABLISHED" => Kind::Established,
        "DISCONNECT" => Kind::Disconnect,
        _ => return None,
    };
    let mut ids = args.split(',').map(|v| v.parse::<u64>().ok());
    let cid = ids.next().flatten()?;
    let kid = ids.next().flatten();
    Some(ClientEvent { kind, cid, kid, env: HashMap::new() })
}

/// The sessions in a `status 3` answer (tab-separated): `(client id, common name)` of each
/// `CLIENT_LIST` row, its columns found by the `HEADER` row.
fn listed_session(header: &[String], line: &str) -> Option<(u64, String)> {
    let fields: Vec<&str> = line.strip_prefix("CLIENT_LIST\t")?.split('\t').collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let name = fields.get(column("Common Name")?)?;
    let cid = fields.get(column("Client ID")?)?.parse().ok()?;
    Some((cid, (*name).to_owned()))
}

/// The byte counts of a `load-stats` answer: `SUCCESS: nclients=N,bytesin=B,bytesout=B`.
fn load_stats(line: &str) -> Option<Event> {
    let fields = line.strip_prefix("SUCCESS: nclients=")?;
    let value =
        |key: &str| fields.split(',').find_map(|field| field.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok());
    Some(Event::Traffic { received: value("bytesin")?, sent: value("bytesout")? })
}

/// Talks to the management socket until OpenVPN closes it. `observer` hears whenever the set of
/// sessions changes, and the server's byte counts, asked for every [`TRAFFIC_EVERY`];
/// `commands` are written as they come (e.g. `kill <name>`). With `resync` (a server adopted
/// from an earlier daemon), the sessions it already carries are asked for first (`status 3`).
///
/// # Errors
/// The socket cannot be reached or written.
pub async fn serve(
    socket: &Path,
    server: &str,
    authorizer: Arc<dyn Authorizer>,
    sessions: Sessions,
    observer: &impl Observer,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<String>,
    resync: bool,
) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reader = Reader::default();
    if resync {
        write.write_all(b"status 3\n").await?;
    }
    let mut ask_traffic = tokio::time::interval(TRAFFIC_EVERY);
    loop {
        let line = tokio::select! {
            _ = ask_traffic.tick() => {
                write.write_all(b"load-stats\n").await?;
                continue;
            }
            line = lines.next_line() => match line? {
                Some(line) => line,
                None => break,
            },
            command = commands.recv() => {
                if let Some(command) = command {
                    write.write_all(format!("{command}\n").as_bytes()).await?;
                }
                continue;
            }
        };
        let event = match reader.read(&line) {
            None => continue,
            Some(Event::Listed(cid, name)) => {
                sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(cid, name);
                observer.sessions_changed();
                continue;
            }
            Some(Event::Traffic { received, sent }) => {
                observer.traffic(received, sent);
                continue;
            }
            Some(Event::Client(event)) => event,
        };
        let name = event.env.get("common_name").cloned().unwrap_or_default();
        let field = |key: &str| event.env.get(key).map_or("", String::as_str);
        match event.kind {
            Kind::Connect | Kind::Reauth => {
                let verdict = if event.kind == Kind::Connect {
                    authorizer.connect(&name, field("username"), field("password"))
                } else {
                    let known = sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&event.cid)
                        == Some(&name);
                    if known {
                        authorizer.reauth(&name)
                    } else {
                        authorizer.connect(&name, field("username"), field("password"))
                    }
                };
                let kid = event.kid.unwrap_or(0);
                let fields = [("server", server), ("client", name.as_str()), ("address", field("untrusted_ip"))];
                let command = match &verdict {
                    Ok(()) => {
                        gate_config::logging::with_fields(
                            log::Level::Info,
                            module_path!(),
                            &fields,
                            format_args!("openvpn {server}: {name:?} from {} allowed", field("untrusted_ip")),
                        );
                        format!("client-auth-nt {} {kid}\n", event.cid)
                    }
                    Err(why) => {
                        gate_config::logging::with_fields(
                            log::Level::Warn,
                            module_path!(),
                            &[fields[0], fields[1], fields[2], ("reason", why.as_str())],
                            format_args!("openvpn {server}: {name:?} from {} refused: {why}", field("untrusted_ip")),
                        );
                        format!("client-deny {} {kid} \"refused by the gate\"\n", event.cid)
                    }
                };
                write.write_all(command.as_bytes()).await?;
            }
            Kind::Established => {
                sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(event.cid, name);
                observer.sessions_changed();
            }
            Kind::Disconnect => {
                sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&event.cid);
                observer.sessions_changed();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        let event = header(">CLIENT:CONNECT,7,1").unwrap();
        assert_eq!((event.kind, event.cid, event.kid), (Kind::Connect, 7, Some(1)));
        let event = header(">CLIENT:ESTABLISHED,7").unwrap();
        assert_eq!((event.kind, event.kid), (Kind::Established, None));
        assert!(header(">CLIENT:ENV,common_name=alice").is_none());
        assert!(header(">INFO:OpenVPN Management Interface").is_none());
        assert!(header(">CLIENT:CONNECT,x,1").is_none());
    }

    #[test]
    fn a_client_event_completes_at_env_end_with_its_env() {
        let mut reader = Reader::default();
        assert!(reader.read(">CLIENT:ENV,common_name=stray").is_none(), "ENV before any header");
        assert!(reader.read(">CLIENT:ENV,END").is_none(), "END before any header");
        assert!(reader.read(">CLIENT:CONNECT,7,1").is_none());
        assert!(reader.read(">CLIENT:ENV,common_name=alice").is_none());
        assert!(reader.read(">CLIENT:ENV,password=a=b").is_none());
        let Some(Event::Client(event)) = reader.read(">CLIENT:ENV,END") else { panic!("no event") };
        assert_eq!((event.kind, event.cid, event.kid), (Kind::Connect, 7, Some(1)));
        assert_eq!(event.env.get("common_name").map(String::as_str), Some("alice"));
        assert_eq!(event.env.get("password").map(String::as_str), Some("a=b"), "split at the first =");
        assert!(reader.read(">CLIENT:ENV,END").is_none(), "an event completes once");
    }

    #[test]
    fn an_event_keeps_at_most_max_env_lines() {
        let mut reader = Reader::default();
        reader.read(">CLIENT:CONNECT,1,0");
        for n in 0..MAX_ENV_LINES + 10 {
            reader.read(&format!(">CLIENT:ENV,UV_{n}=x"));
        }
        let Some(Event::Client(event)) = reader.read(">CLIENT:ENV,END") else { panic!("no event") };
        assert_eq!(event.env.len(), MAX_ENV_LINES);
    }

    #[test]
    fn a_status_answer_gives_the_sessions_by_its_header() {
        let header: Vec<String> = "Common Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID\tPeer ID\tData Channel Cipher"
            .split('\t')
            .map(str::to_owned)
            .collect();
        let row = "CLIENT_LIST\talice\t192.0.2.2:50000\t10.8.0.2\t\t100\t200\t2026-11-30 21:00:00\t1796072400\talice\t7\t0\tAES-256-GCM";
        assert_eq!(listed_session(&header, row), Some((7, "alice".to_owned())));
        assert_eq!(listed_session(&[], row), None, "no header seen: no guess");
        assert_eq!(listed_session(&header, "ROUTING_TABLE\t10.8.0.2\talice"), None);
    }

    #[test]
    fn a_load_stats_answer_gives_the_byte_counts() {
        let mut reader = Reader::default();
        let event = reader.read("SUCCESS: nclients=2,bytesin=5373,bytesout=4519");
        assert!(matches!(event, Some(Event::Traffic { received: 5373, sent: 4519 })), "{event:?}");
        for other in
            ["SUCCESS: client-auth command succeeded", "SUCCESS: nclients=1,bytesin=x,bytesout=1", "nclients=1"]
        {
            assert!(reader.read(other).is_none(), "{other}");
        }
    }
}
