//! A burst of 10,000 connections, opened as fast as 16 client threads can:
//! every one is echoed, or refused cleanly by policy; none hangs (each
//! client has a 5 s deadline on every step); the server is alive after.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socketserver::{Pool, Server, Strategy, StreamRequest, Threading};
use socketserver_tests::*;

const CONNECTIONS: usize = 10_000;
const CLIENT_THREADS: usize = 16;

#[derive(Debug, Default)]
struct Tally {
    echoed: AtomicUsize,
    refused: AtomicUsize,
}

/// Echoes one 5-byte message, then ends the connection: the server closes
/// first, so the `TIME_WAIT` of each of the 10,000 connections sits on the
/// server's port, not on a client's ephemeral port. (With the clients
/// closing first, 30,000 connections a minute left that many ephemeral
/// ports of 127.0.0.1 in `TIME_WAIT` for 60 s, more than the whole range of
/// about 28,000: every bind to port 0 and every connect on 127.0.0.1, in
/// this and the next test binaries, then failed with `AddrInUse` or
/// `AddrNotAvailable`.)
fn echo(req: &mut StreamRequest) -> io::Result<()> {
    let mut msg = [0u8; 5];
    req.read_exact(&mut msg)?;
    req.write_all(&msg)
}

/// Runs the burst; returns (echoed, refused). Panics on a hang, a wrong
/// echo, or a connection that was neither echoed nor closed.
fn burst(addr: &socketserver::Address) -> (usize, usize) {
    let start = std::time::Instant::now();
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let (addr, tally) = (addr.clone(), Arc::clone(&tally));
            std::thread::spawn(move || {
                for i in (t..CONNECTIONS).step_by(CLIENT_THREADS) {
                    let msg = format!("{i:05}");
                    let mut c = tcp_client(&addr);
                    let mut back = [0u8; 5];
                    let sent = c.write_all(msg.as_bytes());
                    match sent.and_then(|()| c.read_exact(&mut back)) {
                        Ok(()) => {
                            assert_eq!(&back, msg.as_bytes(), "connection {i}");
                            tally.echoed.fetch_add(1, Ordering::Relaxed);
                        }
                        // Refused: closed (EOF) or reset, never a timeout.
                        Err(e) => {
                            assert!(
                                !matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ),
                                "connection {i} hung: {e}"
                            );
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    within(Duration::from_secs(120), "10,000 connections", move || {
        for t in threads {
            t.join().unwrap();
        }
    });
    let echoed = tally.echoed.load(Ordering::Relaxed);
    let refused = tally.refused.load(Ordering::Relaxed);
    // Figures for docs/reliability.md (`cargo test --test all -- burst:: --nocapture`).
    eprintln!(
        "burst: {CONNECTIONS} connections in {:?}: {echoed} echoed, {refused} refused",
        start.elapsed()
    );
    (echoed, refused)
}

fn every_connection_echoed<S: Strategy>(strategy: S) {
    let running = Running::start(
        Server::builder()
            .strategy(strategy)
            .tcp("127.0.0.1:0", echo)
            .unwrap(),
    );
    assert_eq!(burst(&running.address), (CONNECTIONS, 0));
    assert_eq!(
        stream_roundtrip(tcp_client(&running.address), b"after").unwrap(),
        b"after"
    );
    running.stop();
}

#[test]
fn ten_thousand_connections_are_all_echoed_under_threading() {
    every_connection_echoed(Threading::new());
}

#[test]
fn ten_thousand_connections_are_all_echoed_under_pool() {
    every_connection_echoed(Pool::new(8));
}

#[test]
fn over_the_limit_connections_are_refused_cleanly_and_the_rest_echoed() {
    let server = Server::builder()
        .strategy(Threading::new())
        .max_connections(Some(4))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let (echoed, refused) = burst(&running.address);
    assert_eq!(echoed + refused, CONNECTIONS);
    assert!(echoed > 0, "some were served");
    assert!(
        refused > 0,
        "16 clients at once against a limit of 4: some were refused"
    );
    assert_eq!(
        stream_roundtrip(tcp_client(&running.address), b"after").unwrap(),
        b"after"
    );
    running.stop();
}
