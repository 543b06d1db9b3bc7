//! The composition matrix: every documented promise under every strategy
//! (`PreFork` with `Synchronous`, `Threading` and `Green` inside) and every layer
//! stack (plain, TLS, PROXY v2, PROXY v2 + TLS). Each cell is one server
//! process (`matrix_server`) serving every promise in turn, plus a second
//! one with limits; a promise a combination cannot keep is refused when the
//! server is built (checked here as refused), never silently weaker.
//!
//! Promises per cell: echo under concurrent load with nothing lost; a
//! handler panic costs one connection; client input that makes the handler
//! fail (JSON past serde's depth limit, an oversized line) costs one
//! connection, while JSON at the limit is served; the message deadline cuts
//! a trickler; the pre-handler budget keeps a silent and a dribbling flood
//! from keeping a real client out (layers with a handshake); `max_per_ip` and
//! `max_connections` are exact for the whole server; SIGTERM closes idle
//! connections at once, refuses new clients, lets a busy request finish,
//! and exits within the close deadline; a SIGUSR2 upgrade under load loses, refuses and resets
//! nothing, and the old process serves the connections it holds, idle ones
//! included, to their end.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::tls::rustls;
use socketserver_tests::tls::{client_config, make_cert, Cert};
use socketserver_tests::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Plain,
    Tls,
    Proxy,
    ProxyTls,
}

impl Layer {
    fn tls(self) -> bool {
        matches!(self, Layer::Tls | Layer::ProxyTls)
    }
    fn proxy(self) -> bool {
        matches!(self, Layer::Proxy | Layer::ProxyTls)
    }
}

/// A byte stream to a cell's server: TCP, or TLS over it.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One server process of a cell, and how to reach it through its layers.
struct Cell {
    strategy: &'static str,
    layer: Layer,
    server: ServerProcess,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Serves connections side by side (all but `Synchronous`, which
    /// serves one connection at a time).
    concurrent: bool,
}

/// Close deadline of the cells' servers.
const CLOSE: Duration = Duration::from_secs(3);
/// Message deadline of the cells' servers.
const MESSAGE: Duration = Duration::from_millis(1500);
/// Pre-handler budget of the cells' servers.
const BUDGET: usize = 4;

impl Cell {
    fn start(strategy: &'static str, layer: Layer, cert: &Cert, extra: &[&str]) -> Cell {
        let mut args: Vec<String> = vec!["127.0.0.1:0".into(), strategy.into()];
        args.push(format!("--close-timeout-ms={}", CLOSE.as_millis()));
        args.push(format!("--message-timeout-ms={}", MESSAGE.as_millis()));
        if layer.tls() {
            args.push(format!("--tls-cert={}", cert.cert.display()));
            args.push(format!("--tls-key={}", cert.key.display()));
        }
        if layer.proxy() {
            args.push("--proxy".into());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Cell {
            strategy,
            layer,
            server: ServerProcess::start(env!("CARGO_BIN_EXE_matrix_server"), &args),
            tls: layer.tls().then(|| client_config(&cert.ca, None)),
            concurrent: strategy != "synchronous",
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.inet()
    }

    /// A client whose real address is `client` (127.0.0.x): its source
    /// address, or the address its PROXY header names.
    fn connect_as(&self, client: &str) -> io::Result<Box<dyn Stream>> {
        let ip: IpAddr = client.parse().unwrap();
        let from = if self.layer.proxy() {
            "127.0.0.1".parse().unwrap()
        } else {
            ip
        };
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(from, 0).into())?;
        socket.connect_timeout(&self.addr().into(), DEADLINE)?;
        let mut tcp: TcpStream = socket.into();
        tcp.set_read_timeout(Some(DEADLINE))?;
        tcp.set_write_timeout(Some(DEADLINE))?;
        if self.layer.proxy() {
            tcp.write_all(&proxy_v2(ip, self.addr()))?;
        }
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let conn = rustls::ClientConnection::new(
                    Arc::clone(config),
                    "localhost".try_into().unwrap(),
                )
                .map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        })
    }

    fn connect(&self) -> Box<dyn Stream> {
        self.connect_as("127.0.0.1")
            .unwrap_or_else(|e| panic!("{}: connect: {e}", self.name()))
    }

    fn name(&self) -> String {
        format!("{} x {:?}", self.strategy, self.layer)
    }
}

impl Drop for Cell {
    /// A failing promise shows what the server said.
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{} server stderr:\n{}", self.name(), self.server.stderr());
        }
    }
}

/// A PROXY v2 header naming `client` (port 40000) and `server`.
fn proxy_v2(client: IpAddr, server: SocketAddr) -> Vec<u8> {
    let IpAddr::V4(c) = client else {
        unreachable!()
    };
    let IpAddr::V4(s) = server.ip() else {
        unreachable!()
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // v2, PROXY
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&c.octets());
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    h
}

/// Sends `line` and reads one line back.
fn ask(stream: &mut dyn Stream, line: &str) -> io::Result<String> {
    stream.write_all(line.as_bytes())?;
    stream.write_all(b"\n")?;
    stream.flush()?;
    let mut back = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ if byte[0] == b'\n' => break,
            _ => back.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&back).into_owned())
}

/// Whether the server ended the connection (end-of-file, a reset, a TLS
/// error) rather than answering, within the deadline.
fn ended(stream: &mut dyn Stream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

fn echo_under_load(cell: &Cell) {
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 25;
    let cell_name = cell.name();
    thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let mut stream = cell.connect();
                s.spawn(move || {
                    for r in 0..ROUNDS {
                        let msg = format!("client {c} round {r}");
                        assert_eq!(ask(&mut *stream, &msg).unwrap(), msg);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .unwrap_or_else(|_| panic!("{cell_name}: echo under load"));
        }
    });
}

/// A connection served before (and after) the one a promise ends, when the
/// strategy serves connections side by side.
fn bystander(cell: &Cell) -> Option<Box<dyn Stream>> {
    cell.concurrent.then(|| {
        let mut other = cell.connect();
        assert_eq!(ask(&mut *other, "before").unwrap(), "before");
        other
    })
}

fn still_served(cell: &Cell, other: Option<Box<dyn Stream>>) {
    if let Some(mut other) = other {
        assert_eq!(
            ask(&mut *other, "after").unwrap(),
            "after",
            "{}",
            cell.name()
        );
    }
    let mut fresh = cell.connect();
    assert_eq!(ask(&mut *fresh, "new").unwrap(), "new", "{}", cell.name());
}

fn a_panic_costs_one_connection(cell: &Cell) {
    let other = bystander(cell);
    let mut victim = cell.connect();
    assert_eq!(ask(&mut *victim, "hello").unwrap(), "hello");
    let _ = victim.write_all(b"panic\n");
    let _ = victim.flush();
    assert!(
        ended(&mut *victim),
        "{}: the panicking connection ends",
        cell.name()
    );
    drop(victim);
    still_served(cell, other);
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn bad_input_costs_one_connection(cell: &Cell) {
    let other = bystander(cell);
    // At serde_json's limit (127 levels): parsed, on every stack.
    let mut deep = cell.connect();
    let line = format!("json {}", nested(127));
    assert_eq!(
        ask(&mut *deep, &line).unwrap(),
        "ok true",
        "{}",
        cell.name()
    );
    // Past it: an error, which ends that connection only.
    let line = format!("json {}", nested(200));
    let _ = deep.write_all(line.as_bytes());
    let _ = deep.write_all(b"\n");
    let _ = deep.flush();
    assert!(ended(&mut *deep), "{}: too deep", cell.name());
    drop(deep);
    // A line over the handler's 64 KiB cap.
    let mut big = cell.connect();
    let _ = big.write_all(&vec![b'x'; 70 * 1024]);
    let _ = big.flush();
    assert!(ended(&mut *big), "{}: oversized", cell.name());
    drop(big);
    still_served(cell, other);
}

fn the_message_deadline_cuts_a_trickler(cell: &Cell) {
    let mut slow = cell.connect();
    assert_eq!(ask(&mut *slow, "hi").unwrap(), "hi");
    let started = Instant::now();
    // One byte every 200 ms, never a newline: bounded at 100 bytes (20 s).
    let mut cut = false;
    for _ in 0..100 {
        if slow.write_all(b"x").and_then(|()| slow.flush()).is_err() {
            cut = true;
            break;
        }
        thread::sleep(Duration::from_millis(200));
        if started.elapsed() > MESSAGE + PROMPT {
            break;
        }
    }
    cut = cut || ended(&mut *slow);
    assert!(cut, "{}: the trickler was cut", cell.name());
    assert!(
        started.elapsed() < MESSAGE + PROMPT + Duration::from_secs(2),
        "{}: cut after {:?}",
        cell.name(),
        started.elapsed()
    );
}

/// The first bytes a layer waits for, complete only far in the future: a
/// PROXY v2 header, or a TLS record header announcing 512 bytes of
/// `ClientHello`.
fn handshake_prefix(cell: &Cell) -> Vec<u8> {
    if cell.layer.proxy() {
        proxy_v2("127.0.0.9".parse().unwrap(), cell.addr())
    } else {
        let mut record = vec![0x16, 0x03, 0x01, 0x02, 0x00];
        record.resize(5 + 512, 0);
        record
    }
}

fn a_silent_and_a_dribbling_flood_cannot_keep_a_real_client_out(cell: &Cell) {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Connected and silent: no PROXY header, no ClientHello.
    let silent: Vec<TcpStream> = (0..3 * BUDGET)
        .map(|_| TcpStream::connect(cell.addr()).unwrap())
        .collect();
    // Connected and dribbling a handshake, one byte at a time.
    let mut dribbling: Vec<TcpStream> = (0..3 * BUDGET)
        .map(|_| TcpStream::connect(cell.addr()).unwrap())
        .collect();
    let prefix = handshake_prefix(cell);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            // Bounded by the prefix (`PROXY` is 28 bytes: the header stays
            // incomplete until its last byte).
            for byte in prefix.iter().take(prefix.len() - 1) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                for d in &mut dribbling {
                    let _ = d.write_all(std::slice::from_ref(byte));
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let mut real = cell.connect();
        let answer = ask(&mut *real, "let me in");
        stop.store(true, Ordering::Relaxed);
        assert_eq!(answer.unwrap(), "let me in", "{}", cell.name());
        assert!(
            started.elapsed() < PROMPT,
            "{}: served after {:?}",
            cell.name(),
            started.elapsed()
        );
    });
    drop((silent, dribbling));
}

fn limits_are_exact_for_the_whole_server(cell: &Cell) {
    // --max-per-ip=2 --max-connections=3.
    let served = |s: &mut Box<dyn Stream>| ask(&mut **s, "in").is_ok_and(|l| l == "in");
    let mut a1 = cell.connect_as("127.0.0.2").unwrap();
    let mut a2 = cell.connect_as("127.0.0.2").unwrap();
    assert!(
        served(&mut a1) && served(&mut a2),
        "{}: two from one address",
        cell.name()
    );
    let mut a3 = cell.connect_as("127.0.0.2").unwrap();
    assert!(
        !served(&mut a3),
        "{}: a third from one address refused",
        cell.name()
    );
    let mut b1 = cell.connect_as("127.0.0.3").unwrap();
    assert!(served(&mut b1), "{}: another address served", cell.name());
    let mut c1 = cell.connect_as("127.0.0.4").unwrap();
    assert!(
        !served(&mut c1),
        "{}: a fourth connection refused",
        cell.name()
    );
    drop((a1, a2, a3, b1, c1));
}

fn sigterm_drains_within_the_deadline(mut cell: Cell) {
    // One connection at a time under Synchronous: there, the busy one.
    let mut idle = cell.concurrent.then(|| {
        let mut idle = cell.connect();
        assert_eq!(ask(&mut *idle, "idle").unwrap(), "idle");
        idle
    });
    let mut busy = cell.connect();
    assert_eq!(ask(&mut *busy, "warm").unwrap(), "warm");
    busy.write_all(b"sleep 800\n").unwrap();
    busy.flush().unwrap();
    // The request is under way before the stop.
    thread::sleep(Duration::from_millis(200));
    let name = cell.name();
    let busy_reader = thread::spawn(move || {
        let mut r = BufReader::new(busy);
        let mut line = String::new();
        r.read_line(&mut line).map(|_| line)
    });
    cell.server.signal(libc::SIGTERM);
    let stopped = Instant::now();
    if let Some(idle) = idle.as_mut() {
        assert!(ended(&mut **idle), "{name}: the idle connection closed");
        // The drain has begun: a new client is refused, never served.
        let late = cell
            .connect_as("127.0.0.1")
            .and_then(|mut c| ask(&mut *c, "late"));
        assert!(late.is_err(), "{name}: served during the drain: {late:?}");
    }
    let status = cell.server.wait_exit(CLOSE + PROMPT);
    let took = stopped.elapsed();
    assert!(status.success(), "{name}: {status}");
    assert!(took < CLOSE + PROMPT, "{name}: exited after {took:?}");
    let line = busy_reader.join().unwrap();
    assert_eq!(
        line.ok().as_deref(),
        Some("sleep 800\n"),
        "{name}: the busy request finished"
    );
}

/// The pid of the server process that answers on `stream`.
fn server_pid(stream: &mut dyn Stream) -> io::Result<u32> {
    ask(stream, "pid")?
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn an_upgrade_under_load_loses_nothing(mut cell: Cell) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const CLIENTS: usize = 3;
    let name = cell.name();
    let old = cell.server.pid();
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let by_new = AtomicUsize::new(0);
    let failed = parking_lot::Mutex::new(Vec::new());
    let mut held = thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                // Bounded: stops when told, or after DEADLINE at most.
                let until = Instant::now() + DEADLINE;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    // A new connection each time, one request on it.
                    match cell
                        .connect_as("127.0.0.1")
                        .and_then(|mut c| server_pid(&mut *c))
                    {
                        Ok(pid) => {
                            served.fetch_add(1, Ordering::Relaxed);
                            if pid != old {
                                by_new.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => failed.lock().push(format!("{:?}: {e}", e.kind())),
                    }
                }
            });
        }
        wait_until(DEADLINE, "clients served before the upgrade", || {
            served.load(Ordering::Relaxed) >= 2 * CLIENTS
        });
        // Held open, idle across the upgrade. Under `Synchronous` it holds
        // the old process's only place: the others queue meanwhile, for the
        // new process to take.
        let mut held = cell.connect();
        assert_eq!(server_pid(&mut *held).unwrap(), old, "{name}");
        cell.server.signal(libc::SIGUSR2);
        wait_until(DEADLINE, "clients served by the new process", || {
            by_new.load(Ordering::Relaxed) >= 5 * CLIENTS
        });
        stop.store(true, Ordering::Relaxed);
        held
    });
    let failed = failed.into_inner();
    assert!(
        failed.is_empty(),
        "{name}: {} of {} requests failed across the upgrade: {failed:?}; stderr: {}",
        failed.len(),
        served.load(Ordering::Relaxed) + failed.len(),
        cell.server.stderr()
    );
    // The old process serves its connection on, and waits for it.
    assert_eq!(
        ask(&mut *held, "still here").unwrap(),
        "still here",
        "{name}"
    );
    assert_eq!(server_pid(&mut *held).unwrap(), old, "{name}");
    assert!(
        !cell.server.has_exited(),
        "{name}: the old process left with a connection open"
    );
    drop(held);
    let status = cell.server.wait_exit(DEADLINE);
    assert!(status.success(), "{name}: old process {status}");
    // The new process serves on; it goes with the process group.
    let mut fresh = cell.connect();
    assert_ne!(server_pid(&mut *fresh).unwrap(), old, "{name}");
}

fn cell(strategy: &'static str, layer: Layer) {
    let dir = TempDir::new("matrix");
    let cert = make_cert(&dir, "server");
    let handshake = layer != Layer::Plain;
    let inline = matches!(strategy, "synchronous" | "prefork");
    let budget = format!("--max-pre-handler={BUDGET}");
    let with_budget = [budget.as_str()];
    let extra: &[&str] = if handshake && !inline {
        &with_budget
    } else {
        &[]
    };
    // Each group of promises has a server process of its own, the groups
    // side by side (most of a promise is waiting for a deadline).
    thread::scope(|s| {
        s.spawn(|| {
            let trickled = Cell::start(strategy, layer, &cert, &[]);
            the_message_deadline_cuts_a_trickler(&trickled);
        });
        s.spawn(|| {
            let upgraded = Cell::start(strategy, layer, &cert, &["--upgrade"]);
            an_upgrade_under_load_loses_nothing(upgraded);
        });
        if strategy == "forking" {
            refused_at_build(strategy, |b| b.max_per_ip(Some(2)), "max_per_ip");
            refused_at_build(strategy, |b| b.max_connections(Some(3)), "max_connections");
        } else if strategy != "synchronous" {
            s.spawn(|| {
                let limits = ["--max-per-ip=2", "--max-connections=3"];
                let limited = Cell::start(strategy, layer, &cert, &limits);
                limits_are_exact_for_the_whole_server(&limited);
            });
        }
        if handshake && inline {
            refused_at_build(
                strategy,
                |b| b.max_pre_handler(Some(BUDGET)),
                "max_pre_handler",
            );
        }
        let general = Cell::start(strategy, layer, &cert, extra);
        echo_under_load(&general);
        a_panic_costs_one_connection(&general);
        bad_input_costs_one_connection(&general);
        if handshake && !inline {
            a_silent_and_a_dribbling_flood_cannot_keep_a_real_client_out(&general);
        }
        sigterm_drains_within_the_deadline(general);
    });
}

/// A combination the library cannot keep is refused when the server is
/// built, with an error naming both parts (built here in-process: nothing
/// is served, nothing forks).
fn refused_at_build(
    strategy: &str,
    option: impl FnOnce(
        socketserver::Builder<Box<dyn socketserver::Strategy>>,
    ) -> socketserver::Builder<Box<dyn socketserver::Strategy>>,
    what: &str,
) {
    let chosen = socketserver::strategy::from_name(strategy).unwrap();
    let name = chosen.name();
    let built = option(socketserver::Server::builder().strategy(chosen))
        .tcp("127.0.0.1:0", |r: &mut socketserver::StreamRequest| {
            r.echo().map(drop)
        });
    let err = built.expect_err("refused at build");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(what) && text.contains(name),
        "{strategy}: {text}"
    );
}

macro_rules! matrix {
    ($($strategy:ident => $name:literal;)*) => {$(
        mod $strategy {
            use super::*;
            #[test] fn plain() { cell($name, Layer::Plain) }
            #[test] fn tls() { cell($name, Layer::Tls) }
            #[test] fn proxy_v2() { cell($name, Layer::Proxy) }
            #[test] fn proxy_v2_tls() { cell($name, Layer::ProxyTls) }
        }
    )*};
}

matrix! {
    synchronous => "synchronous";
    threading => "threading";
    pool => "pool";
    forking => "forking";
    prefork => "prefork";
    prefork_threading => "prefork-threading";
    prefork_green => "prefork-green";
    green => "green";
}
