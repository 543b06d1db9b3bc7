//! Shutdown latency: the time from `ShutdownHandle::shutdown()` to
//! `serve_forever` returning, for a TCP echo server under each in-process
//! strategy, idle and with 20 busy clients.
//!
//! ```text
//! cargo bench -p socketserver --bench shutdown
//! ```
//!
//! Each case starts a fresh server 50 times. "idle": the server has served
//! one request and waits. "busy": 20 client threads keep connecting, doing
//! 10 round trips of 64 bytes and closing, and shutdown is asked in the
//! middle of that. (`Forking` is left out: forking from this multi-threaded
//! process is the hazard its docs warn about.) The goal is < 5 ms; Python's
//! `serve_forever` polls every 0.5 s.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::{Server, StreamRequest};

const RUNS: usize = 50;
const BUSY_CLIENTS: usize = 20;
const STRATEGIES: [&str; 3] = ["synchronous", "threading", "pool"];
const STEP: Duration = Duration::from_secs(10);

fn echo(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// Connects, does 10 round trips of 64 bytes, closes; again and again until
/// `stop`. Counts round trips. Errors (the server going away) just restart
/// the loop.
fn busy_client(addr: SocketAddr, stop: Arc<AtomicBool>, trips: Arc<AtomicU64>) {
    let ping = [7u8; 64];
    let mut pong = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
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
            trips.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One server start, (optional) load, shutdown; returns the latency.
fn one_run(strategy: &str, busy: bool) -> Duration {
    let server = Server::builder()
        .strategy(socketserver::strategy::from_name(strategy).unwrap())
        .tcp("127.0.0.1:0", echo)
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let handle = server.shutdown_handle();
    let (returned_tx, returned) = mpsc::channel();
    let serving = thread::spawn(move || {
        server.serve_forever().unwrap();
        returned_tx.send(Instant::now()).unwrap();
        drop(server); // closing waits for running requests; not measured
    });

    let stop = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = if busy {
        (0..BUSY_CLIENTS)
            .map(|_| {
                let (stop, trips) = (Arc::clone(&stop), Arc::clone(&trips));
                thread::spawn(move || busy_client(addr, stop, trips))
            })
            .collect()
    } else {
        Vec::new()
    };
    // The loop is running (and, when busy, loaded) once requests get served.
    let want = if busy { 500 } else { 1 };
    if !busy {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(STEP)).unwrap();
        c.write_all(b"x").unwrap();
        c.read_exact(&mut [0u8; 1]).unwrap();
        trips.fetch_add(1, Ordering::Relaxed);
    }
    let end = Instant::now() + STEP;
    while trips.load(Ordering::Relaxed) < want {
        assert!(Instant::now() < end, "{strategy}: no load within {STEP:?}");
        thread::sleep(Duration::from_millis(1));
    }

    let asked = Instant::now();
    handle.shutdown();
    let at = returned
        .recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("{strategy}: serve_forever did not return within {STEP:?}"));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    serving.join().unwrap();
    at - asked
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    println!("shutdown() -> serve_forever returns, TCP echo, {RUNS} runs per case");
    println!("(p99 by nearest rank: with {RUNS} runs it is the largest)");
    println!(
        "{:<12} {:<22} {:>10} {:>10} {:>10}",
        "strategy", "load", "median ms", "p99 ms", "max ms"
    );
    for strategy in STRATEGIES {
        for busy in [false, true] {
            let mut samples: Vec<Duration> = (0..RUNS).map(|_| one_run(strategy, busy)).collect();
            samples.sort();
            let n = samples.len();
            let median = (samples[(n - 1) / 2] + samples[n / 2]) / 2;
            let p99 = samples[(n * 99).div_ceil(100) - 1];
            let load = if busy {
                format!("{BUSY_CLIENTS} busy clients")
            } else {
                "idle".to_owned()
            };
            println!(
                "{strategy:<12} {load:<22} {:>10.3} {:>10.3} {:>10.3}",
                ms(median),
                ms(p99),
                ms(samples[n - 1])
            );
        }
    }
}
