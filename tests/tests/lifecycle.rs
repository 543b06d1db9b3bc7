//! Server lifecycle: start, shut down (from anywhere, at any moment), close,
//! rebind; `handle_request`; Unix socket files; no leaked descriptors.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use socketserver::{
    Address, Green, Pool, Server, Strategy, StreamHandler, StreamRequest, Synchronous, Threading,
};
use socketserver_tests::*;

const MSG: &[u8] = b"hello world\n";

/// Tests that count this process's file descriptors take it exclusively;
/// every other test shares it, so nothing opens or closes fds while they
/// count.
static PROCESS: RwLock<()> = parking_lot::const_rwlock(());

/// A line handler: answers each line with `ok LINE`; the line `stop` also
/// shuts the server down from inside the handler.
fn stop_on_request(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    while req.read_line(&mut line)? > 0 {
        if line.trim_end() == "stop" {
            req.shutdown_handle().shutdown();
        }
        write!(req, "ok {line}")?;
        line.clear();
    }
    Ok(())
}

/// Sends `line` and a newline, returns the reply line.
fn send_line(c: impl Read + Write, line: &str) -> String {
    let mut c = BufReader::new(c);
    c.get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    c.read_line(&mut reply).unwrap();
    reply
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    TcpV4,
    TcpV6,
    Udp,
    Unix,
    Unixgram,
}

const KINDS: [Kind; 5] = [
    Kind::TcpV4,
    Kind::TcpV6,
    Kind::Udp,
    Kind::Unix,
    Kind::Unixgram,
];

/// Starts an echo server of `kind` under strategy `s`.
fn start_echo<S: Strategy>(s: S, kind: Kind, path: &Path) -> Running {
    let b = Server::builder().strategy(s);
    match kind {
        Kind::TcpV4 => Running::start(b.tcp("127.0.0.1:0", echo_stream).unwrap()),
        Kind::TcpV6 => Running::start(b.tcp("[::1]:0", echo_stream).unwrap()),
        Kind::Udp => Running::start(b.udp("127.0.0.1:0", echo_datagram).unwrap()),
        Kind::Unix => Running::start(b.unix(path, echo_stream).unwrap()),
        Kind::Unixgram => Running::start(b.unixgram(path, echo_datagram).unwrap()),
    }
}

/// One echo round trip with a server of `kind` at `addr`.
fn echo_once(kind: Kind, addr: &Address, dir: &Path, name: &str) {
    let back = match kind {
        Kind::TcpV4 | Kind::TcpV6 => stream_roundtrip(tcp_client(addr), MSG).unwrap(),
        Kind::Unix => stream_roundtrip(unix_client(addr), MSG).unwrap(),
        Kind::Udp => {
            let c = udp_client(addr);
            c.send(MSG).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        }
        Kind::Unixgram => {
            let c = unixgram_client(addr, dir, name);
            c.send(MSG).unwrap();
            let mut buf = [0u8; 64];
            let n = c.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        }
    };
    assert_eq!(back, MSG, "echo from {addr}");
}

#[test]
fn twenty_servers_shut_down_at_once_each_return_within_a_second() {
    let _shared = PROCESS.read();
    let dir = TempDir::new("twenty");
    // Every transport under every in-process strategy, 20 in all.
    let servers: Vec<(Kind, Running)> = (0..20)
        .map(|i| {
            let kind = KINDS[i % 5];
            let path = dir.join(&format!("s{i}.sock"));
            let running = match (i / 5) % 4 {
                0 => start_echo(Synchronous, kind, &path),
                1 => start_echo(Threading::new(), kind, &path),
                2 => start_echo(Green::new().threads(1), kind, &path),
                _ => start_echo(Pool::new(2), kind, &path),
            };
            (kind, running)
        })
        .collect();
    // Each serves a request first, so every loop is really running.
    for (i, (kind, s)) in servers.iter().enumerate() {
        let (kind, addr, dir) = (*kind, s.address.clone(), dir.path().to_path_buf());
        within(DEADLINE, &format!("an echo from {addr}"), move || {
            echo_once(kind, &addr, &dir, &format!("client{i}"))
        });
    }
    let latencies: Vec<Duration> = thread::scope(|scope| {
        let stops: Vec<_> = servers
            .into_iter()
            .map(|(_, s)| scope.spawn(move || s.stop()))
            .collect();
        stops.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(latencies.len(), 20);
    eprintln!(
        "20 servers stopped at once, the slowest in {:?}",
        latencies.iter().max().unwrap()
    );
    for (i, took) in latencies.iter().enumerate() {
        assert!(*took < PROMPT, "server {i} took {took:?} to stop");
    }
}

#[test]
fn close_before_any_request_releases_port_and_socket_file() {
    let _shared = PROCESS.read();
    let dir = TempDir::new("close-early");
    fn check<S: Strategy>(strategy: impl Fn() -> S, dir: &TempDir) {
        let name = strategy().name();
        let server = Server::builder()
            .strategy(strategy())
            .tcp("127.0.0.1:0", echo_stream)
            .unwrap();
        let addr = server.server_address().as_inet().unwrap();
        within(DEADLINE, &format!("{name}: server_close"), move || {
            server.server_close()
        });
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("{name}: rebind {addr}: {e}"));

        let path = dir.join(&format!("{name}.sock"));
        let server = Server::builder()
            .strategy(strategy())
            .unix(&path, echo_stream)
            .unwrap();
        assert!(path.exists());
        within(DEADLINE, &format!("{name}: unix server_close"), move || {
            server.server_close()
        });
        assert!(!path.exists(), "{name}: socket file left behind");
    }
    check(|| Synchronous, &dir);
    check(Threading::new, &dir);
    check(|| Pool::new(4), &dir);
    check(|| Green::new().threads(2), &dir);
}

#[test]
fn a_thousand_failed_binds_to_a_taken_address_leak_no_fd() {
    let _exclusive = PROCESS.write();
    let dir = TempDir::new("failed-binds");
    let tcp_taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp_taken.local_addr().unwrap();
    let udp_taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp_taken.local_addr().unwrap();
    let unix_path = dir.join("taken.sock");
    let _unix_taken = UnixListener::bind(&unix_path).unwrap();

    let attempt = |i: usize| {
        let err = match i % 4 {
            0 => Server::builder()
                .reuse_address(false)
                .tcp(tcp_addr, echo_stream)
                .map(drop),
            1 => Server::builder().tcp(tcp_addr, echo_stream).map(drop),
            2 => Server::builder()
                .reuse_address(false)
                .udp(udp_addr, echo_datagram)
                .map(drop),
            _ => Server::builder().unix(&unix_path, echo_stream).map(drop),
        }
        .expect_err("bind to a taken address must fail");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "attempt {i}: {err}");
    };
    // One round first, so anything opened lazily once is not counted.
    (0..4).for_each(attempt);
    let before = fd_count();
    (0..1024).for_each(attempt);
    let after = fd_count();
    assert_eq!(before, after, "fds before and after 1024 failed binds");
    assert!(
        unix_path.exists(),
        "a failed bind must not remove the taken path"
    );
}

/// Serves 100 requests of every transport; once the server has closed its
/// side of them, the process has as many fds as before.
fn serving_leaks_no_fd<S: Strategy>(strategy: impl Fn() -> S) {
    let dir = TempDir::new("fd-serve");
    for kind in KINDS {
        let name = strategy().name();
        let running = start_echo(strategy(), kind, &dir.join(&format!("{kind:?}.sock")));
        let addr = running.address.clone();
        // One request first, so what a strategy opens once on first use
        // (Green's reactors) is not counted.
        echo_once(kind, &addr, dir.path(), "warm-up");
        let before = fd_count();
        // Every client has 5 s timeouts: this loop cannot hang.
        for i in 0..100 {
            echo_once(kind, &addr, dir.path(), &format!("c{i}"));
        }
        wait_until(
            DEADLINE,
            &format!("{name} {kind:?}: fds back to {before}"),
            // At most: what an earlier test's server still releases (a
            // Green reactor winding down) may close meanwhile.
            || fd_count() <= before,
        );
        running.stop();
    }
}

#[test]
fn serving_leaks_no_fd_synchronous() {
    let _exclusive = PROCESS.write();
    serving_leaks_no_fd(|| Synchronous);
}

#[test]
fn serving_leaks_no_fd_threading() {
    let _exclusive = PROCESS.write();
    serving_leaks_no_fd(Threading::new);
}

#[test]
fn serving_leaks_no_fd_pool() {
    let _exclusive = PROCESS.write();
    serving_leaks_no_fd(|| Pool::new(4));
}

#[test]
fn serving_leaks_no_fd_green() {
    let _exclusive = PROCESS.write();
    serving_leaks_no_fd(|| Green::new().threads(2));
}

#[test]
fn dropping_a_server_releases_its_port_for_an_immediate_rebind() {
    let _shared = PROCESS.read();
    // TCP, after serving a connection (so one end sits in TIME_WAIT).
    let server = Server::builder().tcp("127.0.0.1:0", echo_stream).unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "an echo", {
        let addr = addr.clone();
        move || stream_roundtrip(tcp_client(&addr), MSG).unwrap()
    });
    let err = Server::builder()
        .tcp(addr.as_inet().unwrap(), echo_stream)
        .expect_err("the port is taken while the server runs");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    running.stop();
    let again = Server::builder()
        .tcp(addr.as_inet().unwrap(), echo_stream)
        .unwrap_or_else(|e| panic!("rebind {addr} right after drop: {e}"));
    let running = Running::start(again);
    within(DEADLINE, "an echo from the rebound server", {
        let addr = addr.clone();
        move || stream_roundtrip(tcp_client(&addr), MSG).unwrap()
    });
    running.stop();

    // UDP.
    let server = Server::builder()
        .reuse_address(false)
        .udp("127.0.0.1:0", echo_datagram)
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    drop(server);
    Server::builder()
        .reuse_address(false)
        .udp(addr, echo_datagram)
        .unwrap_or_else(|e| panic!("rebind udp {addr} right after drop: {e}"));
}

fn shutdown_from_inside_a_handler<S: Strategy>(strategy: S) {
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", stop_on_request)
        .unwrap();
    let running = Running::start(server);
    let addr = running.address.clone();
    within(DEADLINE, "the stop request", move || {
        let mut c = tcp_client(&addr);
        assert_eq!(send_line(&mut c, "hello"), "ok hello\n");
        assert_eq!(send_line(&mut c, "stop"), "ok stop\n");
        // The handler goes on until the client leaves; then the loop ends.
    });
    running
        .wait(PROMPT)
        .expect("serve_forever returns Ok after shutdown");
}

#[test]
fn shutdown_from_inside_a_synchronous_handler_returns_serve_forever() {
    let _shared = PROCESS.read();
    shutdown_from_inside_a_handler(Synchronous);
}

#[test]
fn shutdown_from_inside_a_threading_handler_returns_serve_forever() {
    let _shared = PROCESS.read();
    shutdown_from_inside_a_handler(Threading::new());
}

#[test]
fn shutdown_from_inside_a_pool_handler_returns_serve_forever() {
    let _shared = PROCESS.read();
    shutdown_from_inside_a_handler(Pool::new(2));
}

#[test]
fn shutdown_from_inside_a_green_handler_returns_serve_forever() {
    let _shared = PROCESS.read();
    shutdown_from_inside_a_handler(Green::new().threads(2));
}

fn shutdown_with_50_idle_clients_returns_at_once_and_close_ends_them_at_once(
    strategy: impl Strategy,
) {
    let _shared = PROCESS.read();
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", stop_on_request)
        .unwrap();
    let addr = server.server_address().clone();
    let handle = server.shutdown_handle();
    let (returned_tx, returned) = mpsc::channel();
    let serving = thread::spawn(move || {
        let r = server.serve_forever();
        returned_tx.send(Instant::now()).unwrap();
        drop(server); // closes the idle connections, then waits for none
        r
    });

    let mut clients: Vec<_> = (0..50).map(|_| tcp_client(&addr)).collect();
    // Each answer comes from a running handler: 50 of them.
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(send_line(&mut *c, &format!("c{i}")), format!("ok c{i}\n"));
    }

    let asked = Instant::now();
    handle.shutdown();
    let at = returned
        .recv_timeout(PROMPT)
        .expect("serve_forever returns with 50 clients connected");
    let took = at - asked;
    eprintln!("serve_forever returned {took:?} after shutdown() with 50 clients connected");

    // The handlers wait for a new line: idle, so closing ends them at once.
    wait_until(PROMPT, "close to finish", || serving.is_finished());
    serving.join().unwrap().unwrap();
    for c in &mut clients {
        let mut buf = [0u8; 8];
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "the connection is closed");
    }
}

#[test]
fn shutdown_requested_before_serve_forever_makes_it_return_at_once() {
    let _shared = PROCESS.read();
    let server = Server::builder().tcp("127.0.0.1:0", echo_stream).unwrap();
    server.shutdown_handle().shutdown();
    let took = within(DEADLINE, "serve_forever", move || {
        let start = Instant::now();
        server.serve_forever().unwrap();
        start.elapsed()
    });
    eprintln!("serve_forever after an early shutdown() returned in {took:?}");
    assert!(took < PROMPT, "serve_forever took {took:?}");
}

/// Counts requests and `handle_timeout` calls; greets each client with the
/// number of its request.
#[derive(Default)]
struct Counting {
    requests: AtomicUsize,
    timeouts: AtomicUsize,
}

impl StreamHandler for Counting {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        writeln!(req, "request {n}")
    }
    fn handle_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn handle_request_with_a_timeout_calls_handle_timeout_and_returns_false() {
    let _shared = PROCESS.read();
    let server = Server::builder()
        .timeout(Some(Duration::from_millis(50)))
        .tcp("127.0.0.1:0", Counting::default())
        .unwrap();
    let server = within(DEADLINE, "handle_request", move || {
        assert!(!server.handle_request().unwrap(), "no request: Ok(false)");
        server
    });
    assert_eq!(server.handler().timeouts.load(Ordering::SeqCst), 1);
    assert_eq!(server.handler().requests.load(Ordering::SeqCst), 0);
}

#[test]
fn handle_request_serves_exactly_one_request() {
    let _shared = PROCESS.read();
    let server = Server::builder()
        .timeout(Some(Duration::from_secs(5)))
        .tcp("127.0.0.1:0", Counting::default())
        .unwrap();
    let addr = server.server_address().clone();
    // Two clients wait in the backlog; each call serves one, in order.
    let first = tcp_client(&addr);
    let second = tcp_client(&addr);
    let server = within(DEADLINE, "handle_request twice", move || {
        assert!(server.handle_request().unwrap());
        assert_eq!(server.handler().requests.load(Ordering::SeqCst), 1);
        assert!(server.handle_request().unwrap());
        assert_eq!(server.handler().requests.load(Ordering::SeqCst), 2);
        server
    });
    for (c, expected) in [(first, "request 0\n"), (second, "request 1\n")] {
        let mut reply = String::new();
        BufReader::new(c).read_line(&mut reply).unwrap();
        assert_eq!(reply, expected);
    }
    assert_eq!(server.handler().timeouts.load(Ordering::SeqCst), 0);
}

/// Under `Green` the loop runs on a worker: its sockets leave that worker's
/// reactor when it returns, and join one again on the next run.
fn serve_forever_can_run_twice_in_a_row<S: Strategy>(strategy: S) {
    let _shared = PROCESS.read();
    let server = Arc::new(
        Server::builder()
            .strategy(strategy)
            .tcp("127.0.0.1:0", echo_stream)
            .unwrap(),
    );
    let addr = server.server_address().clone();
    for round in 0..2 {
        let serving = {
            let server = Arc::clone(&server);
            thread::spawn(move || server.serve_forever())
        };
        let a = addr.clone();
        within(DEADLINE, &format!("round {round}: an echo"), move || {
            assert_eq!(stream_roundtrip(tcp_client(&a), MSG).unwrap(), MSG)
        });
        server.shutdown();
        wait_until(
            PROMPT,
            &format!("round {round}: serve_forever returns"),
            || serving.is_finished(),
        );
        serving.join().unwrap().unwrap();
    }
}

#[test]
fn serve_forever_running_twice_at_the_same_time_is_refused() {
    let _shared = PROCESS.read();
    let server = Arc::new(Server::builder().tcp("127.0.0.1:0", echo_stream).unwrap());
    let serving = {
        let server = Arc::clone(&server);
        thread::spawn(move || server.serve_forever())
    };
    // The first loop is running once it has served a request.
    let a = server.server_address().clone();
    within(DEADLINE, "an echo", move || {
        stream_roundtrip(tcp_client(&a), MSG).unwrap()
    });
    let second = {
        let server = Arc::clone(&server);
        within(DEADLINE, "a second serve_forever", move || {
            server.serve_forever()
        })
    };
    assert!(
        second.is_err(),
        "a second concurrent serve_forever must fail"
    );
    server.shutdown();
    wait_until(PROMPT, "serve_forever returns", || serving.is_finished());
    serving.join().unwrap().unwrap();
}

#[test]
fn unix_socket_files_are_removed_on_close() {
    let _shared = PROCESS.read();
    let dir = TempDir::new("unix-files");
    for kind in [Kind::Unix, Kind::Unixgram] {
        let path = dir.join(&format!("{kind:?}.sock"));
        let running = start_echo(Threading::new(), kind, &path);
        assert!(path.exists());
        let (addr, d) = (running.address.clone(), dir.path().to_path_buf());
        within(DEADLINE, "an echo", move || {
            echo_once(kind, &addr, &d, "client")
        });
        running.stop();
        assert!(!path.exists(), "{kind:?}: socket file left behind");
    }
}

#[test]
fn a_stale_unix_socket_path_gives_addr_in_use_naming_the_path() {
    let _shared = PROCESS.read();
    let dir = TempDir::new("stale");
    let path = dir.join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves the file behind
    assert!(path.exists());
    let shown = path.display().to_string();
    let errors = [
        Server::builder().unix(&path, echo_stream).map(drop),
        Server::builder().unixgram(&path, echo_datagram).map(drop),
    ];
    for err in errors {
        let err = err.expect_err("a stale socket file is in the way");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(
            err.to_string().contains(&shown),
            "the error names the path: {err}"
        );
    }
    assert!(
        path.exists(),
        "a failed bind must not remove the stale file"
    );
}

socketserver_tests::per_strategy! {
    [
        serve_forever_can_run_twice_in_a_row,
        shutdown_with_50_idle_clients_returns_at_once_and_close_ends_them_at_once,
    ]
    threading: Threading::new().stack_size(128 * 1024);
    green: Green::new().threads(2);
}
