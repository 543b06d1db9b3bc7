//! Keepalive and `TCP_USER_TIMEOUT` on accepted connections: set under
//! every strategy, as configured, read back on the server side with
//! `getsockopt` from the handler (`StreamRequest::stream()`). Loopback only;
//! what they do when a peer vanishes is `partition.rs`'s concern.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use socketserver::transport::{Keepalive, Tcp};
use socketserver::{Server, StreamRequest, Threading};
use socketserver_tests::{tcp_client, Running, ServerProcess};

/// Asks a `peer_server` for the options of the connection it serves.
fn options_seen_by(server: &ServerProcess) -> String {
    ask(&server.address(), "opts")
}

fn ask(addr: &socketserver::Address, line: &str) -> String {
    let mut stream = tcp_client(addr);
    writeln!(stream, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).unwrap();
    reply.trim_end().to_owned()
}

fn peer_server(args: &[&str]) -> ServerProcess {
    let mut all = vec!["127.0.0.1:0"];
    all.extend_from_slice(args);
    ServerProcess::start(env!("CARGO_BIN_EXE_peer_server"), &all)
}

#[test]
fn every_strategy_gives_accepted_connections_keepalive_and_a_user_timeout_by_default() {
    for name in socketserver::strategy::NAMES {
        let strategy = format!("--strategy={name}");
        let server = peer_server(&[&strategy]);
        assert_eq!(
            options_seen_by(&server),
            "keepalive=1 idle=15 interval=5 count=3 user_timeout_ms=30000 nodelay=1",
            "under {name}"
        );
    }
}

#[test]
fn keepalive_and_user_timeout_are_set_as_configured_under_every_strategy() {
    for name in socketserver::strategy::NAMES {
        let strategy = format!("--strategy={name}");
        let server = peer_server(&[&strategy, "--keepalive=6", "--user-timeout=7"]);
        assert_eq!(
            options_seen_by(&server),
            "keepalive=1 idle=6 interval=2 count=3 user_timeout_ms=7000 nodelay=1",
            "under {name}"
        );
    }
}

#[test]
fn keepalive_and_user_timeout_can_be_turned_off() {
    let server = peer_server(&["--strategy=threading", "--keepalive=0", "--user-timeout=0"]);
    let opts = options_seen_by(&server);
    assert!(opts.starts_with("keepalive=0 "), "{opts}");
    assert!(opts.contains(" user_timeout_ms=0 "), "{opts}");
}

#[test]
fn the_default_user_timeout_follows_a_shorter_write_timeout() {
    let server = peer_server(&["--strategy=threading", "--write-timeout=10"]);
    let opts = options_seen_by(&server);
    assert!(opts.contains(" user_timeout_ms=10000 "), "{opts}");
    // Without keepalive, it is the write timeout itself.
    let server = peer_server(&["--strategy=pool", "--write-timeout=50", "--keepalive=0"]);
    let opts = options_seen_by(&server);
    assert!(opts.contains(" user_timeout_ms=50000 "), "{opts}");
}

#[test]
fn the_builder_reports_the_options_it_will_give() {
    let builder = Server::builder()
        .keepalive(Some(Keepalive::default().idle(Duration::from_secs(40))))
        .write_timeout(Some(Duration::from_secs(90)));
    let opts = builder.socket_options();
    assert_eq!(
        opts.keepalive.map(|k| k.idle_time()),
        Some(Duration::from_secs(40))
    );
    // Capped at the keepalive's time to notice: 40 + 5 × 3.
    assert_eq!(opts.user_timeout, Some(Duration::from_secs(55)));
    let builder = builder.user_timeout(Some(Duration::from_secs(120)));
    assert_eq!(
        builder.socket_options().user_timeout,
        Some(Duration::from_secs(120))
    );
    // Set explicitly, it no longer follows the write timeout.
    let builder = builder.write_timeout(Some(Duration::from_secs(5)));
    assert_eq!(
        builder.socket_options().user_timeout,
        Some(Duration::from_secs(120))
    );
}

/// A handler answering each line with its connection's keepalive idle
/// time and user timeout, read back with `getsockopt`.
fn report_options(req: &mut StreamRequest) -> std::io::Result<()> {
    let mut line = String::new();
    while req.read_line(&mut line)? > 0 {
        let socket = socket2::SockRef::from(req.stream().as_tcp().expect("TCP"));
        let idle = if socket.keepalive()? {
            socket.keepalive_time()?.as_secs()
        } else {
            0
        };
        let user = socket.tcp_user_timeout()?.unwrap_or_default().as_millis();
        writeln!(req, "idle={idle} user_timeout_ms={user}")?;
        line.clear();
    }
    Ok(())
}

#[test]
fn a_listener_from_std_takes_the_builders_options() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::builder()
        .strategy(Threading::new())
        .keepalive(Some(Keepalive::default().idle(Duration::from_secs(20))))
        .user_timeout(Some(Duration::from_secs(9)))
        .build(Tcp::from_std(listener).unwrap(), report_options)
        .unwrap();
    let addr = server.server_address().clone();
    let running = Running::start(server);
    assert_eq!(ask(&addr, "?"), "idle=20 user_timeout_ms=9000");
    running.stop();
}

#[test]
fn a_transport_bound_with_its_own_options_keeps_them() {
    let mut options = socketserver::transport::SocketOptions::default();
    options.keepalive = None;
    options.user_timeout = None;
    let tcp = Tcp::bind("127.0.0.1:0", &options).unwrap();
    let server = Server::builder()
        .strategy(Threading::new())
        .build(tcp, report_options)
        .unwrap();
    let addr = server.server_address().clone();
    let running = Running::start(server);
    assert_eq!(ask(&addr, "?"), "idle=0 user_timeout_ms=0");
    running.stop();
}

/// The `END` line `server` printed for the connection from `peer`.
fn end_of(server: &ServerProcess, peer: &str) -> Option<String> {
    let needle = format!("END peer={peer} ");
    server
        .stderr()
        .lines()
        .find(|l| l.starts_with(&needle))
        .map(str::to_owned)
}

#[test]
fn a_live_client_that_stops_reading_is_cut_at_the_user_timeout_when_shorter_than_the_write_timeout()
{
    // On Linux the user timeout also bounds zero-window probing: a client
    // that is there (it acknowledges the probes) but reads nothing is cut
    // after it, as by a write timeout.
    let server = peer_server(&["--strategy=threading", "--user-timeout=2"]);
    let mut stream = tcp_client(&server.address());
    let me = stream.local_addr().unwrap().to_string();
    let asked = std::time::Instant::now();
    writeln!(stream, "big 1000000000").unwrap();
    let end = loop {
        if let Some(line) = end_of(&server, &me) {
            break line;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "not cut within 30 s (write timeout 60 s, user timeout 2 s)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = asked.elapsed();
    println!("a client reading nothing: cut after {took:?}: {end}");
    assert!(end.contains(" error=TimedOut/110 "), "{end}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
}
