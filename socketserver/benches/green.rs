//! What the `Green` escapes for blocking work cost per message.
//!
//! ```text
//! cargo bench -p socketserver --bench green
//! ```
//!
//! One client on a thread of this process sends a 64-byte line to a `Green`
//! echo server and reads it back, blocking. Per line, the handler does, before
//! it writes the line back:
//!
//! * `echo`: nothing more (the baseline);
//! * `blocking`: one `green::blocking(|| 0)`, a trip to a helper thread and
//!   back;
//! * `yield_now`: one `green::yield_now()`, a turn of the worker's reactor;
//! * `sleep_zero`: one `green::sleep(Duration::ZERO)`.
//!
//! The difference to `echo` is the cost of the escape. `green_escape/1-thread`
//! runs the server with one worker (`Green::new().threads(1)`),
//! `green_escape/default-threads` with one per core.
//!
//! A round trip is mostly thread wake-ups, and what one costs depends on
//! where the scheduler puts the client and the worker: on one core a wake-up
//! is a direct switch, across cores it may wake an idle core (on a virtual
//! machine, tens of microseconds). A run can settle in either case for
//! seconds, so unpinned results jump between two levels. For the CPU cost
//! alone, run everything on one core:
//!
//! ```text
//! taskset -c 0 cargo bench -p socketserver --bench green
//! ```
//!
//! What blocking a worker without the escapes costs the other connections is
//! measured by `cargo run --release -p socketserver --example green_escapes`
//! (rates and percentiles over a fixed window, which criterion does not
//! report).

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use socketserver::{green, Green, Server, StreamRequest};

/// What the handler does per line besides echoing it.
#[derive(Clone, Copy)]
enum Escape {
    None,
    Blocking,
    YieldNow,
    SleepZero,
}

impl Escape {
    const ALL: [(&'static str, Escape); 4] = [
        ("echo", Escape::None),
        ("blocking", Escape::Blocking),
        ("yield_now", Escape::YieldNow),
        ("sleep_zero", Escape::SleepZero),
    ];

    fn run(self) {
        match self {
            Escape::None => {}
            Escape::Blocking => {
                std::hint::black_box(green::blocking(|| 0));
            }
            Escape::YieldNow => green::yield_now(),
            Escape::SleepZero => green::sleep(Duration::ZERO),
        }
    }
}

/// Starts a line echo server under `strategy` whose handler runs `escape`
/// per line; returns its address and a function that stops it.
fn server(strategy: Green, escape: Escape) -> (SocketAddr, Box<dyn FnOnce()>) {
    let server = Server::builder()
        .strategy(strategy)
        .tcp("127.0.0.1:0", move |r: &mut StreamRequest| {
            let mut line = Vec::with_capacity(128);
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                escape.run();
                r.write_all(&line)?;
            }
        })
        .unwrap();
    let addr = server.server_address().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let t = thread::spawn(move || server.serve_forever().unwrap());
    (
        addr,
        Box::new(move || {
            stop.shutdown();
            t.join().unwrap();
        }),
    )
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn escapes(c: &mut Criterion, group: &str, threads: Option<usize>) {
    let mut g = c.benchmark_group(group);
    let mut ping = [b'x'; 64];
    ping[63] = b'\n';
    let mut pong = [0u8; 64];
    for (name, escape) in Escape::ALL {
        let strategy = match threads {
            Some(n) => Green::new().threads(n),
            None => Green::new(),
        };
        let (addr, stop) = server(strategy, escape);
        let mut s = client(addr);
        g.bench_function(name, |b| {
            b.iter(|| {
                s.write_all(&ping).unwrap();
                s.read_exact(&mut pong).unwrap();
            })
        });
        assert_eq!(pong, ping);
        drop(s);
        stop();
    }
    g.finish();
}

fn one_thread(c: &mut Criterion) {
    escapes(c, "green_escape/1-thread", Some(1));
}

fn default_threads(c: &mut Criterion) {
    escapes(c, "green_escape/default-threads", None);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = one_thread, default_threads
}
criterion_main!(benches);
