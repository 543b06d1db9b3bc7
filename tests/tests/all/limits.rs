//! Connection limits: `max_connections` with its two policies, `max_per_ip`,
//! and the `stats()` counters.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use socketserver::{Green, LimitPolicy, Server, Strategy, StreamRequest, Threading};
use socketserver_tests::*;

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// Whether the server closed the connection without serving it.
fn closed_unserved(mut c: TcpStream) -> bool {
    let _ = c.write_all(b"anyone?\n");
    let mut buf = [0u8; 16];
    matches!(c.read(&mut buf), Ok(0) | Err(_))
}

fn max_connections_refuse_closes_extra_connections_and_counts_them(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .max_connections(Some(2))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let mut a = tcp_client(&addr);
    let mut b = tcp_client(&addr);
    // Both are served (and therefore registered) before the third comes.
    assert_eq!(stream_roundtrip(&mut a, b"a").unwrap(), b"a");
    assert_eq!(stream_roundtrip(&mut b, b"b").unwrap(), b"b");
    assert!(
        closed_unserved(tcp_client(&addr)),
        "third connection refused"
    );
    // A slot frees when a client leaves; the next one is served.
    drop(a);
    let mut served = false;
    wait_until(DEADLINE, "a new client served after one left", || {
        let mut c = tcp_client(&addr);
        served = stream_roundtrip(&mut c, b"c").is_ok_and(|r| r == b"c");
        served
    });
    drop(b);
    running.stop();
}

fn max_connections_wait_holds_new_clients_in_the_backlog_until_a_slot_frees(
    strategy: impl Strategy,
) {
    let server = Server::builder()
        .strategy(strategy)
        .max_connections(Some(1))
        .limit_policy(LimitPolicy::Wait)
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let mut first = tcp_client(&addr);
    assert_eq!(stream_roundtrip(&mut first, b"1").unwrap(), b"1");

    // The second connects (the kernel queues it) but is not served yet.
    let mut second = tcp_client(&addr);
    second.write_all(b"2").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 1];
    let early = second.read(&mut buf);
    assert!(
        early.is_err(),
        "served while the server was full: {early:?}"
    );

    // When the first leaves, the second is accepted and served, not refused.
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"2");
    drop(second);
    running.stop();
}

fn max_per_ip_refuses_a_second_connection_from_the_same_address_only(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .max_per_ip(Some(1))
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let mut first = tcp_client(&addr);
    assert_eq!(stream_roundtrip(&mut first, b"x").unwrap(), b"x");
    assert!(
        closed_unserved(tcp_client(&addr)),
        "second from 127.0.0.1 refused"
    );

    // 127.0.0.2 is loopback too, but another IP: it has its own quota.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    other.connect(&addr.as_inet().unwrap().into()).unwrap();
    let mut other: TcpStream = other.into();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(stream_roundtrip(&mut other, b"y").unwrap(), b"y");
    drop((first, other));
    running.stop();
}

fn stats_count_accepted_refused_completed_and_failed_requests(strategy: impl Strategy) {
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            io::BufRead::read_line(req, &mut line)?;
            if line.starts_with("fail") {
                return Err(io::Error::other("asked to fail"));
            }
            req.write_all(line.as_bytes())
        })
        .unwrap();
    let addr = server.server_address().clone();
    let stats_of = std::sync::Arc::new(server);
    let server = std::sync::Arc::clone(&stats_of);
    let loop_thread = std::thread::spawn(move || server.serve_forever());
    for msg in ["ok\n", "ok\n", "fail\n"] {
        let mut c = tcp_client(&addr);
        c.write_all(msg.as_bytes()).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    wait_until(DEADLINE, "3 requests finished", || {
        let s = stats_of.stats();
        s.completed + s.failed == 3
    });
    let s = stats_of.stats();
    assert_eq!(
        (s.accepted, s.refused, s.completed, s.failed),
        (3, 0, 2, 1),
        "{s:?}"
    );
    assert_eq!(s.active, 0);
    stats_of.shutdown();
    within(DEADLINE, "serve_forever returns", move || {
        loop_thread.join().unwrap().unwrap()
    });
}

#[test]
fn a_refused_client_gets_the_busy_message_before_the_close() {
    let server = Server::builder()
        .strategy(Threading::new())
        .max_connections(Some(1))
        .busy_message("ERR server busy, try later\n")
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    let mut a = tcp_client(&addr);
    assert_eq!(stream_roundtrip(&mut a, b"a").unwrap(), b"a");
    let mut refused = tcp_client(&addr);
    let mut got = Vec::new();
    let _ = refused.read_to_end(&mut got);
    assert_eq!(got, b"ERR server busy, try later\n");
    drop(a);
    running.stop();
}

#[test]
fn a_handler_reads_the_servers_stats() {
    let server = Server::builder()
        .strategy(Threading::new())
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let stats = req.stats();
            writeln!(req, "{} {}", stats.connections, stats.accepted)
        })
        .unwrap();
    let running = Running::start(server);
    let mut c = tcp_client(&running.address);
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "1 1\n", "this connection, the first accepted");
    running.stop();
}

socketserver_tests::per_strategy! {
    [
        max_connections_refuse_closes_extra_connections_and_counts_them,
        max_connections_wait_holds_new_clients_in_the_backlog_until_a_slot_frees,
        max_per_ip_refuses_a_second_connection_from_the_same_address_only,
        stats_count_accepted_refused_completed_and_failed_requests,
    ]
    threading: Threading::new();
    green: Green::new().threads(2);
}
