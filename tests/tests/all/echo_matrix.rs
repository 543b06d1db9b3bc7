//! Echo matrix: every transport under every in-process strategy; three
//! clients each send `hello world\n` and get it back. (Forking runs in
//! `forking.rs`, from a single-threaded server process.)

use std::io;

use socketserver::{
    DatagramRequest, Pool, Server, Strategy, StreamRequest, Synchronous, Threading,
};
use socketserver_tests::*;

const MSG: &[u8] = b"hello world\n";

fn echo_stream(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    let data = req.take_data();
    req.reply(&data)
}

fn tcp<S: Strategy>(strategy: S, host: &str) {
    let server = Server::builder()
        .strategy(strategy)
        .tcp(host, echo_stream)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "3 TCP clients", move || {
        // All three connected at once: Synchronous serves them in turn.
        let clients: Vec<_> = (0..3).map(|_| tcp_client(&addr)).collect();
        for c in clients {
            let mut c = c;
            assert_eq!(stream_roundtrip(&mut c, MSG).unwrap(), MSG);
        }
    });
    running.stop();
}

fn udp<S: Strategy>(strategy: S) {
    let server = Server::builder()
        .strategy(strategy)
        .udp("127.0.0.1:0", echo_datagram)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "3 UDP clients", move || {
        for _ in 0..3 {
            let c = udp_client(&addr);
            c.send(MSG).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], MSG);
        }
    });
    running.stop();
}

fn unix<S: Strategy>(strategy: S) {
    let dir = TempDir::new("unix");
    let path = dir.join("echo.sock");
    let server = Server::builder()
        .strategy(strategy)
        .unix(&path, echo_stream)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "3 Unix stream clients", move || {
        for _ in 0..3 {
            let mut c = unix_client(&addr);
            assert_eq!(stream_roundtrip(&mut c, MSG).unwrap(), MSG);
        }
    });
    running.stop();
    assert!(!path.exists(), "socket file removed on close");
}

fn unixgram<S: Strategy>(strategy: S) {
    let dir = TempDir::new("unixgram");
    let path = dir.join("echo.sock");
    let server = Server::builder()
        .strategy(strategy)
        .unixgram(&path, echo_datagram)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let client_dir = dir.path().to_path_buf();
    within(DEADLINE, "3 Unix datagram clients", move || {
        for i in 0..3 {
            let c = unixgram_client(&addr, &client_dir, &format!("client{i}"));
            c.send(MSG).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], MSG);
        }
    });
    running.stop();
    assert!(!path.exists(), "socket file removed on close");
}

macro_rules! matrix {
    ($($name:ident: $strategy:expr;)*) => {
        mod tcp_v4 { use super::*; $(#[test] fn $name() { tcp($strategy, "127.0.0.1:0") })* }
        mod tcp_v6 { use super::*; $(#[test] fn $name() { tcp($strategy, "[::1]:0") })* }
        mod udp_v4 { use super::*; $(#[test] fn $name() { udp($strategy) })* }
        mod unix_stream { use super::*; $(#[test] fn $name() { unix($strategy) })* }
        mod unix_datagram { use super::*; $(#[test] fn $name() { unixgram($strategy) })* }
    };
}

matrix! {
    synchronous: Synchronous;
    threading: Threading::new();
    pool: Pool::new(4);
    green: socketserver::Green::new().threads(2);
}
