//! `gate-test-listener CGROUP PORT...`: joins the cgroup v2 directory CGROUP, then echoes UDP
//! datagrams and TCP streams on every PORT (dual-stack), saying "ready" on stdout once all are
//! bound. With `--sink` first, binds UDP only and never reads: every datagram still meets the
//! socket (and the backstop) before the full receive buffer drops it (benchmarks). For tests of the delivery backstop, whose listeners must be in a cgroup of the test's
//! own from before their first socket (a socket keeps the cgroup it was made in).
use std::{
    io::{Read as _, Write as _},
    net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
};

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let sink = args.next_if(|a| a == "--sink").is_some();
    let cgroup = args.next().expect("usage: gate-test-listener [--sink] CGROUP PORT...");
    std::fs::write(std::path::Path::new(&cgroup).join("cgroup.procs"), "0").expect("join the cgroup");
    let ports: Vec<u16> = args.map(|p| p.parse().expect("a port number")).collect();
    if sink {
        let sockets: Vec<UdpSocket> = ports
            .iter()
            .map(|&port| UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).expect("bind udp"))
            .collect();
        println!("ready");
        std::io::stdout().flush().expect("flush");
        loop {
            std::thread::park();
            let _ = &sockets;
        }
    }
    let mut threads = Vec::new();
    for port in ports {
        let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        let udp = UdpSocket::bind(any).expect("bind udp");
        let tcp = TcpListener::bind(any).expect("bind tcp");
        threads.push(std::thread::spawn(move || {
            let mut buf = [0; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }));
        threads.push(std::thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(100)));
                let mut buf = [0; 64];
                if let Ok(n) = stream.read(&mut buf) {
                    let _ = stream.write_all(&buf[..n]);
                }
            }
        }));
    }
    println!("ready");
    std::io::stdout().flush().expect("flush");
    for thread in threads {
        let _ = thread.join();
    }
}
