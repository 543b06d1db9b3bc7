//! Zero-downtime upgrade of the `echo_server` example (`--upgrade`,
//! SIGUSR2): under continuous load from short and long-lived connections,
//! ten upgrades in a row refuse, reset and lose nothing, the long-lived
//! connections finish on the process they started on, and every upgrade
//! moves new connections to a new process.
//!
//! `cargo test` builds the example first; with a target filter
//! (`--test all`) it does not, so build it yourself after changing the
//! library: `cargo build -p socketserver --example echo_server`.

use crate::common;
use common::example;

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const RELOADS: usize = 10;
const SHORT_CLIENTS: usize = 4;
const LONG_CLIENTS: usize = 3;
/// How long one long-lived connection exchanges messages.
const SESSION: Duration = Duration::from_millis(600);
/// Every blocking client operation fails after this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one upgrade may take to move new connections.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// `kill(2)` through the `kill` command, keeping this file free of unsafe.
fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The running processes of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    common::group_members(pgid)
        .into_iter()
        .filter(|&pid| alive(pid))
        .collect()
}

/// Every process of the test: the first one (our child, leader of its own
/// process group) and its successors (in that group too, adopted by init
/// once their parent exits). Dropped: the whole group is killed, including
/// a successor no client has seen.
struct Processes {
    first: Child,
    pids: Mutex<Vec<u32>>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        let group = format!("-{}", self.first.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.first.kill();
        let _ = self.first.wait();
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Short connections served whole (connect, pid, echo, close).
    short_ok: AtomicU64,
    /// Messages echoed on long-lived connections.
    long_messages: AtomicU64,
    /// Long-lived connections that ended with every reply.
    long_sessions: AtomicU64,
    /// Of those, the ones whose process had been replaced by then.
    long_finished_on_old: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    lost: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Pids that served short connections.
    seen: Mutex<HashSet<u32>>,
    /// Pids replaced by an upgrade.
    retired: Mutex<HashSet<u32>>,
}

impl Tally {
    fn failed(&self, what: &str, e: &io::Error) {
        let counter = match e.kind() {
            io::ErrorKind::ConnectionRefused => &self.refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => &self.reset,
            _ => &self.lost,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.len() < 20 {
            errors.push(format!("{what}: {e} ({:?})", e.kind()));
        }
    }
}

fn connect(port: u16) -> io::Result<(TcpStream, BufReader<TcpStream>, u32)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let pid = line
        .trim()
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, format!("greeting {line:?}"))
        })?;
    Ok((stream, reader, pid))
}

fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    msg: &str,
) -> io::Result<()> {
    stream.write_all(msg.as_bytes())?;
    let mut back = vec![0; msg.len()];
    reader.read_exact(&mut back)?;
    if back != msg.as_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sent {msg:?}, got {:?}", String::from_utf8_lossy(&back)),
        ));
    }
    Ok(())
}

/// Connect, read the pid, echo one message, close; again and again.
fn short_client(id: usize, port: u16, tally: &Tally, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let msg = format!("short {id} {n}\n");
        let result = connect(port).and_then(|(mut stream, mut reader, pid)| {
            exchange(&mut stream, &mut reader, &msg)?;
            Ok(pid)
        });
        match result {
            Ok(pid) => {
                tally.short_ok.fetch_add(1, Ordering::Relaxed);
                tally.seen.lock().unwrap().insert(pid);
            }
            Err(e) => tally.failed(&format!("short client {id}, request {n}"), &e),
        }
    }
}

/// One connection exchanging messages at full speed for [`SESSION`], then
/// closing; again and again.
fn long_client(id: usize, port: u16, tally: &Tally, stop: &AtomicBool) {
    let mut session = 0u64;
    while !stop.load(Ordering::Relaxed) {
        session += 1;
        let result = connect(port).and_then(|(mut stream, mut reader, pid)| {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < SESSION {
                n += 1;
                exchange(
                    &mut stream,
                    &mut reader,
                    &format!("long {id} {session} {n}\n"),
                )?;
                tally.long_messages.fetch_add(1, Ordering::Relaxed);
            }
            Ok(pid)
        });
        match result {
            Ok(pid) => {
                tally.long_sessions.fetch_add(1, Ordering::Relaxed);
                if tally.retired.lock().unwrap().contains(&pid) {
                    tally.long_finished_on_old.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => tally.failed(&format!("long client {id}, session {session}"), &e),
        }
    }
}

/// Waits until `pid` has exited (or is a zombie), at most `deadline`.
fn wait_gone(pid: u32, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    !alive(pid)
}

#[test]
fn ten_upgrades_under_load_refuse_reset_and_lose_nothing() {
    let mut first = Command::new(example())
        .args(["127.0.0.1:0", "threading", "--tell-pid", "--upgrade"])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = first.stdout.take().unwrap();
    let first_pid = first.id();
    let procs = Processes {
        first,
        pids: Mutex::new(vec![first_pid]),
    };
    // Every generation prints its `listening on` line to the same pipe.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("no `listening on` line within 10 s");
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad first line {line:?}"));

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..SHORT_CLIENTS + LONG_CLIENTS {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        clients.push(std::thread::spawn(move || {
            if id < SHORT_CLIENTS {
                short_client(id, port, &tally, &stop);
            } else {
                long_client(id, port, &tally, &stop);
            }
        }));
    }
    let started = Instant::now();
    let mut current = first_pid;
    let mut took = Vec::new();
    for reload in 1..=RELOADS {
        // Long-lived connections in the middle of their exchange.
        std::thread::sleep(Duration::from_millis(200));
        let sent = Instant::now();
        assert!(send_signal(current, "USR2"), "cannot signal {current}");
        let successor = loop {
            let known: HashSet<u32> = procs.pids.lock().unwrap().iter().copied().collect();
            let new = tally
                .seen
                .lock()
                .unwrap()
                .iter()
                .copied()
                .find(|p| !known.contains(p));
            if let Some(pid) = new {
                break pid;
            }
            assert!(
                sent.elapsed() < RELOAD_DEADLINE,
                "reload {reload}: new connections still served by {current} {RELOAD_DEADLINE:?} after SIGUSR2; errors: {:?}",
                tally.errors.lock().unwrap_or_else(PoisonError::into_inner)
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        took.push(sent.elapsed());
        tally.retired.lock().unwrap().insert(current);
        procs.pids.lock().unwrap().push(successor);
        current = successor;
    }
    let upgrading = started.elapsed();
    // Under load still, the replaced processes finish their connections
    // and exit (closing their copy of the socket, which must not stop it
    // listening for the new one).
    let retired: Vec<u32> = tally.retired.lock().unwrap().iter().copied().collect();
    for pid in retired {
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "replaced process {pid} still running 10 s after its upgrade"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    // Old processes exit once their connections are done; the last one on
    // SIGTERM.
    assert!(send_signal(current, "TERM"));
    assert!(
        wait_gone(current, Duration::from_secs(10)),
        "last process {current} still running 10 s after SIGTERM"
    );
    // No process of the group is left (no orphan, no unseen successor).
    let left = group_members(first_pid);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let mut procs = procs;
    let status = procs.first.wait().unwrap();
    assert!(status.success(), "first process: {status}");

    let short = tally.short_ok.load(Ordering::Relaxed);
    let long = tally.long_messages.load(Ordering::Relaxed);
    let sessions = tally.long_sessions.load(Ordering::Relaxed);
    let on_old = tally.long_finished_on_old.load(Ordering::Relaxed);
    took.sort();
    eprintln!(
        "{RELOADS} upgrades in {} ms: {short} short connections and {long} messages on {sessions} long-lived ones served ({on_old} of those finished on a replaced process); refused {}, reset {}, lost {}; signal to new process serving: min {} ms, median {} ms, max {} ms",
        upgrading.as_millis(),
        tally.refused.load(Ordering::Relaxed),
        tally.reset.load(Ordering::Relaxed),
        tally.lost.load(Ordering::Relaxed),
        took[0].as_millis(),
        took[took.len() / 2].as_millis(),
        took[took.len() - 1].as_millis(),
    );
    let errors = tally.errors.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(errors.is_empty(), "client errors: {errors:#?}");
    assert_eq!(tally.refused.load(Ordering::Relaxed), 0);
    assert_eq!(tally.reset.load(Ordering::Relaxed), 0);
    assert_eq!(tally.lost.load(Ordering::Relaxed), 0);
    assert_eq!(procs.pids.lock().unwrap().len(), RELOADS + 1);
    assert!(short > 0 && long > 0);
    assert!(
        on_old > 0,
        "no long-lived connection spanned an upgrade ({sessions} sessions)"
    );
}
