//! A `Green` line echo server whose handler makes one escape call per line,
//! and a client for it: shared by `benches/green.rs` and
//! `examples/green_escapes.rs`, which measure the same four handlers.

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use socketserver::{green, Green, Server, StreamRequest};

/// Longest wait of a client's connect, read or write.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the handler does per line besides echoing it.
#[derive(Clone, Copy)]
pub enum Escape {
    /// Nothing more (the baseline).
    None,
    /// One `green::blocking(|| 0)`: a trip to a helper thread and back.
    Blocking,
    /// One `green::yield_now()`: a turn of the worker's reactor.
    YieldNow,
    /// One `green::sleep(Duration::ZERO)`.
    SleepZero,
}

impl Escape {
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

/// Starts a line echo server on 127.0.0.1 port 0 under `strategy`, whose
/// handler runs `escape` per line; returns its address and a function that
/// stops it.
pub fn echo_server(strategy: Green, escape: Escape) -> io::Result<(SocketAddr, impl FnOnce())> {
    let server =
        Server::builder()
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
            })?;
    let addr = server.local_addr().expect("a TCP server");
    let stop = server.shutdown_handle();
    let serving = thread::spawn(move || server.serve_forever());
    Ok((addr, move || {
        stop.shutdown();
        let _ = serving.join();
    }))
}

/// A blocking client of `addr`, with `TCP_NODELAY` and 5 s deadlines.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    Ok(s)
}
