//! `verify_request` returning false: a connection is closed before any
//! handler code runs; a datagram is dropped.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use socketserver::{
    Address, DatagramHandler, DatagramRequest, Pool, Server, Strategy, StreamHandler,
    StreamRequest, Synchronous, Threading,
};
use socketserver_tests::*;

/// Counts every call; lets a peer in while `allow` is set, or (datagrams)
/// unless it is the `refused` address.
#[derive(Default)]
struct State {
    allow: AtomicBool,
    refused: Mutex<Option<SocketAddr>>,
    verified: AtomicUsize,
    /// setup, handle and finish calls.
    handler_calls: AtomicUsize,
}

#[derive(Clone, Default)]
struct Gate(Arc<State>);

impl Gate {
    fn verified(&self) -> usize {
        self.0.verified.load(Ordering::SeqCst)
    }
    fn handler_calls(&self) -> usize {
        self.0.handler_calls.load(Ordering::SeqCst)
    }
    fn call(&self) {
        self.0.handler_calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl StreamHandler for Gate {
    fn verify_request(&self, _peer: &Address) -> bool {
        self.0.verified.fetch_add(1, Ordering::SeqCst);
        self.0.allow.load(Ordering::SeqCst)
    }
    fn setup(&self, _req: &mut StreamRequest) -> io::Result<()> {
        self.call();
        Ok(())
    }
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        self.call();
        req.write_all(b"welcome\n")
    }
    fn finish(&self, _req: &mut StreamRequest) -> io::Result<()> {
        self.call();
        Ok(())
    }
}

impl DatagramHandler for Gate {
    fn verify_request(&self, peer: &Address) -> bool {
        self.0.verified.fetch_add(1, Ordering::SeqCst);
        peer.as_inet() != *self.0.refused.lock()
    }
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        self.call();
        let data = req.take_data();
        req.reply(&data)
    }
}

/// Reads until the server closes: EOF, or a reset if it closed with our
/// bytes unread. A timeout fails the test.
fn closed_by_server(mut c: impl Read) {
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("a refused client got {:?}", &buf[..n]),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was not closed: {e}"),
    }
}

fn refused_connections_are_closed_without_calling_the_handler<S: Strategy>(strategy: S) {
    let gate = Gate::default();
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", gate.clone())
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let g = gate.clone();
    within(DEADLINE, "clients", move || {
        // A silent client, then one that sends first.
        closed_by_server(tcp_client(&addr));
        let mut talker = tcp_client(&addr);
        talker.write_all(b"let me in\n").unwrap();
        closed_by_server(talker);
        assert_eq!(g.verified(), 2);
        assert_eq!(g.handler_calls(), 0, "no setup, handle or finish");

        g.0.allow.store(true, Ordering::SeqCst);
        let mut welcome = String::new();
        tcp_client(&addr).read_to_string(&mut welcome).unwrap();
        assert_eq!(welcome, "welcome\n");
    });
    running.stop();
    assert_eq!(gate.verified(), 3);
    assert_eq!(
        gate.handler_calls(),
        3,
        "setup, handle, finish of the one served"
    );
}

fn refused_datagrams_are_dropped<S: Strategy>(strategy: S) {
    let gate = Gate::default();
    let server = Server::builder()
        .strategy(strategy)
        .udp("127.0.0.1:0", gate.clone())
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let g = gate.clone();
    within(DEADLINE, "datagrams", move || {
        let refused = udp_client(&addr);
        *g.0.refused.lock() = Some(refused.local_addr().unwrap());
        let allowed = udp_client(&addr);
        refused.send(b"refused").unwrap();
        allowed.send(b"allowed").unwrap();
        let mut buf = [0u8; 64];
        let n = allowed.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"allowed");
        // The loop verifies in arrival order: the refused one came first.
        assert_eq!(g.verified(), 2);
        assert_eq!(
            g.handler_calls(),
            1,
            "only the allowed datagram was handled"
        );
        refused
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let err = refused
            .recv(&mut buf)
            .expect_err("no reply to a refused datagram");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
    });
    running.stop();
}

macro_rules! per_strategy {
    ($($strategy:ident: $make:expr;)*) => {$(
        mod $strategy {
            use super::*;
            #[test]
            fn refused_connections_are_closed_without_calling_the_handler() {
                super::refused_connections_are_closed_without_calling_the_handler($make)
            }
            #[test]
            fn refused_datagrams_are_dropped() {
                super::refused_datagrams_are_dropped($make)
            }
        }
    )*};
}

per_strategy! {
    synchronous: Synchronous;
    threading: Threading::new();
    pool: Pool::new(2);
}
