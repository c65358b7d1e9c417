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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connect,
    Reauth,
    Established,
    Disconnect,
}

/// A client event being read: its header line, then `ENV` lines up to `ENV,END`.
struct Pending {
    kind: Kind,
    cid: u64,
    kid: Option<u64>,
    env: HashMap<String, String>,
}

/// Sessions by client id: the certificate name.
pub type Sessions = Arc<Mutex<BTreeMap<u64, String>>>;

fn header(line: &str) -> Option<Pending> {
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
    Some(Pending { kind, cid, kid, env: HashMap::new() })
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

/// Talks to the management socket until OpenVPN closes it. `changed` runs whenever the set of
/// sessions changes; `commands` are written as they come (e.g. `kill <name>`). With `resync`
/// (a server adopted from an earlier daemon), the sessions it already carries are asked for
/// first (`status 3`).
///
/// # Errors
/// The socket cannot be reached or written.
pub async fn serve(
    socket: &Path,
    server: &str,
    authorizer: Arc<dyn Authorizer>,
    sessions: Sessions,
    changed: impl Fn(),
    mut commands: tokio::sync::mpsc::UnboundedReceiver<String>,
    resync: bool,
) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut pending: Option<Pending> = None;
    // The columns of the status answer's CLIENT_LIST rows, once its header is seen.
    let mut listed: Vec<String> = Vec::new();
    if resync {
        write.write_all(b"status 3\n").await?;
    }
    loop {
        let line = tokio::select! {
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
        if let Some(columns) = line.strip_prefix("HEADER\tCLIENT_LIST\t") {
            listed = columns.split('\t').map(str::to_owned).collect();
            continue;
        }
        if let Some((cid, name)) = listed_session(&listed, &line) {
            sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(cid, name);
            changed();
            continue;
        }
        if let Some(event) = header(&line) {
            pending = Some(event);
            continue;
        }
        let Some(env) = line.strip_prefix(">CLIENT:ENV,") else { continue };
        if env != "END" {
            if let (Some(event), Some((key, value))) = (pending.as_mut(), env.split_once('=')) {
                event.env.insert(key.to_owned(), value.to_owned());
            }
            continue;
        }
        let Some(event) = pending.take() else { continue };
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
                let command = match &verdict {
                    Ok(()) => {
                        log::info!("openvpn {server}: {name:?} from {} allowed", field("untrusted_ip"));
                        format!("client-auth-nt {} {kid}\n", event.cid)
                    }
                    Err(why) => {
                        log::warn!("openvpn {server}: {name:?} from {} refused: {why}", field("untrusted_ip"));
                        format!("client-deny {} {kid} \"refused by the gate\"\n", event.cid)
                    }
                };
                write.write_all(command.as_bytes()).await?;
            }
            Kind::Established => {
                sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(event.cid, name);
                changed();
            }
            Kind::Disconnect => {
                sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&event.cid);
                changed();
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
}
