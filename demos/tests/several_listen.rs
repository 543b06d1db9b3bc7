//! `--listen` repeatable on every `demos ... serve`: one server on every
//! address given (TCP over IPv4 and IPv6, a Unix socket), one `listening
//! on` line each, in order, under every strategy; SIGTERM stops them all
//! and removes the Unix socket file; `--listen-plain` beside TLS (and its
//! refusals); chat, shell and files on two addresses; a SIGUSR2 upgrade
//! keeps every listener serving without refusing a connection; `--metrics`
//! shows one series whose counters add up both listeners.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{run_demos, wait_until, ServerProcess, DEADLINE};
use socketserver::Address;
use socketserver_tests::group_members;

/// Sends `line` and reads one line back.
fn echo(stream: impl Read + Write, line: &str) -> std::io::Result<String> {
    let mut reader = BufReader::new(stream);
    writeln!(reader.get_mut(), "{line}")?;
    let mut back = String::new();
    reader.read_line(&mut back)?;
    Ok(back)
}

fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, DEADLINE)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.set_write_timeout(Some(DEADLINE))?;
    Ok(s)
}

fn unix(path: &Path) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.set_write_timeout(Some(DEADLINE))?;
    Ok(s)
}

/// Echoes a line through `addr` (TCP or Unix).
fn echo_at(addr: &Address, line: &str) -> std::io::Result<String> {
    match addr {
        Address::Inet(a) => echo(tcp(*a)?, line),
        Address::Unix(Some(p)) => echo(unix(p)?, line),
        Address::Unix(None) => panic!("an unnamed address"),
    }
}

/// `demos echo serve` under `strategy` on three addresses, in this order:
/// `127.0.0.1`, `::1` (both port 0) and the Unix socket `sock`.
fn echo_on_three(sock: &Path, strategy: &str) -> ServerProcess {
    let unix_arg = format!("unix:{}", sock.display());
    ServerProcess::start(
        &[
            "echo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--listen",
            &unix_arg,
            "--strategy",
            strategy,
        ],
        &[],
    )
}

/// The next `n` `listening on` lines: (scheme, address).
fn listening(server: &ServerProcess, n: usize) -> Vec<(String, Address)> {
    (0..n)
        .map(|_| {
            let line = server.next_line();
            demos::listening::parse_listening_line(&line)
                .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
        })
        .collect()
}

fn every_listen_serves_and_sigterm_closes_them_all(strategy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let mut server = echo_on_three(&sock, strategy);
    let lines = listening(&server, 3);
    let schemes: Vec<&str> = lines.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(schemes, ["tcp", "tcp", "unix"]);
    let addrs: Vec<Address> = lines.into_iter().map(|(_, a)| a).collect();
    assert!(addrs[0].as_inet().unwrap().is_ipv4());
    assert!(addrs[1].as_inet().unwrap().is_ipv6());
    assert_eq!(addrs[2].as_path(), Some(sock.as_path()));
    for round in 0..2 {
        for (i, addr) in addrs.iter().enumerate() {
            let line = format!("{strategy} {i} {round}");
            assert_eq!(echo_at(addr, &line).unwrap(), format!("{line}\n"), "{addr}");
        }
    }
    ServerProcess::signal(server.child.id(), "TERM");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}; stderr:\n{}", server.stderr());
    assert!(!sock.exists(), "the socket file is removed");
    let pgid = server.child.id();
    wait_until(DEADLINE, "no process of the server left", || {
        group_members(pgid).is_empty()
    });
}

macro_rules! per_strategy {
    ($($name:ident: $strategy:literal;)*) => {
        mod echo_on_three_addresses {
            use super::*;
            $(
                #[test]
                fn $name() {
                    every_listen_serves_and_sigterm_closes_them_all($strategy);
                }
            )*
        }
    };
}

per_strategy! {
    synchronous: "synchronous";
    threading: "threading";
    pool: "pool";
    forking: "forking";
    prefork: "prefork";
    prefork_threading: "prefork-threading";
    prefork_green: "prefork-green";
    green: "green";
}

/// `demos tls gen` output in a temp dir.
fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = run_demos(&["tls", "gen", certs.to_str().unwrap()], b"", DEADLINE);
    assert!(out.status.success(), "tls gen: {}", out.stderr);
    dir
}

#[test]
fn tls_on_every_listen_and_plaintext_on_listen_plain() {
    let dir = certs();
    let cert = |n: &str| dir.path().join("certs").join(n);
    let plain_sock = dir.path().join("plain.sock");
    let plain_arg = format!("unix:{}", plain_sock.display());
    let server = ServerProcess::start(
        &[
            "echo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--listen-plain",
            &plain_arg,
            "--tls-cert",
            cert("server.pem").to_str().unwrap(),
            "--tls-key",
            cert("server-key.pem").to_str().unwrap(),
        ],
        &[],
    );
    let addrs: Vec<Address> = listening(&server, 3).into_iter().map(|(_, a)| a).collect();
    assert_eq!(addrs[2].as_path(), Some(plain_sock.as_path()));
    // Both --listen speak TLS: `demos echo client --tls-ca` gets its echo.
    for addr in &addrs[..2] {
        let out = run_demos(
            &[
                "echo",
                "client",
                "--connect",
                &addr.to_string(),
                "--tls-ca",
                cert("ca.pem").to_str().unwrap(),
                "sealed",
            ],
            b"",
            DEADLINE,
        );
        assert!(out.status.success(), "{addr}: {}", out.stderr);
        assert_eq!(out.stdout.trim_end(), "sealed", "{addr}");
    }
    // Plaintext to a TLS listener is no echo.
    let mut raw = tcp(addrs[0].as_inet().unwrap()).unwrap();
    raw.write_all(b"open\n").unwrap();
    let mut back = Vec::new();
    let _ = raw.read_to_end(&mut back);
    assert!(!back.starts_with(b"open"), "{back:?}");
    // --listen-plain: plaintext.
    assert_eq!(echo_at(&addrs[2], "open").unwrap(), "open\n");
}

#[test]
fn listen_plain_is_refused_without_tls_and_beyond_loopback() {
    let out = run_demos(
        &["echo", "serve", "--listen-plain", "127.0.0.1:0"],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--listen-plain"), "{}", out.stderr);
    assert!(out.stderr.contains("no TLS"), "{}", out.stderr);
    let dir = certs();
    let cert = |n: &str| dir.path().join("certs").join(n);
    let out = run_demos(
        &[
            "echo",
            "serve",
            "--listen-plain",
            "0.0.0.0:0",
            "--tls-cert",
            cert("server.pem").to_str().unwrap(),
            "--tls-key",
            cert("server-key.pem").to_str().unwrap(),
        ],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("--listen-plain 0.0.0.0:0"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("loopback"), "{}", out.stderr);
}

#[test]
fn chat_on_two_addresses_is_one_room() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("chat.sock");
    let unix_arg = format!("unix:{}", sock.display());
    let server = ServerProcess::start(
        &[
            "chat",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &unix_arg,
        ],
        &[],
    );
    let addrs: Vec<Address> = listening(&server, 2).into_iter().map(|(_, a)| a).collect();
    let mut ann = tcp(addrs[0].as_inet().unwrap()).unwrap();
    let mut ann_in = BufReader::new(ann.try_clone().unwrap());
    writeln!(ann, "ann").unwrap();
    let mut line = String::new();
    ann_in.read_line(&mut line).unwrap();
    assert!(line.starts_with("* welcome ann"), "{line:?}");
    // Bob comes in by the other socket, into the same room.
    let mut bob = unix(&sock).unwrap();
    let mut bob_in = BufReader::new(bob.try_clone().unwrap());
    writeln!(bob, "bob").unwrap();
    line.clear();
    bob_in.read_line(&mut line).unwrap();
    assert!(line.contains("online: ann, bob"), "{line:?}");
    writeln!(ann, "hello from tcp").unwrap();
    line.clear();
    bob_in.read_line(&mut line).unwrap();
    assert_eq!(line, "ann: hello from tcp\n");
    drop(server);
}

/// The running (not zombie) processes of the group of `leader`.
fn running(leader: u32) -> HashSet<u32> {
    group_members(leader)
        .into_iter()
        .filter(|&(_, state)| state != 'Z' && state != 'X')
        .map(|(pid, _)| pid)
        .collect()
}

/// Connect, echo a line, close, through `addr`, until `stop` (at most
/// 100,000 times); counts successes, records the first failure.
fn client(addr: &Address, ok: &AtomicU64, errors: &Mutex<Vec<String>>, stop: &AtomicBool) {
    for n in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let line = format!("{addr} {n}");
        match echo_at(addr, &line) {
            Ok(back) if back == format!("{line}\n") => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(back) => return errors.lock().unwrap().push(format!("{line}: got {back:?}")),
            Err(e) => return errors.lock().unwrap().push(format!("{line}: {e}")),
        }
    }
}

#[test]
fn an_upgrade_keeps_every_listener_serving_without_refusing_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = dir.path().join("up.sock");
    let mut server = echo_on_three(&sock, "threading");
    let first = server.child.id();
    let addrs: Vec<Address> = listening(&server, 3).into_iter().map(|(_, a)| a).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let clients: Vec<_> = addrs
        .iter()
        .zip(&counts)
        .map(|(addr, ok)| {
            let (addr, ok) = (addr.clone(), Arc::clone(ok));
            let (errors, stop) = (Arc::clone(&errors), Arc::clone(&stop));
            std::thread::spawn(move || client(&addr, &ok, &errors, &stop))
        })
        .collect();
    wait_until(DEADLINE, "every listener served before the upgrade", || {
        counts.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    });
    ServerProcess::signal(first, "USR2");
    // The new process adopted every socket: the same addresses, in order.
    let again: Vec<Address> = listening(&server, 3).into_iter().map(|(_, a)| a).collect();
    assert_eq!(again, addrs);
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}; stderr:\n{}", server.stderr());
    let successor = running(first).into_iter().next().expect("the new process");
    // The old process left the Unix socket file to its successor.
    assert!(sock.exists(), "the socket file stays for the new process");
    let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    wait_until(DEADLINE, "every listener served by the new process", || {
        counts
            .iter()
            .zip(&before)
            .all(|(c, b)| c.load(Ordering::Relaxed) > *b)
    });
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{errors:?}; stderr:\n{}",
        server.stderr()
    );
    ServerProcess::signal(successor, "TERM");
    wait_until(DEADLINE, "the new process exits", || {
        running(first).is_empty()
    });
    // (An adopted Unix socket's file is left at the end, as for a single
    // socket: `Unix::from_std` does not own the file.)
}

/// `demos shell serve` and `demos files serve` on a TCP and a Unix
/// address: their clients are served through either.
#[test]
fn shell_and_files_serve_on_two_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "the key\n").unwrap();
    let key = key.to_str().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("note.txt"), "hello").unwrap();
    let shell_arg = format!("unix:{}", dir.path().join("shell.sock").display());
    let files_arg = format!("unix:{}", dir.path().join("files.sock").display());
    let shell = ServerProcess::start(
        &[
            "shell",
            "serve",
            "--allow-root",
            "--key-file",
            key,
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &shell_arg,
        ],
        &[],
    );
    let files = ServerProcess::start(
        &[
            "files",
            "serve",
            "--root",
            root.to_str().unwrap(),
            "--key-file",
            key,
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &files_arg,
        ],
        &[],
    );
    let connect = |addr: &Address| match addr {
        Address::Unix(Some(p)) => format!("unix:{}", p.display()),
        a => a.to_string(),
    };
    for (_, addr) in listening(&shell, 2) {
        let target = connect(&addr);
        let out = run_demos(
            &[
                "shell",
                "run",
                "--connect",
                &target,
                "--key-file",
                key,
                "echo hi",
            ],
            b"",
            DEADLINE,
        );
        assert!(out.status.success(), "{target}: {}", out.stderr);
        assert_eq!(out.stdout, "hi\n", "{target}");
    }
    for (_, addr) in listening(&files, 2) {
        let target = connect(&addr);
        let out = run_demos(
            &["files", "list", "--connect", &target, "--key-file", key],
            b"",
            DEADLINE,
        );
        assert!(out.status.success(), "{target}: {}", out.stderr);
        assert!(out.stdout.contains("note.txt"), "{target}: {}", out.stdout);
    }
}

/// `--metrics` of a server on two addresses: one `server` series naming
/// both, whose counters add up the connections of both listeners.
#[test]
fn the_metrics_of_a_server_on_two_addresses_add_up_both_listeners() {
    let server = ServerProcess::start(
        &[
            "echo",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let addrs: Vec<Address> = listening(&server, 2).into_iter().map(|(_, a)| a).collect();
    let line = server.next_line();
    let metrics = demos::listening::parse_metrics_line(&line)
        .unwrap_or_else(|| panic!("not a metrics line: {line:?}"));
    for n in 0..3 {
        for addr in &addrs {
            assert_eq!(echo_at(addr, &format!("m{n}")).unwrap(), format!("m{n}\n"));
        }
    }
    let label = format!("tcp://{}, tcp://{}", addrs[0], addrs[1]);
    let series = format!("socketserver_accepted_total{{server=\"{label}\"}}");
    let mut body = String::new();
    wait_until(DEADLINE, "6 connections counted in one series", || {
        let mut c = tcp(metrics).unwrap();
        write!(c, "GET /metrics HTTP/1.0\r\nHost: {metrics}\r\n\r\n").unwrap();
        body.clear();
        c.read_to_string(&mut body).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.strip_prefix(' '))
            .is_some_and(|v| v == "6")
    });
    assert_eq!(
        body.matches("socketserver_accepted_total{").count(),
        1,
        "one series for the server on both addresses: {body}"
    );
}
