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

use std::io::{Read, Write};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use socketserver::Green;

#[path = "../examples/support/green_escape.rs"]
mod green_escape;

use green_escape::{connect, echo_server, Escape};

/// The handlers measured, by name.
const ESCAPES: [(&str, Escape); 4] = [
    ("echo", Escape::None),
    ("blocking", Escape::Blocking),
    ("yield_now", Escape::YieldNow),
    ("sleep_zero", Escape::SleepZero),
];

fn escapes(c: &mut Criterion, group: &str, threads: Option<usize>) {
    let mut g = c.benchmark_group(group);
    let mut ping = [b'x'; 64];
    ping[63] = b'\n';
    let mut pong = [0u8; 64];
    for (name, escape) in ESCAPES {
        let strategy = match threads {
            Some(n) => Green::new().threads(n),
            None => Green::new(),
        };
        let (addr, stop) = echo_server(strategy, escape).unwrap();
        let mut s = connect(addr).unwrap();
        // One checked round trip before measuring: the server echoes. (Not
        // after: when a filter such as `-- execute` skips this benchmark,
        // criterion never calls the closure below and `pong` stays zero.)
        s.write_all(&ping).unwrap();
        s.read_exact(&mut pong).unwrap();
        assert_eq!(
            pong, ping,
            "{name}: the echo server answered something else"
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                s.write_all(&ping).unwrap();
                s.read_exact(&mut pong).unwrap();
            })
        });
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
