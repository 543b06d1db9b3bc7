//! What the escapes for blocking work cost a `Green` handler, and what one
//! handler that waits without them costs the other connections of its
//! worker.
//!
//! ```text
//! cargo run --release -p socketserver --example green_escapes -- [--window-ms=N] [--rounds=N] [--clients=N]
//! ```
//!
//! **Cost per message** (first table): what `cargo bench -p socketserver
//! --bench green` measures, one client's 64-byte line round trip to a
//! `Green` line echo server whose handler does, per line, nothing more
//! (`echo`), one `green::blocking(|| 0)`, one `green::yield_now()` or one
//! `green::sleep(Duration::ZERO)`. Here the four servers run side by side
//! and are measured in turns (500 round trips each, 20 turns, each turn
//! starting with the next escape), so that a shared machine's slow spells
//! hit all four alike. Printed: the median and the fastest turn's time per
//! message, and the median's excess over `echo` (the cost of the escape),
//! for one worker and for one per core.
//!
//! **Starving the others** (second table): a `Green` server with one worker
//! (`Green::new().threads(1)`) echoes lines. 20 clients (threads of this
//! process, `--clients`) ping-pong a 16-byte line each, blocking, for a
//! fixed window (1 s, `--window-ms`), while one other connection sends
//! `slow` lines back to back, and the handler waits 10 ms on each of those
//! before it answers, per row:
//!
//! * `no slow connection`: the baseline;
//! * `std::thread::sleep`: blocks the worker, and every connection on it;
//! * `green::sleep`: a timer in the worker's reactor;
//! * `green::blocking(thread::sleep)`: the sleep on a helper thread.
//!
//! Printed per row and round: the 20 clients' round trips per second, their
//! round-trip latency (median, p99, max), and how many slow lines were served
//! in the window (about 100 a second when the 10 ms waits do not queue). The
//! ratio column is the rate against the baseline of the same round.

use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{green, Green, Server, StreamRequest};

#[path = "support/green_escape.rs"]
mod green_escape;

use green_escape::{connect, echo_server, Escape};

/// How the handler waits on a `slow` line.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    /// No slow connection at all.
    Baseline,
    ThreadSleep,
    GreenSleep,
    GreenBlocking,
}

const ROWS: [(&str, Wait); 4] = [
    ("no slow connection", Wait::Baseline),
    ("std::thread::sleep", Wait::ThreadSleep),
    ("green::sleep", Wait::GreenSleep),
    ("green::blocking(thread::sleep)", Wait::GreenBlocking),
];

const SLOW_WAIT: Duration = Duration::from_millis(10);
/// Bound on any client's round trips in one window.
const MAX_TRIPS: usize = 10_000_000;

struct Row {
    trips: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    slow_served: u64,
}

fn handle(req: &mut StreamRequest, wait: Wait) -> io::Result<()> {
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        if req.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.starts_with(b"slow") {
            match wait {
                Wait::Baseline => {}
                Wait::ThreadSleep => thread::sleep(SLOW_WAIT),
                Wait::GreenSleep => green::sleep(SLOW_WAIT),
                Wait::GreenBlocking => green::blocking(|| thread::sleep(SLOW_WAIT)),
            }
        }
        req.write_all(&line)?;
    }
}

fn round_trip(s: &mut TcpStream, line: &[u8], buf: &mut [u8]) -> io::Result<()> {
    s.write_all(line)?;
    s.read_exact(&mut buf[..line.len()])?;
    if &buf[..line.len()] != line {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(())
}

fn measure(wait: Wait, clients: usize, window: Duration) -> io::Result<Row> {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", move |r: &mut StreamRequest| handle(r, wait))?;
    let addr = server.local_addr().expect("a TCP server");
    let stop_server = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve_forever());

    // The clients connect and are served once before the window opens.
    let ping = b"ping-0123456789\n";
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut s = connect(addr)?;
        round_trip(&mut s, ping, &mut [0; 64])?;
        streams.push(s);
    }

    // The slow connection: `slow` lines back to back until told to stop.
    let stop_slow = Arc::new(AtomicBool::new(false));
    let slow_served = Arc::new(AtomicU64::new(0));
    let slow = if wait == Wait::Baseline {
        None
    } else {
        let stop = Arc::clone(&stop_slow);
        let served = Arc::clone(&slow_served);
        let mut s = connect(addr)?;
        Some(thread::spawn(move || -> io::Result<()> {
            let mut buf = [0u8; 64];
            // Bounded: one line per 10 ms wait, until the window ends.
            while !stop.load(Ordering::Relaxed) {
                round_trip(&mut s, b"slow\n", &mut buf)?;
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }))
    };
    if slow.is_some() {
        // Let its first line reach the handler.
        thread::sleep(Duration::from_millis(20));
    }

    let start = Arc::new(Barrier::new(clients + 1));
    let served_at_start = slow_served.load(Ordering::Relaxed);
    let workers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            let start = Arc::clone(&start);
            thread::spawn(move || -> io::Result<Vec<Duration>> {
                let mut latencies = Vec::with_capacity(4096);
                let mut buf = [0u8; 64];
                start.wait();
                let end = Instant::now() + window;
                while latencies.len() < MAX_TRIPS {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    round_trip(&mut s, ping, &mut buf)?;
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    start.wait();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.join().expect("client thread panicked")?);
    }
    let slow_served = slow_served.load(Ordering::Relaxed) - served_at_start;
    stop_slow.store(true, Ordering::Relaxed);
    if let Some(t) = slow {
        t.join().expect("slow client panicked")?;
    }
    stop_server.shutdown();
    serving.join().expect("server thread panicked")?;

    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Row {
        trips: all.len(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: all.last().copied().unwrap_or_default(),
        slow_served,
    })
}

const ESCAPES: [(&str, Escape); 4] = [
    ("echo", Escape::None),
    ("green::blocking(|| 0)", Escape::Blocking),
    ("green::yield_now()", Escape::YieldNow),
    ("green::sleep(ZERO)", Escape::SleepZero),
];
const COST_TURNS: usize = 20;
const COST_TRIPS: u32 = 500;

/// Per escape: the median and the fastest turn's time per round trip.
fn cost(threads: Option<usize>) -> io::Result<Vec<(Duration, Duration)>> {
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (_, escape) in ESCAPES {
        let strategy = threads.map_or_else(Green::new, |n| Green::new().threads(n));
        let (addr, stop) = echo_server(strategy, escape)?;
        servers.push(stop);
        clients.push(connect(addr)?);
    }
    let mut ping = [b'x'; 64];
    ping[63] = b'\n';
    let mut buf = [0u8; 64];
    let mut turns = vec![Vec::with_capacity(COST_TURNS); ESCAPES.len()];
    for turn in 0..=COST_TURNS {
        // Each turn starts with the next escape: no order favours one.
        for k in 0..clients.len() {
            let i = (turn + k) % clients.len();
            let s = &mut clients[i];
            let start = Instant::now();
            for _ in 0..COST_TRIPS {
                round_trip(s, &ping, &mut buf)?;
            }
            // Turn 0 warms up.
            if turn > 0 {
                turns[i].push(start.elapsed() / COST_TRIPS);
            }
        }
    }
    drop(clients);
    for stop in servers {
        stop();
    }
    Ok(turns
        .into_iter()
        .map(|mut t| {
            t.sort_unstable();
            (t[t.len() / 2], t[0])
        })
        .collect())
}

fn print_cost() -> io::Result<()> {
    let cores = Green::new().thread_count();
    println!(
        "cost per message: one client, 64-byte line round trip; median of {COST_TURNS} turns of {COST_TRIPS}, and fastest turn"
    );
    println!(
        "{:<8} {:<24} {:>10} {:>10} {:>12}",
        "workers", "handler per line", "median us", "min us", "escape us"
    );
    for threads in [Some(1), None] {
        let rows = cost(threads)?;
        let base = rows[0].0;
        for ((name, _), (median, min)) in ESCAPES.iter().zip(rows) {
            let excess = median.as_secs_f64() - base.as_secs_f64();
            println!(
                "{:<8} {name:<24} {:>10.1} {:>10.1} {:>+12.1}",
                threads.unwrap_or(cores),
                median.as_secs_f64() * 1e6,
                min.as_secs_f64() * 1e6,
                excess * 1e6,
            );
        }
    }
    println!();
    Ok(())
}

fn arg(name: &str, default: u64) -> Option<u64> {
    let prefix = format!("--{name}=");
    match std::env::args().skip(1).find(|a| a.starts_with(&prefix)) {
        None => Some(default),
        Some(a) => a[prefix.len()..].parse().ok(),
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn main() -> ExitCode {
    let known = ["--window-ms=", "--rounds=", "--clients="];
    let (Some(window_ms), Some(rounds), Some(clients)) =
        (arg("window-ms", 1000), arg("rounds", 1), arg("clients", 20))
    else {
        eprintln!("usage: green_escapes [--window-ms=N] [--rounds=N] [--clients=N]");
        return ExitCode::from(2);
    };
    if let Some(a) = std::env::args()
        .skip(1)
        .find(|a| !known.iter().any(|k| a.starts_with(k)))
    {
        eprintln!("green_escapes: unknown argument {a}");
        return ExitCode::from(2);
    }
    let window = Duration::from_millis(window_ms.max(1));
    if let Err(e) = print_cost() {
        eprintln!("green_escapes: cost per message: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "starving the others: one Green worker, {clients} ping-pong clients, {window_ms} ms window; \
         one other connection waits {} ms per line",
        SLOW_WAIT.as_millis()
    );
    println!(
        "{:<5} {:<32} {:>10} {:>6} {:>8} {:>8} {:>8} {:>6}",
        "round",
        "slow handler waits with",
        "trips/s",
        "ratio",
        "p50 us",
        "p99 us",
        "max us",
        "slow"
    );
    for round in 1..=rounds {
        let mut baseline = None;
        for (name, wait) in ROWS {
            let row = match measure(wait, clients as usize, window) {
                Ok(row) => row,
                Err(e) => {
                    eprintln!("green_escapes: {name}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let rate = row.trips as f64 / window.as_secs_f64();
            let base = *baseline.get_or_insert(rate);
            let slow = if wait == Wait::Baseline {
                "-".to_owned()
            } else {
                row.slow_served.to_string()
            };
            println!(
                "{round:<5} {name:<32} {rate:>10.0} {:>6.2} {:>8} {:>8} {:>8} {slow:>6}",
                rate / base,
                us(row.p50),
                us(row.p99),
                us(row.max),
            );
        }
    }
    ExitCode::SUCCESS
}
