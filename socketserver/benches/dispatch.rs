//! Dispatch overhead per request, for each strategy: what the framework adds
//! between "a request arrived" and "the handler runs".
//!
//! ```text
//! cargo bench -p socketserver --bench dispatch
//! ```
//!
//! * `execute/<strategy>`: `Strategy::execute` of a job whose handler does
//!   nothing, through to its completion (`wait_idle`), without sockets.
//!   Synchronous is a function call; Threading spawns a thread per job; Pool
//!   hands the job to a worker through its queue; Forking forks a child that
//!   runs it and exits, reaped by the strategy. Runs first, while this
//!   process has one thread (forking a multi-threaded process is what the
//!   Forking docs warn about).
//! * `udp_roundtrip/<server>`: one 64-byte datagram to an echo server on a
//!   thread of this process and its reply, client blocking: the kernel's
//!   loopback path plus our loop (`poll`, `recvfrom` until it would block,
//!   the `Job`, the handler, `sendto`), against `std-loop`, a plain blocking
//!   `recv_from`/`send_to` loop. The difference is the per-datagram cost of
//!   the framework.
//! * `tcp_connect/<server>`: connect, echo one byte, close, against a plain
//!   std thread-per-connection server (`std-thread`): the per-connection
//!   cost (accept, options, registry, thread spawn or queue).

use std::hint::black_box;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use socketserver::{
    Address, DatagramRequest, Forking, Job, Pool, Server, ShutdownHandle, Strategy, StreamRequest,
    Synchronous, Threading,
};

/// A shutdown handle to pass to `execute` (from a server that never runs).
fn handle() -> (ShutdownHandle, impl Drop) {
    let server = Server::builder()
        .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))
        .unwrap();
    (server.shutdown_handle(), server)
}

fn execute_bench<S: Strategy>(c: &mut Criterion, name: &str, strategy: S) {
    let (shutdown, _server) = handle();
    let peer = Address::Inet("127.0.0.1:9".parse().unwrap());
    let done = Arc::new(AtomicU64::new(0));
    c.bench_function(&format!("execute/{name}"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let target = done.load(Ordering::Relaxed) + iters;
            for _ in 0..iters {
                let done = Arc::clone(&done);
                let job = Job::new(peer.clone(), move || {
                    done.fetch_add(1, Ordering::Relaxed);
                    true
                });
                strategy.execute(job, &shutdown).unwrap();
            }
            // Until every job ran (children of `Forking`: until they exited).
            let end = start + Duration::from_secs(30);
            while done.load(Ordering::Relaxed) < target || strategy.active() > 0 {
                assert!(Instant::now() < end, "the jobs did not run within 30 s");
                std::thread::yield_now();
            }
            start.elapsed()
        })
    });
    strategy.close();
    black_box(done.load(Ordering::Relaxed));
}

fn execute(c: &mut Criterion) {
    // Forking first: this process has only its main thread now.
    execute_bench(c, "forking", Forking::new().max_children(64));
    execute_bench(c, "synchronous", Synchronous);
    execute_bench(c, "threading", Threading::new());
    execute_bench(c, "pool", Pool::new(4));
}

/// Starts a UDP echo server under `strategy` on a thread; returns its
/// address and a function that stops it.
fn udp_server<S: Strategy>(strategy: S) -> (SocketAddr, Box<dyn FnOnce()>) {
    let server = Server::builder()
        .strategy(strategy)
        .udp("127.0.0.1:0", |r: &mut DatagramRequest| {
            let data = r.take_data();
            r.reply(&data)
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

fn std_udp_loop() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        // Ends with the process (a benchmark binary).
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], peer);
        }
    });
    addr
}

fn udp_roundtrip_one(c: &mut Criterion, name: &str, addr: SocketAddr) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ping = [7u8; 64];
    let mut pong = [0u8; 128];
    c.bench_function(&format!("udp_roundtrip/{name}"), |b| {
        b.iter(|| {
            client.send(&ping).unwrap();
            black_box(client.recv(&mut pong).unwrap())
        })
    });
}

fn udp_roundtrip(c: &mut Criterion) {
    udp_roundtrip_one(c, "std-loop", std_udp_loop());
    for (name, strategy) in [
        ("synchronous", Box::new(Synchronous) as Box<dyn Strategy>),
        ("threading", Box::new(Threading::new())),
        ("pool", Box::new(Pool::new(4))),
    ] {
        let (addr, stop) = udp_server(strategy);
        udp_roundtrip_one(c, name, addr);
        stop();
    }
}

fn std_thread_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn connect_echo_close(addr: SocketAddr) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
}

fn tcp_connect(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp_connect");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    let addr = std_thread_server();
    g.bench_function("std-thread", |b| {
        b.iter(|| connect_echo_close(addr).unwrap())
    });
    for (name, strategy) in [
        ("synchronous", Box::new(Synchronous) as Box<dyn Strategy>),
        ("threading", Box::new(Threading::new())),
        ("pool", Box::new(Pool::new(4))),
    ] {
        let server = Server::builder()
            .strategy(strategy)
            .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))
            .unwrap();
        let addr = server.server_address().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let t = thread::spawn(move || server.serve_forever().unwrap());
        g.bench_function(name, |b| b.iter(|| connect_echo_close(addr).unwrap()));
        stop.shutdown();
        t.join().unwrap();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = execute, udp_roundtrip, tcp_connect
}
criterion_main!(benches);
