//! Behind a real `haproxy`: three `echo_server --proxy-protocol --greet`
//! processes on 127.0.0.2, 127.0.0.3 and 127.0.0.4, `haproxy` in front with
//! `send-proxy-v2` and TCP health checks, clients on 127.0.0.5 and
//! 127.0.0.6. The backends see the clients' own addresses, and their
//! `max_per_ip` (`--max-per-ip=1`) counts clients, not the proxy; a backend
//! killed with SIGKILL is taken out by the health check and clients keep
//! being served. Skipped (with the reason printed) when `haproxy` is not
//! installed; `.ci/run` installs it.
//!
//! The configuration is the one shown in docs/deploy.md.

use crate::common;
use common::example;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Health check interval (`inter`) and failures before DOWN (`fall`).
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
const FALL: u32 = 2;

/// Whether `haproxy` runs here; prints why the test is skipped if not.
fn haproxy_available(test: &str) -> bool {
    match Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("skipped {test}: `haproxy -v` exited with {s}");
            false
        }
        Err(e) => {
            eprintln!(
                "skipped {test}: haproxy cannot be started ({e}); install it with \
                 `apt-get install haproxy` (.ci/run does)"
            );
            false
        }
    }
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ss-haproxy-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed (SIGKILL) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `echo_server IP:0 threading --proxy-protocol --greet [EXTRA]`;
/// returns it and its address.
fn backend(ip: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    backend_at(&format!("{ip}:0"), extra)
}

/// Starts the same backend on `addr` (`IP:PORT`), e.g. again after a stop.
fn backend_at(addr: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(example())
        .args([addr, "threading", "--proxy-protocol", "--greet"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = common::listening_url(&common::stdout_lines(&mut child));
    let proc = Proc(child);
    let addr = url
        .strip_prefix("tcp://")
        .unwrap_or_else(|| panic!("not a TCP server: {url}"))
        .parse()
        .unwrap();
    (proc, addr)
}

/// A free port on 127.0.0.1: bound to port 0, read back, released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The configuration of docs/deploy.md, with this run's addresses.
fn config(frontend: u16, admin: &Path, backends: &[SocketAddr]) -> String {
    let inter = CHECK_INTERVAL.as_millis();
    let mut cfg = format!(
        "global
    maxconn 1000
    stats socket {admin} mode 600 level admin

defaults
    mode tcp
    timeout connect 500ms
    timeout client 10s
    timeout server 10s
    retries 3
    option redispatch

frontend echo
    bind 127.0.0.1:{frontend}
    default_backend echo_servers

backend echo_servers
    balance roundrobin
    default-server send-proxy-v2 check inter {inter}ms fall {FALL} rise 1
",
        admin = admin.display()
    );
    for (i, b) in backends.iter().enumerate() {
        let _ = writeln!(cfg, "    server s{} {b}", i + 1);
    }
    cfg
}

/// `haproxy` with three backends; every part is stopped on drop.
struct Farm {
    backends: Vec<(Proc, SocketAddr)>,
    haproxy: Proc,
    frontend: SocketAddr,
    admin: PathBuf,
    dir: TempDir,
}

impl Farm {
    /// `haproxy` in front of three backends, each started with `extra`
    /// arguments.
    fn start(tag: &str, extra: &[&str]) -> Farm {
        let dir = TempDir::new(tag);
        let backends: Vec<_> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|ip| backend(ip, extra))
            .collect();
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.1).collect();
        let port = free_port();
        let admin = dir.0.join("admin.sock");
        let cfg_path = dir.0.join("haproxy.cfg");
        std::fs::write(&cfg_path, config(port, &admin, &addrs)).unwrap();
        let log = std::fs::File::create(dir.0.join("haproxy.log")).unwrap();
        let haproxy = Proc(
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let mut farm = Farm {
            backends,
            haproxy,
            frontend: SocketAddr::from(([127, 0, 0, 1], port)),
            admin,
            dir,
        };
        farm.wait_all_up();
        farm
    }

    fn haproxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("haproxy.log")).unwrap_or_default()
    }

    /// Waits (10 s at most) until `haproxy`'s admin socket shows the three
    /// servers UP.
    fn wait_all_up(&mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.haproxy.0.try_wait().unwrap() {
                panic!("haproxy exited with {status}: {}", self.haproxy_log());
            }
            let up = self
                .stats()
                .map(|rows| {
                    rows.iter()
                        .filter(|r| r["svname"].starts_with('s') && r["status"] == "UP")
                        .count()
                })
                .unwrap_or(0);
            if up == 3 {
                return;
            }
            assert!(
                Instant::now() < end,
                "the 3 servers are not UP within 10 s: {:?}\n{}",
                self.stats(),
                self.haproxy_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `show stat` on the admin socket: one map per row (column name to
    /// value); `None` while the socket is not there yet.
    fn stats(&self) -> Option<Vec<HashMap<String, String>>> {
        stats(&self.admin)
    }
}

fn stats(admin: &Path) -> Option<Vec<HashMap<String, String>>> {
    let mut s = UnixStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut csv = String::new();
    s.read_to_string(&mut csv).ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    Some(
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                header
                    .iter()
                    .zip(l.split(','))
                    .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                    .collect()
            })
            .collect(),
    )
}

/// A connection to `to` from `source` (port 0), with 5 s timeouts.
fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// One request through `haproxy` from `source`: the greeting line, then an
/// echo. Returns the greeting and the client's own address.
fn request(source: &str, to: SocketAddr, n: usize) -> std::io::Result<(String, SocketAddr)> {
    let s = connect_from(source, to)?;
    let me = s.local_addr()?;
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting)?;
    let msg = format!("ping {n}\n");
    r.get_mut().write_all(msg.as_bytes())?;
    let mut back = String::new();
    r.read_line(&mut back)?;
    if back != msg {
        return Err(std::io::Error::other(format!(
            "echo {back:?} for {msg:?} (greeting {greeting:?})"
        )));
    }
    Ok((greeting, me))
}

#[test]
fn backends_behind_haproxy_see_the_real_client_addresses() {
    if !haproxy_available("backends_behind_haproxy_see_the_real_client_addresses") {
        return;
    }
    let farm = Farm::start("clients", &[]);
    for n in 0..12 {
        let source = if n % 2 == 0 { "127.0.0.5" } else { "127.0.0.6" };
        let (greeting, me) = request(source, farm.frontend, n)
            .unwrap_or_else(|e| panic!("request {n} from {source}: {e}\n{}", farm.haproxy_log()));
        // `peer CLIENT via PROXY`: the client is us, the proxy is HAProxy's
        // own connection to the backend.
        let mut words = greeting.split_whitespace();
        assert_eq!(
            words.next(),
            Some("peer"),
            "{greeting:?}: is examples/echo_server up to date? \
             (`cargo build -p socketserver --example echo_server`)"
        );
        assert_eq!(words.next(), Some(me.to_string().as_str()), "{greeting}");
        assert_eq!(words.next(), Some("via"), "{greeting}");
        let via: SocketAddr = words.next().unwrap().parse().unwrap();
        assert!(via.ip().is_loopback(), "{greeting}");
    }
    // Round robin: every backend served some of them (`stot`: sessions).
    let rows = farm.stats().unwrap();
    let served: Vec<(String, u64)> = rows
        .iter()
        .filter(|r| r["pxname"] == "echo_servers" && r["svname"].starts_with('s'))
        .map(|r| (r["svname"].clone(), r["stot"].parse().unwrap()))
        .collect();
    println!("sessions per backend: {served:?}");
    assert_eq!(served.len(), 3);
    assert!(served.iter().all(|(_, n)| *n >= 1), "{served:?}");
    assert_eq!(farm.backends.len(), 3);
}

#[test]
fn a_backend_killed_with_sigkill_is_taken_out_and_clients_recover() {
    if !haproxy_available("a_backend_killed_with_sigkill_is_taken_out_and_clients_recover") {
        return;
    }
    let mut farm = Farm::start("sigkill", &[]);
    // Steady traffic, then SIGKILL to s2 on 127.0.0.3, traffic on.
    for n in 0..6 {
        request("127.0.0.5", farm.frontend, n).unwrap();
    }
    let admin = farm.admin.clone();
    let killed_at = Instant::now();
    let (mut victim, victim_addr) = farm.backends.remove(1);
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    // Watch the admin socket for s2 going DOWN, on its own thread.
    let watcher = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let down = stats(&admin).is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["svname"] == "s2" && r["status"].starts_with("DOWN"))
            });
            if down {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    });
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut n = 6;
    let mut after_down = 0;
    while killed_at.elapsed() < Duration::from_secs(20) {
        let started = Instant::now();
        let source = if n % 2 == 0 { "127.0.0.5" } else { "127.0.0.6" };
        match request(source, farm.frontend, n) {
            Ok(_) => {}
            Err(e) => failures.push((started.duration_since(killed_at), e.to_string())),
        }
        slowest = slowest.max(started.elapsed());
        n += 1;
        if watcher.is_finished() {
            after_down += 1;
            if after_down >= 30 {
                break;
            }
        }
    }
    let down_at = watcher
        .join()
        .unwrap()
        .unwrap_or_else(|| panic!("{victim_addr} never marked DOWN\n{}", farm.haproxy_log()));
    let to_down = down_at.duration_since(killed_at);
    let rows = farm.stats().unwrap();
    let s2 = rows
        .iter()
        .find(|r| r["pxname"] == "echo_servers" && r["svname"] == "s2")
        .unwrap();
    println!(
        "SIGKILL to {victim_addr}: marked DOWN after {to_down:?} (check every \
         {CHECK_INTERVAL:?}, fall {FALL}); {} requests in all, {} failed {failures:?}; slowest \
         {slowest:?}; HAProxy for s2: status {}, connection errors {}, retries {}, redispatches {}",
        n - 6,
        failures.len(),
        s2["status"],
        s2["econ"],
        s2["wretr"],
        s2["wredis"],
    );
    // Recovered: nothing failed that started after HAProxy took s2 out,
    // and the 30 requests after it all went through.
    assert!(
        failures.iter().all(|(at, _)| *at < to_down),
        "failures after DOWN: {failures:?}"
    );
    assert!(after_down >= 30, "only {after_down} requests after DOWN");
    assert!(
        to_down < Duration::from_secs(10),
        "DOWN after {to_down:?}: the health check did not work"
    );
}

#[test]
fn max_per_ip_behind_haproxy_counts_clients_not_the_proxy() {
    if !haproxy_available("max_per_ip_behind_haproxy_counts_clients_not_the_proxy") {
        return;
    }
    let farm = Farm::start("per-ip", &["--max-per-ip=1"]);
    // Every backend allows one connection per client address. Round robin
    // puts one connection of 127.0.0.5 on each backend, then one of
    // 127.0.0.6 on each: all served, although every connection reaches the
    // backends from HAProxy's one address.
    let mut held = Vec::new();
    for source in ["127.0.0.5", "127.0.0.6"] {
        for _ in 0..3 {
            let s = connect_from(source, farm.frontend).unwrap();
            let mut r = BufReader::new(s);
            let mut greeting = String::new();
            r.read_line(&mut greeting).unwrap();
            assert!(
                greeting.starts_with(&format!("peer {source}:")),
                "{greeting:?}"
            );
            held.push(r);
        }
    }
    // A fourth connection of 127.0.0.5 finds it on every backend: refused
    // (closed without a greeting), wherever it lands.
    let s = connect_from("127.0.0.5", farm.frontend).unwrap();
    let mut greeting = String::new();
    let refused = match BufReader::new(s).read_line(&mut greeting) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(refused, "a fourth connection of 127.0.0.5 got {greeting:?}");
    // The six held connections still echo.
    for (i, r) in held.iter_mut().enumerate() {
        let msg = format!("held {i}\n");
        r.get_mut().write_all(msg.as_bytes()).unwrap();
        let mut back = String::new();
        r.read_line(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    println!(
        "max_per_ip 1 on each backend behind HAProxy: 6 connections held \
         (2 clients x 3 backends), the 7th (a client's 4th) refused"
    );
}

#[test]
fn the_configuration_in_docs_deploy_md_is_the_one_tested() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md");
    let docs = std::fs::read_to_string(&docs).unwrap();
    let shown = config(
        7000,
        Path::new("/run/haproxy/echo-admin.sock"),
        &[
            "127.0.0.2:7001".parse().unwrap(),
            "127.0.0.3:7002".parse().unwrap(),
            "127.0.0.4:7003".parse().unwrap(),
        ],
    );
    assert!(
        docs.contains(&format!("```\n{shown}```\n")),
        "docs/deploy.md does not show this haproxy.cfg:\n{shown}"
    );
}

/// One command on `haproxy`'s admin socket; its answer.
fn admin_command(admin: &Path, command: &str) -> String {
    let mut s = UnixStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The `show stat` row of backend server `name`.
fn server_row(admin: &Path, name: &str) -> HashMap<String, String> {
    stats(admin)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r["pxname"] == "echo_servers" && r["svname"] == name)
        .unwrap_or_default()
}

/// Polls `cond` every 10 ms for at most 10 s; panics naming `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < end, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The operator's rolling restart, each backend in turn: `HAProxy` stops
/// sending it new connections (`state drain`), its sessions end, SIGTERM
/// (the server drains and exits 0), the new process binds the same
/// address, `HAProxy` sends to it again (`state ready`) once its check
/// passes. Two clients keep a request (connect, greeting, echo, close)
/// going all the time: none may fail, and `HAProxy`'s own counters show no
/// connection or response error on any backend.
#[test]
fn a_rolling_restart_under_load_loses_no_request() {
    if !haproxy_available("a_rolling_restart_under_load_loses_no_request") {
        return;
    }
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let mut farm = Farm::start("rolling", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = ["127.0.0.5", "127.0.0.6"]
        .into_iter()
        .map(|source| {
            let (stop, served, failures) = (
                Arc::clone(&stop),
                Arc::clone(&served),
                Arc::clone(&failures),
            );
            let frontend = farm.frontend;
            std::thread::spawn(move || {
                // Bounded: at most 200,000 requests or 60 s.
                let end = Instant::now() + Duration::from_secs(60);
                for n in 0..200_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > end {
                        break;
                    }
                    match request(source, frontend, n) {
                        Ok(_) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut per_backend = Vec::new();
    for i in 0..farm.backends.len() {
        let name = format!("s{}", i + 1);
        let addr = farm.backends[i].1;
        let t = Instant::now();
        admin_command(
            &farm.admin,
            &format!("set server echo_servers/{name} state drain"),
        );
        wait_for(&format!("{name} without sessions"), || {
            server_row(&farm.admin, &name)
                .get("scur")
                .map(String::as_str)
                == Some("0")
        });
        let pid = farm.backends[i].0 .0.id();
        let killed = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let mut status = None;
        wait_for(&format!("{name} exits after SIGTERM"), || {
            status = farm.backends[i].0 .0.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.unwrap().success(), "{name}: {status:?}");
        let (proc, again) = backend_at(&addr.to_string(), &[]);
        assert_eq!(again, addr);
        farm.backends[i] = (proc, again);
        admin_command(
            &farm.admin,
            &format!("set server echo_servers/{name} state ready"),
        );
        wait_for(&format!("{name} UP again"), || {
            server_row(&farm.admin, &name)
                .get("status")
                .map(String::as_str)
                == Some("UP")
        });
        per_backend.push(t.elapsed());
    }
    // A little more traffic on the restarted farm, then stop.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let rows: Vec<HashMap<String, String>> = (1..=3)
        .map(|i| server_row(&farm.admin, &format!("s{i}")))
        .collect();
    let counters: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}: sessions {} econ {} eresp {} wretr {} wredis {}",
                r["svname"], r["stot"], r["econ"], r["eresp"], r["wretr"], r["wredis"]
            )
        })
        .collect();
    let failures = failures.lock().unwrap().clone();
    println!(
        "rolling restart of 3 backends in {:?} ({per_backend:?} each): {} requests served, {} \
         failed; HAProxy: {counters:?}",
        started.elapsed(),
        served.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}\n{}", farm.haproxy_log());
    assert!(served.load(Ordering::Relaxed) > 0);
    for r in &rows {
        assert_eq!(
            r["econ"], "0",
            "connection errors to {}: {counters:?}",
            r["svname"]
        );
        assert_eq!(
            r["eresp"], "0",
            "response errors from {}: {counters:?}",
            r["svname"]
        );
    }
}
