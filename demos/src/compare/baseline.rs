//! `demos baseline ...` (hidden): the servers `demos compare` measures ours
//! against, and the shutdown-latency probe, each run as a child process.
//!
//! * `std-tcp`: what a Rust user writes by hand: a blocking accept loop and a
//!   thread per connection (`TCP_NODELAY`, 64 KiB buffer).
//! * `std-udp`: a blocking `recv_from` / `send_to` loop.
//! * `tokio-tcp`: a multi-threaded tokio runtime, one task per connection.
//! * `shutdown-probe`: the time from `shutdown()` to `serve_forever`
//!   returning, for one strategy of ours (JSON on stdout).
//!
//! Every server prints `listening on SCHEME://ADDR` first, like `demos echo
//! serve`, and serves until killed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;

use clap::Subcommand;

use crate::common::StrategyName;

/// The hidden `demos baseline` subcommands.
#[derive(Debug, Subcommand)]
pub enum BaselineCmd {
    /// Plain std thread-per-connection TCP echo.
    StdTcp {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Plain std UDP echo: a `recv_from`/`send_to` loop.
    StdUdp {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// tokio TCP echo: multi-thread runtime, a task per connection.
    TokioTcp {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Shutdown latency of one strategy of ours; prints one JSON object.
    ShutdownProbe {
        /// The strategy to measure.
        #[arg(long, value_enum)]
        strategy: StrategyName,
        /// Fresh servers to start and stop.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Busy clients during each run (0: an idle server).
        #[arg(long, default_value_t = 0)]
        busy: usize,
    },
}

/// Runs a baseline subcommand (never returns for the servers).
pub fn run(cmd: BaselineCmd) -> io::Result<()> {
    match cmd {
        BaselineCmd::StdTcp { listen } => std_tcp(listen),
        BaselineCmd::StdUdp { listen } => std_udp(listen),
        BaselineCmd::TokioTcp { listen } => tokio_tcp(listen),
        BaselineCmd::ShutdownProbe {
            strategy,
            runs,
            busy,
        } => {
            let r = super::shutdown::probe(strategy, runs.max(1), busy)?;
            println!("{}", serde_json::to_string(&r).map_err(io::Error::other)?);
            Ok(())
        }
    }
}

fn listening(scheme: &str, addr: io::Result<SocketAddr>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {scheme}://{}", addr?)?;
    out.flush()
}

// ---- the plain std thread-per-connection echo (what the bars compare with) ----

fn std_tcp(addr: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    listening("tcp", listener.local_addr())?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = thread::Builder::new().spawn(move || std_tcp_conn(stream));
            }
            // Out of descriptors and the like: do not spin.
            Err(_) => thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

fn std_tcp_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

// ---- the plain std UDP loop ----

fn std_udp(addr: SocketAddr) -> io::Result<()> {
    let sock = UdpSocket::bind(addr)?;
    listening("udp", sock.local_addr())?;
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], peer);
        }
    }
}

// ---- tokio: what a Rust user would otherwise pick ----

fn tokio_tcp(addr: SocketAddr) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        listening("tcp", listener.local_addr())?;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                // Out of descriptors and the like: do not spin.
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 8 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
