//! `max_per_ip` and `max_connections` under `PreFork` (`prefork_server`, a
//! process of its own): the children admit through the parent's shared
//! table, so the limits hold for the whole server, not per child, and a
//! child that dies holding connections gives their counts back.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socketserver_tests::*;

fn start(args: &[&str]) -> ServerProcess {
    let args: Vec<&str> = ["127.0.0.1:0"].iter().chain(args).copied().collect();
    let server = ServerProcess::start(env!("CARGO_BIN_EXE_prefork_server"), &args);
    server.wait_children("start", |n| n >= 3);
    server
}

/// A connection from `from` (a loopback address) that the server served:
/// `pid` answered. `None`: refused (closed without an answer).
fn served_from(from: &str, addr: SocketAddr) -> Option<BufReader<TcpStream>> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect_timeout(&addr.into(), DEADLINE).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream);
    // A refused connection may be closed before this write arrives.
    if reader.get_mut().write_all(b"pid\n").is_err() {
        return None;
    }
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 => Some(reader),
        _ => None,
    }
}

fn served(addr: SocketAddr) -> Option<BufReader<TcpStream>> {
    served_from("127.0.0.1", addr)
}

/// Waits (at most `PROMPT`) until a new connection is served again.
fn served_again(addr: SocketAddr, what: &str) -> BufReader<TcpStream> {
    let end = Instant::now() + PROMPT;
    loop {
        if let Some(c) = served(addr) {
            return c;
        }
        assert!(
            Instant::now() < end,
            "{what}: still refused after {PROMPT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(mut server: ServerProcess) {
    let (status, _) = server.terminate(DEADLINE);
    assert!(
        status.success(),
        "exit {status}; stderr {}",
        server.stderr()
    );
    assert!(
        group_members(server.pid()).is_empty(),
        "processes left in the group"
    );
}

fn max_per_ip_is_the_whole_servers(args: &[&str]) {
    let server = start(args);
    let addr = server.inet();
    let first = served(addr).expect("the first connection is served");
    // Each of these would find a child of its own, idle: the limit is
    // still the server's.
    for i in 0..2 {
        assert!(
            served(addr).is_none(),
            "connection {} from the same address served with --max-per-ip=1",
            i + 2
        );
    }
    // Another address has a count of its own.
    let other = served_from("127.0.0.2", addr).expect("another address is served");
    drop(other);
    drop(first);
    let again = served_again(addr, "the first client left");
    drop(again);
    finish(server);
}

#[test]
fn max_per_ip_counts_the_connections_of_every_child() {
    max_per_ip_is_the_whole_servers(&["--min=3", "--max-per-ip=1"]);
}

#[test]
fn max_per_ip_counts_the_connections_of_every_child_with_threading_inside() {
    max_per_ip_is_the_whole_servers(&["--min=3", "--threading", "--max-per-ip=1"]);
}

#[test]
fn max_connections_counts_the_connections_of_every_child() {
    let server = start(&["--min=3", "--max-connections=2"]);
    let addr = server.inet();
    let held: Vec<_> = (0..2)
        .map(|_| served(addr).expect("under max_connections"))
        .collect();
    assert!(
        served(addr).is_none(),
        "a third connection served with --max-connections=2"
    );
    drop(held);
    let again = served_again(addr, "both clients left");
    drop(again);
    finish(server);
}

#[test]
fn with_the_wait_policy_a_full_server_makes_new_clients_wait_in_every_child() {
    let server = start(&["--min=3", "--max-connections=2", "--wait"]);
    let addr = server.inet();
    let mut held: Vec<_> = (0..2)
        .map(|_| served(addr).expect("under max_connections"))
        .collect();
    // The third waits in the kernel's queue: no child accepts it while the
    // two held elsewhere fill the server (idle children included).
    let third = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut third = BufReader::new(third);
    third.get_mut().write_all(b"pid\n").unwrap();
    let mut line = String::new();
    let waited = third.read_line(&mut line);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a third connection was answered ({waited:?}, {line:?}) with --max-connections=2 --wait"
    );
    // One ends: the waiting client is served, not refused.
    drop(held.pop());
    third.get_ref().set_read_timeout(Some(DEADLINE)).unwrap();
    line.clear();
    assert!(
        third.read_line(&mut line).unwrap() > 0,
        "the waiting client was not served once a connection ended"
    );
    drop((held, third));
    finish(server);
}

#[test]
fn a_child_that_dies_holding_a_connection_gives_its_counts_back() {
    let server = start(&["--min=3", "--max-per-ip=1", "--max-connections=1"]);
    let addr = server.inet();
    let mut doomed = served(addr).expect("served");
    assert!(served(addr).is_none(), "over the limits");
    // Its child aborts (SIGABRT) with the connection counted.
    doomed.get_mut().write_all(b"abort\n").unwrap();
    let mut rest = String::new();
    let _ = doomed.read_line(&mut rest);
    drop(doomed);
    // The parent reaps it and takes its counts back.
    let again = served_again(addr, "the child holding the count died");
    drop(again);
    finish(server);
}
