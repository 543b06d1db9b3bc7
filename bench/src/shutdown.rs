//! The shutdown-latency harness of the workspace (`bench baseline
//! shutdown-probe`): the time from `shutdown()` to `serve_forever`
//! returning, on a fresh TCP echo server each run, idle (one request served,
//! then quiet) or busy (clients connecting, doing 10 round trips of 64 bytes
//! and closing, over and over). A `bench` run reports it in its
//! `shutdown-idle` and `shutdown-busy` cells, next to Python's
//! `ThreadingTCPServer`; those cells alone:
//!
//! ```text
//! cargo run --release -p bench -- --only /shutdown
//! ```
//!
//! Synchronous, Threading and Pool are measured in one process: the server
//! on a thread, the clients on threads, `ShutdownHandle::shutdown()` from
//! the main thread.
//!
//! Forking must fork from a single-threaded process, so for it the probe's
//! main thread runs `serve_forever` and everything else is a forked process:
//! the busy clients, and a trigger process that (after serving one request,
//! or after letting the load run for 300 ms) reads `CLOCK_MONOTONIC`, calls
//! `shutdown()` on its copy of the handle (a byte into the wake-up socket,
//! which a forked child shares) and sends the time back through a pipe.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socketserver::{Forking, Server, StreamRequest};

use crate::clock::mono_ns;
use crate::strategies::build_strategy;

/// Longest wait for any one step of a run.
const STEP: Duration = Duration::from_secs(10);

/// What the probe prints: every sample and their summary, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShutdownResult {
    /// The strategy measured (or the Python server class).
    pub strategy: String,
    /// Busy clients during each run (0: idle).
    pub busy: usize,
    /// Runs (fresh servers).
    pub runs: usize,
    /// Median latency, ms.
    pub median_ms: f64,
    /// 99th percentile by nearest rank (with 20 runs: the largest), ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Requests (round trips) the busy clients completed during the runs.
    pub load_requests: u64,
    /// How it was measured.
    pub method: String,
    /// Every sample, ms.
    pub samples_ms: Vec<f64>,
}

impl ShutdownResult {
    /// Summarises `samples` (milliseconds).
    pub fn from_samples(
        strategy: &str,
        busy: usize,
        mut samples: Vec<f64>,
        load_requests: u64,
        method: &str,
    ) -> ShutdownResult {
        samples.sort_by(f64::total_cmp);
        let n = samples.len().max(1);
        let at = |i: usize| samples.get(i).copied().unwrap_or(0.0);
        let median = f64::midpoint(at((n - 1) / 2), at(n / 2));
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        ShutdownResult {
            strategy: strategy.to_owned(),
            busy,
            runs: samples.len(),
            median_ms: round(median),
            p99_ms: round(at((n * 99).div_ceil(100) - 1)),
            max_ms: round(at(n - 1)),
            load_requests,
            method: method.to_owned(),
            samples_ms: samples.into_iter().map(round).collect(),
        }
    }
}

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// Connects, does 10 round trips of 64 bytes, closes; again and again
/// until `stop` (or forever when `stop` is `None`, in a forked client).
fn busy_client(addr: SocketAddr, stop: Option<&AtomicBool>, trips: Option<&AtomicU64>) {
    let ping = [7u8; 64];
    let mut pong = [0u8; 64];
    while !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = c.set_nodelay(true);
        for _ in 0..10 {
            if c.write_all(&ping)
                .and_then(|()| c.read_exact(&mut pong))
                .is_err()
            {
                break;
            }
            if let Some(t) = trips {
                t.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One echo round trip on a new connection.
fn one_request(addr: SocketAddr) -> io::Result<()> {
    let mut c = TcpStream::connect_timeout(&addr, STEP)?;
    c.set_read_timeout(Some(STEP))?;
    c.write_all(b"x")?;
    c.read_exact(&mut [0u8; 1])
}

/// Measures `runs` shutdowns of a fresh server under `strategy`.
pub fn probe(strategy: &str, runs: usize, busy: usize) -> io::Result<ShutdownResult> {
    let mut samples = Vec::with_capacity(runs);
    let mut load = 0;
    for _ in 0..runs {
        let (took, requests) = match strategy {
            "forking" => forking_run(busy)?,
            _ => threaded_run(strategy, busy)?,
        };
        samples.push(took.as_secs_f64() * 1000.0);
        load += requests;
    }
    let method = match strategy {
        "forking" => {
            "single-threaded probe process: serve_forever on the main thread; a forked \
             trigger process calls shutdown() and reports CLOCK_MONOTONIC; busy clients \
             are forked processes"
        }
        _ => {
            "in-process: serve_forever on a thread, shutdown() from the main thread, \
             busy clients on threads"
        }
    };
    Ok(ShutdownResult::from_samples(
        strategy, busy, samples, load, method,
    ))
}

/// The in-process method: returns the latency and the round trips done.
fn threaded_run(strategy: &str, busy: usize) -> io::Result<(Duration, u64)> {
    let server = Server::builder()
        .strategy(build_strategy(strategy, None, None)?)
        .tcp("127.0.0.1:0", echo)?;
    let addr = server.server_address().as_inet().expect("a TCP address");
    let handle = server.shutdown_handle();
    let (returned_tx, returned) = mpsc::channel();
    let serving = thread::spawn(move || {
        let r = server.serve_forever();
        let _ = returned_tx.send(Instant::now());
        drop(server); // closing waits for running requests; not measured
        r
    });
    let stop = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..busy)
        .map(|_| {
            let (stop, trips) = (Arc::clone(&stop), Arc::clone(&trips));
            thread::spawn(move || busy_client(addr, Some(&stop), Some(&trips)))
        })
        .collect();
    let want = if busy > 0 { 500 } else { 1 };
    if busy == 0 {
        one_request(addr)?;
        trips.fetch_add(1, Ordering::Relaxed);
    }
    let end = Instant::now() + STEP;
    while trips.load(Ordering::Relaxed) < want {
        if Instant::now() >= end {
            stop.store(true, Ordering::Relaxed);
            handle.shutdown();
            return Err(io::Error::other(format!(
                "{strategy}: no load within {STEP:?}"
            )));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let asked = Instant::now();
    handle.shutdown();
    let at = returned.recv_timeout(STEP).map_err(|_| {
        io::Error::other(format!(
            "{strategy}: serve_forever did not return within {STEP:?}"
        ))
    })?;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    serving
        .join()
        .map_err(|_| io::Error::other("the serving thread panicked"))??;
    Ok((
        at.saturating_duration_since(asked),
        trips.load(Ordering::Relaxed),
    ))
}

/// Forks; the child runs `f` and leaves with `_exit` (no destructors, no
/// atexit handlers). Must be called while this process has one thread.
fn spawn_process(f: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // SAFETY: the probe process is single-threaded when it forks (checked
    // by the caller), so no lock can be held by another thread in the child.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = f();
            // SAFETY: _exit ends the child at once; it is always sound.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// The single-threaded method for Forking; returns the latency and the
/// connections the server accepted.
fn forking_run(busy: usize) -> io::Result<(Duration, u64)> {
    if super::proc::threads(std::process::id() as i32) > 1 {
        return Err(io::Error::other(
            "the forking shutdown probe must run in a single-threaded process",
        ));
    }
    let server = Server::builder()
        .strategy(Forking::new())
        .tcp("127.0.0.1:0", echo)?;
    let addr = server.server_address().as_inet().expect("a TCP address");
    let handle = server.shutdown_handle();
    let (mut from_trigger, mut to_parent) = UnixStream::pair()?;
    let mut clients = Vec::new();
    for _ in 0..busy {
        clients.push(spawn_process(|| {
            busy_client(addr, None, None);
            0
        })?);
    }
    let trigger = spawn_process(|| {
        if busy == 0 {
            let _ = one_request(addr);
            thread::sleep(Duration::from_millis(20));
        } else {
            thread::sleep(Duration::from_millis(300));
        }
        let t = mono_ns();
        handle.shutdown();
        let _ = to_parent.write_all(&t.to_le_bytes());
        0
    })?;
    drop(to_parent);
    let served = server.serve_forever();
    let back = mono_ns();
    for &pid in &clients {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for pid in clients.into_iter().chain([trigger]) {
        reap(pid);
    }
    served?;
    let accepted = server.stats().accepted;
    drop(server); // waits for the handler children, which see their clients gone
    from_trigger.set_read_timeout(Some(STEP))?;
    let mut t = [0u8; 8];
    from_trigger.read_exact(&mut t)?;
    let asked = u64::from_le_bytes(t);
    Ok((Duration::from_nanos(back.saturating_sub(asked)), accepted))
}
