//! `bench baseline ...` (hidden): the servers a `bench` run measures, and
//! the shutdown-latency probe, each run as a child process.
//!
//! * `echo`: ours: a socketserver `Server` under one strategy, TCP (or with
//!   `--udp` UDP), echoing. With `--report-times` it stops on SIGINT or
//!   SIGTERM the way `echo_server ADDR STRATEGY --report-times` (the
//!   library's example) does, and says on stderr when.
//! * `std-tcp`: what a Rust user writes by hand: a blocking accept loop and a
//!   thread per connection (`TCP_NODELAY`, 64 KiB buffer).
//! * `std-udp`: a blocking `recv_from` / `send_to` loop.
//! * `tokio-tcp`: a multi-threaded tokio runtime, one task per connection.
//! * `tokio-tls`: the same with tokio-rustls, on the very `ServerConfig`
//!   our `echo --tls-cert --tls-key` uses (`socketserver::tls::server_config`).
//! * `shutdown-probe`: the time from `shutdown()` to `serve_forever`
//!   returning, for one strategy of ours (JSON on stdout).
//!
//! Every server prints `listening on SCHEME://ADDR` first and serves until
//! killed (our echo with `--report-times`: until SIGINT or SIGTERM asks it to
//! stop).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use clap::Subcommand;
use std::path::PathBuf;

use socketserver::{DatagramRequest, Server, Strategy, StreamRequest};

use crate::strategies::build_strategy;

/// `--strategy`: one of the library's names.
fn strategy_arg() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(socketserver::strategy::NAMES)
}

/// The hidden `bench baseline` subcommands.
#[derive(Debug, Subcommand)]
pub enum BaselineCmd {
    /// Our echo: a socketserver `Server` under one strategy.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The strategy.
        #[arg(long, value_parser = strategy_arg())]
        strategy: String,
        /// Serve TLS with this PEM certificate chain (and --tls-key).
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve UDP instead of TCP.
        #[arg(long)]
        udp: bool,
        /// Stack size in bytes of each request thread or pool worker.
        #[arg(long, value_name = "BYTES")]
        stack_size: Option<usize>,
        /// Threading: seconds a thread whose request finished waits for
        /// another before exiting (default 5; 0: it exits at once, one new
        /// thread per request, as in Python).
        #[arg(long, value_name = "SECS", value_parser = crate::parse_secs_or_zero)]
        keep_alive: Option<Duration>,
        /// Stop cleanly on SIGINT or SIGTERM (`shutdown_on_signals`, then
        /// `server_close`) and print `serve_forever returned at
        /// monotonic_ns=N` and `exiting at monotonic_ns=N` on stderr
        /// (`CLOCK_MONOTONIC`), as `echo_server --report-times` does.
        #[arg(long)]
        report_times: bool,
    },
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
    /// tokio-rustls TLS echo: multi-thread runtime, a task per connection.
    TokioTls {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// PEM certificate chain.
        #[arg(long, value_name = "PEM")]
        tls_cert: PathBuf,
        /// PEM private key.
        #[arg(long, value_name = "PEM")]
        tls_key: PathBuf,
    },
    /// Shutdown latency of one strategy of ours; prints one JSON object.
    ShutdownProbe {
        /// The strategy to measure.
        #[arg(long, value_parser = strategy_arg())]
        strategy: String,
        /// Fresh servers to start and stop.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Busy clients during each run (0: an idle server).
        #[arg(long, default_value_t = 0)]
        busy: usize,
    },
    /// The server of `bench timeline`: answers each line after 20 ms with
    /// when it accepted the connection, started and ended the request, and
    /// what ran it (see `bench::timeline`).
    Timeline {
        /// The scenario (`synchronous`, `pool`, `prefork-green`, ...).
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
            crate::timeline::SCENARIOS.map(|s| s.0)))]
        strategy: String,
    },
}

/// Runs a baseline subcommand (never returns for the servers).
pub fn run(cmd: BaselineCmd) -> io::Result<()> {
    match cmd {
        BaselineCmd::Echo {
            listen,
            strategy,
            tls_cert,
            tls_key,
            udp,
            stack_size,
            keep_alive,
            report_times,
        } => echo(
            listen,
            build_strategy(&strategy, stack_size, keep_alive)?,
            udp,
            tls_cert.zip(tls_key),
            report_times,
        ),
        BaselineCmd::Timeline { strategy } => crate::timeline::serve(&strategy),
        BaselineCmd::StdTcp { listen } => std_tcp(listen),
        BaselineCmd::StdUdp { listen } => std_udp(listen),
        BaselineCmd::TokioTcp { listen } => tokio_tcp(listen),
        BaselineCmd::TokioTls {
            listen,
            tls_cert,
            tls_key,
        } => tokio_tls(listen, &tls_cert, &tls_key),
        BaselineCmd::ShutdownProbe {
            strategy,
            runs,
            busy,
        } => {
            let r = super::shutdown::probe(&strategy, runs.max(1), busy)?;
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

// ---- ours ----

/// Our echo server. Without `report_times` it serves until killed (the
/// signal's default action ends it, like the baselines). With it, it does
/// what `echo_server ADDR STRATEGY --report-times` does: SIGINT and SIGTERM
/// ask `serve_forever` to return (`shutdown_on_signals`, installed before
/// the `listening on` line), then `serve_forever returned at monotonic_ns=N`
/// goes to stderr, the server closes gracefully (`server_close`: idle
/// connections closed at once), and `exiting at monotonic_ns=N` goes to
/// stderr just before the process returns from `main`.
fn echo(
    addr: SocketAddr,
    strategy: Box<dyn Strategy>,
    udp: bool,
    tls: Option<(PathBuf, PathBuf)>,
    report_times: bool,
) -> io::Result<()> {
    fn serve<T: socketserver::Transport, H: socketserver::Handler<T::Request>>(
        server: Server<T, Box<dyn Strategy>, H>,
        scheme: &str,
        report_times: bool,
    ) -> io::Result<()> {
        if report_times {
            server
                .shutdown_handle()
                .shutdown_on_signals(&[socketserver::Signal::Int, socketserver::Signal::Term])?;
        }
        listening(scheme, Ok(server.server_address().as_inet().expect("inet")))?;
        let served = server.serve_forever();
        if !report_times {
            return served;
        }
        eprintln!(
            "serve_forever returned at monotonic_ns={}",
            crate::clock::mono_ns()
        );
        served?;
        server.server_close();
        eprintln!("exiting at monotonic_ns={}", crate::clock::mono_ns());
        Ok(())
    }
    let mut builder = Server::builder().strategy(strategy);
    if let Some((cert, key)) = tls {
        // What `echo_server ADDR STRATEGY --tls CERT KEY` does.
        builder = builder.tls(socketserver::tls::server_config(&cert, &key)?);
    }
    if udp {
        let server = builder.udp(addr, |req: &mut DatagramRequest| {
            let data = req.take_data();
            req.reply(&data)
        })?;
        serve(server, "udp", report_times)
    } else {
        let server = builder.tcp(addr, |req: &mut StreamRequest| req.echo().map(drop))?;
        serve(server, "tcp", report_times)
    }
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

/// tokio-rustls: what a Rust user would otherwise pick for TLS. The
/// `ServerConfig` is the one our TLS echo uses (same certificate, provider,
/// versions, session cache and tickets), so only the I/O around rustls
/// differs.
fn tokio_tls(addr: SocketAddr, cert: &std::path::Path, key: &std::path::Path) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = tokio_rustls::TlsAcceptor::from(socketserver::tls::server_config(cert, key)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        listening("tcp", listener.local_addr())?;
        loop {
            let Ok((s, _)) = listener.accept().await else {
                // Out of descriptors and the like: do not spin.
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 8 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
