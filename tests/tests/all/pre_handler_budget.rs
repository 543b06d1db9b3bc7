//! The pre-handler budget (`Builder::max_pre_handler`): connections still in
//! their PROXY header, their TLS handshake, or a handshake of the handler's
//! own (`StreamRequest::pre_handler`) hold a place; when one more arrives
//! the oldest is closed. A flood of silent or dribbling clients then holds
//! a bounded number of threads, workers or coroutines, and a client that
//! completes its handshake gets in at once, under every strategy that
//! serves connections side by side.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socketserver::proxy::ProxyProtocol;
use socketserver::{Green, Pool, Server, Strategy, StreamRequest, Threading};
use socketserver_tests::tls::{client_config, make_cert, rustls_client, rustls_echo};
use socketserver_tests::*;

/// The budget of these servers; a `Pool` gets twice as many workers, so a
/// full budget never holds every worker.
const BUDGET: usize = 4;
/// Connections of each flood: many times the budget.
const FLOOD: usize = 40;
/// The handshakes' own deadlines: far longer than the test, so only the
/// budget can free what the flood holds.
const LONG: Duration = Duration::from_secs(60);

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

fn connect(addr: SocketAddr) -> TcpStream {
    tcp_client(&socketserver::Address::Inet(addr))
}

/// `n` connections that send nothing, and `n` that send `dribble` one byte
/// at a time (a byte now and then, never finishing), all kept open.
fn flood(addr: SocketAddr, n: usize, dribble: &'static [u8]) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut c = connect(addr);
        if i % 2 == 1 {
            // The first byte of a header that never ends.
            let _ = c.write_all(&dribble[..1]);
        }
        held.push(c);
    }
    held
}

fn budget_of<S: Strategy>(strategy: S) -> socketserver::Builder<S> {
    Server::builder()
        .strategy(strategy)
        .max_pre_handler(Some(BUDGET))
}

fn a_proxy_header_flood_cannot_keep_a_real_client_out(strategy: impl Strategy) {
    let server = budget_of(strategy)
        .proxy_protocol(ProxyProtocol::Required {
            trusted: vec!["127.0.0.1".parse().unwrap()],
        })
        .proxy_header_timeout(LONG)
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let s = Serving::start(server);
    let held = flood(s.addr, FLOOD, b"PROXY TCP4 127.0.0.9 127.0.0.1 1 2\r\n");
    let started = Instant::now();
    let mut real = connect(s.addr);
    real.write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\nhello\n")
        .unwrap();
    let mut line = String::new();
    io::BufReader::new(&real).read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    assert!(
        started.elapsed() < PROMPT,
        "served after {:?}",
        started.elapsed()
    );
    let evicted = s.stats().refused_by.pre_handler_budget;
    assert!(
        evicted >= (FLOOD - BUDGET) as u64,
        "{evicted} of {FLOOD} closed to make room: {:?}",
        s.stats()
    );
    drop(real);
    drop(held);
}

fn a_tls_handshake_flood_cannot_keep_a_real_client_out(strategy: impl Strategy) {
    let dir = TempDir::new("budget-tls");
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let server = budget_of(strategy)
        .tls(config)
        .tls_handshake_timeout(LONG)
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let s = Serving::start(server);
    // 0x16: the first byte of a TLS record (a ClientHello that never ends).
    let held = flood(s.addr, FLOOD, b"\x16\x03\x01");
    let started = Instant::now();
    let addr = socketserver::Address::Inet(s.addr);
    let mut real = rustls_client(&addr, client_config(&cert.ca, None));
    assert_eq!(
        rustls_echo(&mut real, b"over tls\n").unwrap(),
        b"over tls\n"
    );
    assert!(
        started.elapsed() < PROMPT,
        "served after {:?}",
        started.elapsed()
    );
    assert!(s.stats().refused_by.pre_handler_budget >= (FLOOD - BUDGET) as u64);
    drop(held);
}

/// A handler whose own greeting must be answered first.
fn greeted(req: &mut StreamRequest) -> io::Result<()> {
    let name = req.pre_handler(|req| {
        let mut line = String::new();
        req.read_line(&mut line)?;
        Ok(line)
    })?;
    req.write_all(format!("welcome {name}").as_bytes())?;
    req.echo().map(drop)
}

fn a_handshake_of_the_handlers_own_counts_against_the_budget(strategy: impl Strategy) {
    let server = budget_of(strategy)
        .read_timeout(Some(LONG))
        .tcp("127.0.0.1:0", greeted)
        .unwrap();
    let s = Serving::start(server);
    let held = flood(s.addr, FLOOD, b"alice\n");
    let started = Instant::now();
    let mut real = connect(s.addr);
    real.write_all(b"bob\n").unwrap();
    let mut welcome = [0u8; 12];
    real.read_exact(&mut welcome).unwrap();
    assert_eq!(&welcome, b"welcome bob\n");
    assert!(
        started.elapsed() < PROMPT,
        "served after {:?}",
        started.elapsed()
    );
    wait_until(DEADLINE, "the flood closed to make room", || {
        s.stats().refused_by.pre_handler_budget >= (FLOOD - BUDGET) as u64
    });
    // Past its greeting, a client holds no place: others keep coming in.
    for _ in 0..BUDGET * 2 {
        let mut other = connect(s.addr);
        other.write_all(b"carol\n").unwrap();
        let mut w = [0u8; 14];
        other.read_exact(&mut w).unwrap();
    }
    assert_eq!(
        stream_roundtrip(&mut real, b"still here\n").unwrap(),
        b"still here\n"
    );
    drop(held);
}

per_strategy! {
    [
        a_proxy_header_flood_cannot_keep_a_real_client_out,
        a_tls_handshake_flood_cannot_keep_a_real_client_out,
        a_handshake_of_the_handlers_own_counts_against_the_budget,
    ]
    threading: Threading::new();
    pool: Pool::new(2 * BUDGET);
    green: Green::new().threads(2);
}

#[test]
fn without_a_budget_nothing_is_closed_to_make_room() {
    let server = Server::builder()
        .strategy(Threading::new())
        .proxy_protocol(ProxyProtocol::Required {
            trusted: vec!["127.0.0.1".parse().unwrap()],
        })
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let s = Serving::start(server);
    let held = flood(s.addr, 2 * BUDGET, b"PROXY ");
    let mut real = connect(s.addr);
    real.write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\nhi\n")
        .unwrap();
    let mut back = [0u8; 3];
    real.read_exact(&mut back).unwrap();
    assert_eq!(s.stats().refused_by.pre_handler_budget, 0);
    drop(held);
}

/// Under `Synchronous` (and `PreFork` with `Synchronous` inside) a handshake
/// holds the server loop: no connection could be closed to make room, so
/// the budget is refused when the server is built, naming both parts.
#[test]
fn the_budget_is_refused_under_strategies_that_serve_in_the_loop() {
    for strategy in [
        Box::new(socketserver::Synchronous) as Box<dyn Strategy>,
        Box::new(socketserver::PreFork::new()),
    ] {
        let name = strategy.name();
        let err = Server::builder()
            .strategy(strategy)
            .max_pre_handler(Some(BUDGET))
            .tcp("127.0.0.1:0", echo)
            .expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(
            text.contains("max_pre_handler") && text.contains(name),
            "{text}"
        );
    }
}
