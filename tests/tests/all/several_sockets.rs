//! One server on several sockets (`transport::Listeners`): TCP over IPv4
//! and IPv6 and a Unix stream socket served by one handler with one
//! `Stats`; TLS on one listener and plain on another; one admission across
//! listeners (`max_per_ip` counts a client over both of its TCP
//! listeners); one graceful drain that stops every listener and removes
//! the Unix socket file; round-robin accepts (a flooded listener does not
//! starve another); the listening sockets an upgrade hands over, and a
//! SIGUSR2 upgrade (threading, prefork) that keeps every listener serving;
//! and every
//! strategy, `Forking` and `PreFork` in a process of their own
//! (`several_server`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use socketserver::reload::Upgradable;
use socketserver::transport::{ListenerTls, Listeners, SocketOptions, Tcp, Unix};
use socketserver::{Green, Pool, Server, Strategy, StreamRequest, Synchronous, Threading};
use socketserver_tests::tls::{client_config, make_cert, rustls_client, rustls_echo};
use socketserver_tests::{tcp_client_from, wait_until, ServerProcess, TempDir, DEADLINE};

/// Serves `server` on a thread; `stop` shuts it down and waits (with a
/// deadline) for `serve_forever` to return.
struct Live<S: Strategy, H> {
    server: Arc<Server<Listeners, S, H>>,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl<S: Strategy, H: socketserver::StreamHandler> Live<S, H> {
    fn start(server: Server<Listeners, S, H>) -> Self {
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = thread::spawn(move || serving.serve_forever());
        Live {
            server,
            thread: Some(thread),
        }
    }

    fn address(&self, i: usize) -> SocketAddr {
        self.server.transport().addresses()[i]
            .as_inet()
            .expect("an IP listener")
    }

    fn stop(mut self) -> Arc<Server<Listeners, S, H>> {
        self.server.shutdown();
        let thread = self.thread.take().expect("running");
        wait_until(DEADLINE, "serve_forever returns", || thread.is_finished());
        thread.join().expect("no panic").expect("serve_forever");
        Arc::clone(&self.server)
    }
}

impl<S: Strategy, H> Drop for Live<S, H> {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// The handler of these tests: answers each line `LINE` with
/// `INDEX LINE` (INDEX: the listener that accepted the connection), and
/// counts the connections it served.
#[derive(Default)]
struct Tagged {
    served: AtomicUsize,
}

impl socketserver::StreamHandler for Tagged {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if req.read_line(&mut line)? == 0 {
                self.served.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            let index = req.listener();
            write!(req, "{index} {line}")?;
        }
    }
}

/// Sends `line` and reads the one-line answer.
fn ask(stream: impl Read + Write, line: &str) -> String {
    let mut reader = BufReader::new(stream);
    writeln!(reader.get_mut(), "{line}").expect("send");
    let mut answer = String::new();
    reader.read_line(&mut answer).expect("an answer");
    answer
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

fn unix(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Two TCP listeners on 127.0.0.1.
fn two_tcp_listeners() -> Listeners {
    let options = SocketOptions::default();
    let mut set = Listeners::new().unwrap();
    for _ in 0..2 {
        set.push(Tcp::bind("127.0.0.1:0", &options).unwrap())
            .unwrap();
    }
    set
}

/// 127.0.0.1, `::1` and `dir/s.sock`, in that order.
fn three_listeners(dir: &TempDir) -> Listeners {
    let options = SocketOptions::default();
    let mut set = Listeners::new().unwrap();
    set.push(Tcp::bind("127.0.0.1:0", &options).unwrap())
        .unwrap();
    set.push(Tcp::bind("[::1]:0", &options).unwrap()).unwrap();
    set.push(Unix::bind(dir.join("s.sock"), &options).unwrap())
        .unwrap();
    set
}

fn tcp_v4_v6_and_unix_are_served_by_one_handler_with_one_stats(strategy: impl Strategy) {
    let dir = TempDir::new("several");
    let live = Live::start(
        Server::builder()
            .strategy(strategy)
            .build(three_listeners(&dir), Tagged::default())
            .unwrap(),
    );
    let urls = live.server.urls();
    assert_eq!(urls.len(), 3, "{urls:?}");
    assert!(urls[0].starts_with("tcp://127.0.0.1:"), "{urls:?}");
    assert!(urls[1].starts_with("tcp://[::1]:"), "{urls:?}");
    assert_eq!(urls[2], format!("unix://{}", dir.join("s.sock").display()));
    assert_eq!(live.server.url(), urls.join(", "));
    let (v4, v6) = (live.address(0), live.address(1));
    for round in 0..3 {
        assert_eq!(
            ask(tcp(v4), &format!("v4 {round}")),
            format!("0 v4 {round}\n")
        );
        assert_eq!(
            ask(tcp(v6), &format!("v6 {round}")),
            format!("1 v6 {round}\n")
        );
        let answer = ask(unix(&dir.join("s.sock")), &format!("unix {round}"));
        assert_eq!(answer, format!("2 unix {round}\n"));
    }
    let server = Arc::clone(&live.server);
    wait_until(DEADLINE, "9 connections served", || {
        server.handler().served.load(Ordering::SeqCst) == 9 && server.stats().completed == 9
    });
    let stats = server.stats();
    assert_eq!(stats.accepted, 9, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
    live.stop();
}

fn a_graceful_close_refuses_new_clients_on_every_listener_and_removes_the_unix_file(
    strategy: impl Strategy,
) {
    let dir = TempDir::new("several-drain");
    let live = Live::start(
        Server::builder()
            .strategy(strategy)
            .build(three_listeners(&dir), Tagged::default())
            .unwrap(),
    );
    let (v4, v6) = (live.address(0), live.address(1));
    assert_eq!(ask(tcp(v6), "v6"), "1 v6\n");
    // An idle client (one: `Synchronous` serves one at a time): the drain
    // closes it at once.
    let mut idle = tcp(v4);
    assert_eq!(ask(&idle, "hi"), "0 hi\n");
    let report = live.server.close_gracefully(Duration::from_secs(5));
    assert_eq!(report.cut, 0, "{report:?}");
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0, "closed at once");
    for addr in [v4, v6] {
        let e = TcpStream::connect_timeout(&addr, DEADLINE).expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{addr}: {e}");
    }
    let e = UnixStream::connect(dir.join("s.sock")).expect_err("refused");
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "unix: {e}");
    let server = live.stop();
    assert!(dir.join("s.sock").exists(), "the file stays until the drop");
    drop(Arc::into_inner(server).expect("the last reference"));
    assert!(
        !dir.join("s.sock").exists(),
        "removed when the server drops"
    );
}

socketserver_tests::per_strategy! {
    [
        tcp_v4_v6_and_unix_are_served_by_one_handler_with_one_stats,
        a_graceful_close_refuses_new_clients_on_every_listener_and_removes_the_unix_file,
    ]
    synchronous: Synchronous;
    threading: Threading::new();
    pool: Pool::new(4);
    green: Green::new().threads(2);
}

#[test]
fn tls_on_one_listener_and_plain_on_another() {
    let dir = TempDir::new("several-tls");
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let options = SocketOptions::default();
    let mut set = Listeners::new().unwrap();
    set.push_with_tls(
        Tcp::bind("127.0.0.1:0", &options).unwrap(),
        ListenerTls::Config(config),
    )
    .unwrap();
    set.push(Tcp::bind("127.0.0.1:0", &options).unwrap())
        .unwrap();
    let live = Live::start(
        Server::builder()
            .strategy(Threading::new())
            .tls_handshake_timeout(Duration::from_secs(5))
            .build(set, Tagged::default())
            .unwrap(),
    );
    let (secure, plain) = (live.address(0), live.address(1));
    let client = client_config(&cert.ca, None);
    let mut over_tls = rustls_client(&socketserver::Address::Inet(secure), client.clone());
    assert_eq!(ask(&mut over_tls, "sealed"), "0 sealed\n");
    assert_eq!(ask(tcp(plain), "open"), "1 open\n");
    // Each listener speaks only its own: TLS to the plain one, plaintext
    // to the TLS one, get no answer.
    let mut wrong = rustls_client(&socketserver::Address::Inet(plain), client);
    wrong
        .sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert!(rustls_echo(&mut wrong, b"sealed\n").is_err());
    let mut raw = tcp(secure);
    raw.write_all(b"open\n").unwrap();
    let mut back = Vec::new();
    let _ = raw.read_to_end(&mut back);
    assert!(!back.starts_with(b"0 open"), "{back:?}");
    let server = Arc::clone(&live.server);
    wait_until(DEADLINE, "the failed handshakes counted", || {
        server.stats().failed >= 1
    });
    live.stop();
}

#[test]
fn a_plain_listener_beside_the_servers_tls() {
    let dir = TempDir::new("several-tls-plain");
    let cert = make_cert(&dir, "server");
    let config = socketserver::tls::server_config(&cert.cert, &cert.key).unwrap();
    let options = SocketOptions::default();
    let mut set = Listeners::new().unwrap();
    set.push(Tcp::bind("127.0.0.1:0", &options).unwrap())
        .unwrap();
    set.push_with_tls(
        Unix::bind(dir.join("plain.sock"), &options).unwrap(),
        ListenerTls::Plain,
    )
    .unwrap();
    let live = Live::start(
        Server::builder()
            .strategy(Green::new().threads(2))
            .tls(config)
            .build(set, Tagged::default())
            .unwrap(),
    );
    let addr = socketserver::Address::Inet(live.address(0));
    let mut over_tls = rustls_client(&addr, client_config(&cert.ca, None));
    assert_eq!(ask(&mut over_tls, "sealed"), "0 sealed\n");
    assert_eq!(ask(unix(&dir.join("plain.sock")), "local"), "1 local\n");
    live.stop();
}

#[test]
fn max_per_ip_counts_a_client_over_both_tcp_listeners() {
    let set = two_tcp_listeners();
    let live = Live::start(
        Server::builder()
            .strategy(Threading::new())
            .max_per_ip(Some(1))
            .busy_message("BUSY\n")
            .build(set, Tagged::default())
            .unwrap(),
    );
    let (a, b) = (live.address(0), live.address(1));
    let first = tcp(a);
    assert_eq!(ask(&first, "in"), "0 in\n");
    // The same client address on the other listener: over its limit.
    let mut second = tcp(b);
    let mut refusal = String::new();
    second.read_to_string(&mut refusal).unwrap();
    assert_eq!(refusal, "BUSY\n");
    // Another client address is served there.
    assert_eq!(ask(tcp_client_from("127.0.0.2", b), "other"), "1 other\n");
    let stats = live.server.stats();
    assert_eq!(stats.refused, 1, "{stats:?}");
    // Once the first leaves, the client gets in on either listener.
    drop(first);
    let server = Arc::clone(&live.server);
    wait_until(DEADLINE, "the first connection released", || {
        server.stats().connections == 0
    });
    assert_eq!(ask(tcp(b), "again"), "1 again\n");
    live.stop();
}

#[test]
fn a_flooded_listener_does_not_starve_another() {
    let set = two_tcp_listeners();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&order);
    let server = Server::builder()
        .strategy(Synchronous)
        .build(set, move |r: &mut StreamRequest| {
            seen.lock().push(r.listener());
            Ok(())
        })
        .unwrap();
    let flooded = server.transport().addresses()[0].as_inet().unwrap();
    let quiet = server.transport().addresses()[1].as_inet().unwrap();
    // 100 connections wait in the first listener's backlog, then one in
    // the second's, before the server takes any.
    let mut clients: Vec<TcpStream> = (0..100).map(|_| tcp(flooded)).collect();
    clients.push(tcp(quiet));
    let live = Live::start(server);
    wait_until(DEADLINE, "every connection served", || {
        order.lock().len() == 101
    });
    let order = order.lock().clone();
    let at = order
        .iter()
        .position(|&i| i == 1)
        .expect("the quiet one served");
    assert!(
        at <= 1,
        "served after {at} of the flooded listener's: {order:?}"
    );
    live.stop();
}

#[test]
fn an_upgrade_hands_over_every_listening_socket_in_order() {
    let dir = TempDir::new("several-fds");
    let server = Server::builder()
        .build(three_listeners(&dir), Tagged::default())
        .unwrap();
    let fds = Upgradable::listeners(&server);
    assert_eq!(fds.len(), 3);
    let names: Vec<String> = fds
        .iter()
        .map(|fd| {
            let addr = socket2::SockRef::from(fd).local_addr().unwrap();
            match addr.as_socket() {
                Some(a) => a.to_string(),
                None => addr
                    .as_pathname()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let expected: Vec<String> = server
        .transport()
        .addresses()
        .iter()
        .map(|a| match a.as_inet() {
            Some(a) => a.to_string(),
            None => a.as_path().unwrap().display().to_string(),
        })
        .collect();
    assert_eq!(names, expected);
    let first = socket2::SockRef::from(&Upgradable::listener(&server))
        .local_addr()
        .unwrap();
    assert_eq!(first.as_socket(), server.local_addr());
}

#[test]
fn an_empty_set_is_refused_when_the_server_is_built() {
    let e = Server::builder()
        .build(Listeners::new().unwrap(), Tagged::default())
        .expect_err("no listener");
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("Listeners"), "{e}");
    assert!(e.to_string().contains("empty"), "{e}");
}

/// Every strategy, in a process of its own: each listener answers with its
/// index, SIGTERM stops them all, removes the Unix socket file, and leaves
/// no process behind.
fn every_listener_serves_and_sigterm_closes_them_all(strategy: &str) {
    let dir = TempDir::new("several-process");
    let exe = env!("CARGO_BIN_EXE_several_server");
    let mut server = ServerProcess::start(exe, &[strategy, dir.path().to_str().unwrap()]);
    let urls: Vec<&str> = server.url.split(", ").collect();
    assert_eq!(urls.len(), 3, "{}", server.url);
    let v4: SocketAddr = urls[0].strip_prefix("tcp://").unwrap().parse().unwrap();
    let v6: SocketAddr = urls[1].strip_prefix("tcp://").unwrap().parse().unwrap();
    let path = std::path::PathBuf::from(urls[2].strip_prefix("unix://").unwrap());
    assert_eq!(path, dir.join("several.sock"));
    for round in 0..3 {
        assert_eq!(ask(tcp(v4), &format!("a{round}")), format!("0 a{round}\n"));
        assert_eq!(ask(tcp(v6), &format!("b{round}")), format!("1 b{round}\n"));
        assert_eq!(
            ask(unix(&path), &format!("c{round}")),
            format!("2 c{round}\n")
        );
    }
    let pgid = server.pid();
    let (status, _) = server.terminate(DEADLINE);
    assert!(status.success(), "{status:?}; stderr: {}", server.stderr());
    assert!(!path.exists(), "the socket file is removed");
    for addr in [v4, v6] {
        assert!(TcpStream::connect_timeout(&addr, DEADLINE).is_err());
    }
    wait_until(DEADLINE, "no process of the server left", || {
        socketserver_tests::group_members(pgid).is_empty()
    });
}

macro_rules! per_process_strategy {
    ($($name:ident: $strategy:literal;)*) => {
        mod in_a_process {
            use super::*;
            $(
                #[test]
                fn $name() {
                    every_listener_serves_and_sigterm_closes_them_all($strategy);
                }
            )*
        }
    };
}

per_process_strategy! {
    synchronous: "synchronous";
    threading: "threading";
    pool: "pool";
    forking: "forking";
    prefork: "prefork";
    prefork_threading: "prefork-threading";
    prefork_green: "prefork-green";
    green: "green";
}

/// Connect, ask, close through `addr` until `stop` (at most 100,000
/// times): counts the answers, records the first failure.
fn keep_asking(
    addr: &socketserver::Address,
    answered: &AtomicUsize,
    failed: &Mutex<Vec<String>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    for n in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let result = match addr {
            socketserver::Address::Inet(a) => TcpStream::connect_timeout(a, DEADLINE)
                .and_then(|s| s.set_read_timeout(Some(DEADLINE)).map(|()| s))
                .map(|s| ask_checked(s, n)),
            socketserver::Address::Unix(Some(p)) => UnixStream::connect(p)
                .and_then(|s| s.set_read_timeout(Some(DEADLINE)).map(|()| s))
                .map(|s| ask_checked(s, n)),
            socketserver::Address::Unix(None) => unreachable!("a named socket"),
        };
        match result {
            Ok(Ok(())) => {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) | Err(e) => return failed.lock().push(format!("{addr} #{n}: {e}")),
        }
    }
}

/// Sends `n`, checks that the answer ends with it.
fn ask_checked(stream: impl Read + Write, n: usize) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    writeln!(reader.get_mut(), "{n}")?;
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.ends_with(&format!(" {n}\n")) {
        Ok(())
    } else {
        Err(io::Error::other(format!("answer {answer:?}")))
    }
}

/// SIGUSR2 to a server on three sockets (`reload::Upgrade::serve`): the new
/// process takes every socket over, in order, while clients keep coming on
/// all three; none is refused or fails, every listener is served by the new
/// process, and the old one exits 0, leaving the Unix socket file to it.
fn sigusr2_hands_every_listener_to_the_new_process(strategy: &str) {
    use std::sync::atomic::AtomicBool;
    let dir = TempDir::new("several-upgrade");
    let exe = env!("CARGO_BIN_EXE_several_server");
    let dir_arg = dir.path().to_str().unwrap();
    let mut server = ServerProcess::start(exe, &[strategy, dir_arg, "--upgrade"]);
    let addrs: Vec<socketserver::Address> = server
        .url
        .split(", ")
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap();
            if scheme == "unix" {
                socketserver::Address::Unix(Some(rest.into()))
            } else {
                socketserver::Address::Inet(rest.parse().unwrap())
            }
        })
        .collect();
    assert_eq!(addrs.len(), 3, "{}", server.url);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let counts: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let clients: Vec<_> = addrs
        .iter()
        .zip(&counts)
        .map(|(addr, n)| {
            let (addr, n) = (addr.clone(), Arc::clone(n));
            let (failed, stop) = (Arc::clone(&failed), Arc::clone(&stop));
            thread::spawn(move || keep_asking(&addr, &n, &failed, &stop))
        })
        .collect();
    wait_until(DEADLINE, "every listener answers", || {
        counts.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    });
    let first = server.pid();
    server.signal(libc::SIGUSR2);
    let status = server.wait_exit(DEADLINE);
    assert!(status.success(), "{status:?}; stderr: {}", server.stderr());
    wait_until(DEADLINE, "the old process says who serves now", || {
        server.stderr().contains("now served by process")
    });
    let before: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    wait_until(DEADLINE, "every listener answers after the upgrade", || {
        counts
            .iter()
            .zip(&before)
            .all(|(c, b)| c.load(Ordering::Relaxed) > *b)
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failed = failed.lock().clone();
    assert!(failed.is_empty(), "{failed:?}; stderr: {}", server.stderr());
    assert!(
        !socketserver_tests::group_members(first).is_empty(),
        "the new process serves"
    );
    assert!(dir.join("several.sock").exists(), "the file stays for it");
    // Dropping `server` kills the new process (its group).
}

#[test]
fn sigusr2_hands_every_listener_to_the_new_process_under_threading() {
    sigusr2_hands_every_listener_to_the_new_process("threading");
}

#[test]
fn sigusr2_hands_every_listener_to_the_new_process_under_prefork() {
    sigusr2_hands_every_listener_to_the_new_process("prefork");
}

#[test]
fn handle_request_takes_one_connection_from_any_listener() {
    let set = two_tcp_listeners();
    let server = Server::builder()
        .timeout(Some(DEADLINE))
        .build(set, Tagged::default())
        .unwrap();
    let second = server.transport().addresses()[1].as_inet().unwrap();
    let client = thread::spawn(move || ask(tcp(second), "once"));
    assert!(server.handle_request().unwrap(), "a request was taken");
    assert_eq!(client.join().unwrap(), "1 once\n");
    assert_eq!(server.handler().served.load(Ordering::SeqCst), 1);
}
