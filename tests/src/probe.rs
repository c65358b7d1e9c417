//! Probes that tell what a remote user would see: a reply, silence (the gate dropped the packet:
//! no RST, no ICMP), or a refusal (RST or ICMP port unreachable: the packet reached the host).
use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns::Netns;

/// How long silence must last to count as silence. A reply on veth takes well under 1 ms.
pub const SILENCE: Duration = Duration::from_millis(400);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply,
    Silence,
    Refused,
}

fn classify(error: &std::io::Error) -> Outcome {
    match error.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Silence,
        _ => panic!("probe failed unexpectedly: {error}"),
    }
}

/// Sends one UDP datagram from `source` (inside `ns`) to `dest` and waits for an echo.
pub fn udp(ns: &Netns, source: IpAddr, dest: SocketAddr) -> Outcome {
    udp_within(ns, source, dest, SILENCE)
}

/// As [`udp`], waiting at most `wait` for the echo.
pub fn udp_within(ns: &Netns, source: IpAddr, dest: SocketAddr, wait: Duration) -> Outcome {
    ns.run(|| {
        let socket = UdpSocket::bind(SocketAddr::new(source, 0)).expect("bind probe socket");
        socket.connect(dest).expect("connect probe socket");
        socket.set_read_timeout(Some(wait)).expect("set timeout");
        if let Err(e) = socket.send(b"gate probe") {
            return classify(&e);
        }
        let mut buf = [0; 64];
        match socket.recv(&mut buf) {
            Ok(_) => Outcome::Reply,
            Err(e) => classify(&e),
        }
    })
}

/// Opens a TCP connection from `source` (inside `ns`) to `dest`; a completed handshake is a reply.
pub fn tcp(ns: &Netns, source: IpAddr, dest: SocketAddr) -> Outcome {
    ns.run(|| {
        let domain = if dest.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).expect("tcp socket");
        socket.bind(&SockAddr::from(SocketAddr::new(source, 0))).expect("bind probe socket");
        match socket.connect_timeout(&SockAddr::from(dest), SILENCE) {
            Ok(()) => Outcome::Reply,
            Err(e) => classify(&e),
        }
    })
}

/// Probes `dest` over `protocol` ("udp" or "tcp").
pub fn probe(protocol: &str, ns: &Netns, source: IpAddr, dest: SocketAddr) -> Outcome {
    match protocol {
        "udp" => udp(ns, source, dest),
        "tcp" => tcp(ns, source, dest),
        other => panic!("unknown protocol {other}"),
    }
}

/// UDP echo and TCP accept listeners on dual-stack sockets inside a namespace, stopped on drop.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    /// Listens on `ports` for both UDP and TCP, IPv4 and IPv6.
    pub fn start(ns: &Netns, ports: &[u16]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &port in ports {
            let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
            let (udp, tcp) = ns.run(|| {
                let udp = UdpSocket::bind(any).expect("bind udp listener");
                let tcp = TcpListener::bind(any).expect("bind tcp listener");
                (udp, tcp)
            });
            udp.set_read_timeout(Some(Duration::from_millis(50))).expect("udp timeout");
            tcp.set_nonblocking(true).expect("tcp nonblocking");
            let flag = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                let mut buf = [0; 2048];
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = udp.recv_from(&mut buf) {
                        let _ = udp.send_to(&buf[..n], from);
                    }
                }
            }));
            let flag = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                            let mut buf = [0; 64];
                            if let Ok(n) = stream.read(&mut buf) {
                                let _ = stream.write_all(&buf[..n]);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        Self { stop, threads }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// UDP datagrams that met a socket in `ns`, both families: delivered, or dropped by a full
/// receive buffer after every filter passed them (`InDatagrams + RcvbufErrors` of
/// /proc/net/snmp, `Udp6InDatagrams + Udp6RcvbufErrors` of /proc/net/snmp6).
#[must_use]
pub fn udp_at_sockets(ns: &Netns) -> u64 {
    let (v4, v6) = ns.run(|| {
        let read = |file: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).expect(file);
        (read("snmp"), read("snmp6"))
    });
    let mut udp = v4.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { panic!("no Udp lines in /proc/net/snmp") };
    let counted = |name: &str| matches!(name, "InDatagrams" | "RcvbufErrors" | "Udp6InDatagrams" | "Udp6RcvbufErrors");
    let v4: u64 = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| counted(name))
        .map(|(_, value)| value.parse::<u64>().expect("a counter"))
        .sum();
    let v6: u64 = v6
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .filter(|(name, _)| counted(name))
        .map(|(_, value)| value.trim().parse::<u64>().expect("a counter"))
        .sum();
    v4 + v6
}
