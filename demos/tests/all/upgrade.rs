//! Zero-downtime upgrade of a demos server (`SIGUSR2`): `demos echo serve`
//! with a TCP and a UDP port hands both sockets to a new copy of itself,
//! three times in a row, while clients connect, echo and close on TCP and
//! echo datagrams on UDP without pause: nothing is refused, reset or lost,
//! the addresses stay the same, a long-lived connection opened before the
//! first upgrade is still served by the first process, and every replaced
//! process exits once its connections are done. A chat server's room
//! tells its members to go (they reconnect to the new process, on the same
//! address).

use crate::common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{exe, wait_until};
use demos::listening::parse_listening_line;
use demos::showcase::drive::Member;
use socketserver::Address;
use socketserver_tests::group_members;

const UPGRADES: usize = 3;
/// Every blocking client operation fails after this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one upgrade or one exit may take.
const STEP: Duration = Duration::from_secs(10);

/// `kill(2)` through the `kill` command, keeping this file free of unsafe.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot send SIG{signal} to {pid}");
}

/// The running (not zombie) processes of the group of `leader`.
fn running(leader: u32) -> HashSet<u32> {
    group_members(leader)
        .into_iter()
        .filter(|&(_, state)| state != 'Z' && state != 'X')
        .map(|(pid, _)| pid)
        .collect()
}

/// The first server process and its successors (in its process group):
/// all killed on drop, whatever the test's outcome.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `demos args...` in a process group of its own; every generation
/// prints its `listening on` lines to the same pipe, read into the
/// receiver.
fn start(args: &[&str]) -> (Group, Receiver<String>) {
    let mut child = Command::new(exe())
        .args(args)
        .env("RUST_LOG", "warn")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn demos");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Group(child), lines)
}

/// The address of the next `listening on` line.
fn next_listening(lines: &Receiver<String>) -> SocketAddr {
    let line = lines
        .recv_timeout(STEP)
        .expect("no `listening on` line in time");
    match parse_listening_line(&line) {
        Some((_, Address::Inet(a))) => a,
        _ => panic!("not a listening line: {line:?}"),
    }
}

/// The next two `listening on` lines (TCP, then UDP) of some generation.
fn listening(lines: &Receiver<String>) -> (SocketAddr, SocketAddr) {
    (next_listening(lines), next_listening(lines))
}

/// Waits for the first process (our child) to exit; its status.
fn wait_exit(group: &mut Group) -> std::process::ExitStatus {
    let end = Instant::now() + STEP;
    loop {
        if let Some(status) = group.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < end, "the first process did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[derive(Default)]
struct Tally {
    tcp_ok: AtomicU64,
    udp_ok: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn failed(&self, what: String) {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(what);
    }
}

fn tcp_echo(stream: &mut TcpStream, reader: &mut impl BufRead, msg: &str) -> std::io::Result<()> {
    stream.write_all(format!("{msg}\n").as_bytes())?;
    let mut back = String::new();
    reader.read_line(&mut back)?;
    if back.trim_end() == msg {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("sent {msg:?}, got {back:?}")))
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Connect, echo a line, close; until `stop` (and at most 100,000 times).
fn tcp_client(id: usize, addr: SocketAddr, tally: &Tally, stop: &AtomicBool) {
    for n in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let msg = format!("tcp {id} {n}");
        match connect(addr).and_then(|(mut s, mut r)| tcp_echo(&mut s, &mut r, &msg)) {
            Ok(()) => tally.tcp_ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => return tally.failed(format!("{msg}: {e} ({:?})", e.kind())),
        };
    }
}

/// A datagram, its echo; until `stop` (and at most 100,000 times).
fn udp_client(addr: SocketAddr, tally: &Tally, stop: &AtomicBool) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.connect(addr).unwrap();
    let mut buf = [0u8; 64];
    for n in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let msg = format!("udp {n}");
        let result = socket
            .send(msg.as_bytes())
            .and_then(|_| socket.recv(&mut buf));
        match result {
            Ok(len) if &buf[..len] == msg.as_bytes() => {
                tally.udp_ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(len) => {
                let got = String::from_utf8_lossy(&buf[..len]).into_owned();
                return tally.failed(format!("{msg}: got {got:?}"));
            }
            Err(e) => return tally.failed(format!("{msg}: {e} ({:?})", e.kind())),
        }
    }
}

#[test]
fn three_upgrades_of_tcp_and_udp_echo_under_load_lose_nothing() {
    let (mut group, lines) = start(&[
        "echo",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--udp",
        "127.0.0.1:0",
        "--strategy",
        "threading",
    ]);
    let first = group.0.id();
    let (tcp, udp) = listening(&lines);

    // Opened before any upgrade: stays with the first process.
    let (mut long, mut long_reader) = connect(tcp).unwrap();
    tcp_echo(&mut long, &mut long_reader, "before").unwrap();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..2 {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        clients.push(std::thread::spawn(move || {
            tcp_client(id, tcp, &tally, &stop);
        }));
    }
    {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        clients.push(std::thread::spawn(move || udp_client(udp, &tally, &stop)));
    }

    let mut known = HashSet::from([first]);
    let mut current = first;
    let mut took = Vec::new();
    for upgrade in 1..=UPGRADES {
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        signal(current, "USR2");
        // The new process adopted both sockets: the same addresses.
        assert_eq!(listening(&lines), (tcp, udp), "upgrade {upgrade}");
        let mut successor = None;
        wait_until(STEP, "the new process", || {
            successor = running(first).into_iter().find(|p| !known.contains(p));
            successor.is_some()
        });
        let successor = successor.unwrap();
        took.push(sent.elapsed());
        if current != first {
            // No long-lived connection: it exits once its last short one
            // is done.
            wait_until(STEP, "the replaced process to exit", || {
                !running(first).contains(&current)
            });
        }
        known.insert(successor);
        current = successor;
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    // The first process still serves the connection it had.
    assert!(running(first).contains(&first));
    tcp_echo(&mut long, &mut long_reader, "after").unwrap();
    drop((long, long_reader));
    let status = wait_exit(&mut group);
    assert!(status.success(), "first process: {status}");

    signal(current, "TERM");
    wait_until(STEP, "every server process to exit", || {
        running(first).is_empty()
    });

    let errors = tally.errors.lock().unwrap_or_else(PoisonError::into_inner);
    let (tcp_ok, udp_ok) = (
        tally.tcp_ok.load(Ordering::Relaxed),
        tally.udp_ok.load(Ordering::Relaxed),
    );
    took.sort();
    eprintln!(
        "{UPGRADES} upgrades: {tcp_ok} TCP connections and {udp_ok} datagrams echoed, {} errors; signal to new process running: median {:?}",
        errors.len(),
        took[took.len() / 2]
    );
    assert!(errors.is_empty(), "client errors: {errors:#?}");
    assert!(tcp_ok > 0 && udp_ok > 0);
}

#[test]
fn an_upgraded_chat_server_sends_its_members_to_the_new_process() {
    let (mut group, lines) = start(&["chat", "serve", "--listen", "127.0.0.1:0"]);
    let first = group.0.id();
    let addr = Address::Inet(next_listening(&lines));
    let (mut alice, _) = Member::join(&addr, "alice", STEP).unwrap();
    signal(first, "USR2");
    assert_eq!(Address::Inet(next_listening(&lines)), addr);
    // The old room says goodbye and closes; its process exits.
    alice
        .expect("the farewell", STEP, |l| l == "* server is shutting down")
        .unwrap();
    assert!(alice.closed_within(STEP), "alice's connection stays open");
    let status = wait_exit(&mut group);
    assert!(status.success(), "first process: {status}");
    // Members reconnect to the new process, on the same address.
    let (mut alice, _) = Member::join(&addr, "alice", STEP).unwrap();
    let (_bob, _) = Member::join(&addr, "bob", STEP).unwrap();
    alice
        .expect("bob's arrival", STEP, |l| l.contains("bob"))
        .unwrap();
    let successor = running(first);
    assert_eq!(successor.len(), 1, "one new process: {successor:?}");
    let successor = *successor.iter().next().unwrap();
    assert_ne!(successor, first);
    signal(successor, "TERM");
    wait_until(STEP, "the new process to exit", || {
        running(first).is_empty()
    });
}
