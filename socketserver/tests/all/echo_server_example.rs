//! The `echo_server` example as a process: clean exit on SIGTERM, several
//! processes sharing one port with `SO_REUSEPORT`, and a listener passed by
//! systemd-style socket activation. (Cargo builds the example before these
//! tests run.)

use crate::common;
use common::example;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running example process, killed on drop if still alive.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = common::listening_url(&common::stdout_lines(&mut child));
        Proc { child, url }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// SIGTERM, then waits (at most 2 s) for exit; returns the status and
    /// stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String, Duration) {
        let start = Instant::now();
        unsafe_free_kill(self.child.id(), libc::SIGTERM);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "no exit within 2 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = start.elapsed();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err, took)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill(2)` through the `kill` command, keeping this file free of unsafe.
fn unsafe_free_kill(pid: u32, signal: i32) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn echo_once(port: u16, msg: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

fn served(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("echo_server: served ")?
                .strip_suffix(" requests")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `served N requests` line in {stderr:?}"))
}

fn sigterm_exits_zero_at_once_after_serving(strategy: &str) {
    let p = Proc::start(Command::new(example()).args(["127.0.0.1:0", strategy]));
    assert!(p.url.starts_with("tcp://127.0.0.1:"));
    for _ in 0..3 {
        echo_once(p.port(), b"hello world\n");
    }
    let (status, err, took) = p.terminate();
    assert!(status.success(), "exit status {status}, stderr {err}");
    // Under prefork the children took them: the parent's count includes
    // theirs.
    assert_eq!(served(&err), 3, "{strategy}");
    eprintln!("the example ({strategy}) exited {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn sigterm_exits_zero_at_once_after_serving_threading() {
    sigterm_exits_zero_at_once_after_serving("threading");
}

#[test]
fn sigterm_exits_zero_at_once_after_serving_and_counts_what_prefork_children_served() {
    sigterm_exits_zero_at_once_after_serving("prefork");
}

/// SIGTERM with 50 idle connected clients: exit 0 within a second, under
/// every strategy (the example is what docs/deploy.md runs under systemd).
fn sigterm_with_50_idle_clients_exits_zero_within_a_second(strategy: &str) {
    let p = Proc::start(Command::new(example()).args(["127.0.0.1:0", strategy]));
    let port = p.port();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").unwrap();
        clients.push(s);
    }
    // As many as the strategy serves at once (pool: 16 workers, forking:
    // 40 children, synchronous: one) are served, then idle; the rest wait
    // in the queue or the backlog.
    let served_at_once = match strategy {
        "threading" => 50,
        "pool" => 16,
        "forking" => 40,
        _ => 1,
    };
    for s in &mut clients[..served_at_once] {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    let (status, err, took) = p.terminate();
    eprintln!("{strategy}: exit {} ms after SIGTERM", took.as_millis());
    assert!(status.success(), "exit status {status}, stderr {err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    drop(clients);
}

#[test]
fn sigterm_with_50_idle_clients_exits_zero_within_a_second_threading() {
    sigterm_with_50_idle_clients_exits_zero_within_a_second("threading");
}

#[test]
fn sigterm_with_50_idle_clients_exits_zero_within_a_second_pool() {
    sigterm_with_50_idle_clients_exits_zero_within_a_second("pool");
}

#[test]
fn sigterm_with_50_idle_clients_exits_zero_within_a_second_forking() {
    sigterm_with_50_idle_clients_exits_zero_within_a_second("forking");
}

#[test]
fn sigterm_with_50_idle_clients_exits_zero_within_a_second_synchronous() {
    sigterm_with_50_idle_clients_exits_zero_within_a_second("synchronous");
}

#[test]
fn a_killed_forking_server_leaves_no_child_holding_its_port() {
    let p = Proc::start(Command::new(example()).args(["127.0.0.1:0", "forking"]));
    let port = p.port();
    // A child serving an idle client.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    idle.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    idle.read_exact(&mut b).unwrap();
    unsafe_free_kill(p.child.id(), libc::SIGKILL);
    drop(p);
    // The child still holds the idle connection, but not the port.
    let rebound = std::net::TcpListener::bind(("127.0.0.1", port));
    assert!(
        rebound.is_ok(),
        "port {port} still held after the server was killed: {rebound:?}"
    );
    drop(idle); // the orphaned child reads EOF and exits
}

#[test]
fn three_processes_share_one_port_with_reuse_port() {
    let first =
        Proc::start(Command::new(example()).args(["127.0.0.1:0", "threading", "--reuse-port"]));
    let port = first.port();
    let addr = format!("127.0.0.1:{port}");
    let others: Vec<Proc> = (0..2)
        .map(|_| {
            Proc::start(Command::new(example()).args([addr.as_str(), "threading", "--reuse-port"]))
        })
        .collect();
    for p in &others {
        assert_eq!(p.port(), port);
    }
    // The kernel spreads new connections by a hash of the client's address
    // and port: 300 connections from fresh ports reach every process.
    for i in 0..300u32 {
        echo_once(port, format!("conn {i}\n").as_bytes());
    }
    let counts: Vec<u64> = std::iter::once(first)
        .chain(others)
        .map(|p| {
            let (status, err, _) = p.terminate();
            assert!(status.success());
            served(&err)
        })
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 300, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "every process served some: {counts:?}"
    );
}

#[test]
fn serves_a_listener_passed_by_socket_activation() {
    // The supervisor's side: make the listener, pass it as fd 3 with
    // LISTEN_PID set to the server's pid (the shell's `$$`, kept by exec).
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(16).unwrap();
    listener.set_cloexec(false).unwrap();
    let port = listener.local_addr().unwrap().as_socket().unwrap().port();
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" systemd threading 3<&{}",
        listener.as_raw_fd()
    );
    // bash, not sh: dash takes single-digit descriptors only, and with
    // tests running in parallel the listener's number is often above 9.
    let p = Proc::start(Command::new("bash").arg("-c").arg(script).arg(example()));
    assert_eq!(p.port(), port, "serves the inherited socket, not a new one");
    drop(listener); // the server's copy keeps it open
    echo_once(port, b"activated\n");
    let (status, err, _) = p.terminate();
    assert!(status.success(), "{err}");
    assert_eq!(served(&err), 1);
}

#[test]
fn running_out_of_fds_backs_off_keeps_serving_and_recovers() {
    // 24 fds: stdio, the listener, the wake-up pair and its signal copies
    // leave room for about 16 connections.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=24", "--"])
        .arg(example())
        .args(["127.0.0.1:0", "threading"]);
    let p = Proc::start(cmd.env("RUST_LOG", "warn"));
    let port = p.port();
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    // Fill every fd the server has with served connections.
    let mut held = Vec::new();
    for i in 0..40 {
        let mut c = connect();
        c.write_all(b"x").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        let served = c.read_exact(&mut b).is_ok();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        held.push((c, served));
        if !served {
            assert!(i > 5, "only {i} connections before running out");
            break;
        }
    }
    let (waiting, served) = held.pop().unwrap();
    eprintln!(
        "fd exhaustion: {} connections served before accept failed",
        held.len()
    );
    assert!(!served, "the server ran out of fds within 40 connections");
    // Existing clients are still served while accept fails.
    for (c, _) in &mut held {
        c.write_all(b"still here").unwrap();
        let mut back = [0u8; 10];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"still here");
    }
    // Free the fds: the waiting client is accepted and served.
    held.clear();
    let mut waiting = waiting;
    let mut b = [0u8; 1];
    waiting
        .read_exact(&mut b)
        .expect("served once fds freed up");
    assert_eq!(&b, b"x");
    drop(waiting);
    let (status, err, _) = p.terminate();
    assert!(status.success());
    assert!(
        err.contains("pausing accepts"),
        "the EMFILE backoff was logged: {err}"
    );
    let pauses = err.matches("pausing accepts").count();
    assert!(
        pauses < 20,
        "logged with backoff, not in a loop: {pauses} lines"
    );
}
