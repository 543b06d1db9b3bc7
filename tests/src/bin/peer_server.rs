//! A TCP server of any strategy for the tests of vanished peers
//! (`tests/tests/all/keepalive.rs`, `tests/tests/partition.rs`), run as a
//! process of its own (so that `Forking` and `PreFork` fork from a
//! single-threaded process, and so that it can run inside a network
//! namespace).
//!
//! ```text
//! peer_server ADDR --strategy=NAME [--keepalive=SECS] [--user-timeout=SECS]
//!                  [--write-timeout=SECS] [--proxy-from=IP]
//!                  [--tls-cert=PEM --tls-key=PEM]
//! ```
//!
//! `--keepalive=0` turns keepalive off; `SECS` is the idle time, with
//! probes every `SECS/3` (at least 1 s), 3 of them. `--user-timeout=0`
//! turns `TCP_USER_TIMEOUT` off. Unset flags keep the library's defaults.
//! `--proxy-from=IP` requires a PROXY protocol header from that proxy.
//! With `--tls-cert` and `--tls-key` connections speak TLS.
//!
//! Each connection is served line by line: `ping` answers `pong`; `opts`
//! answers the TCP options of this connection as the serving process reads
//! them back (`keepalive=0|1 idle=S interval=S count=N user_timeout_ms=MS
//! nodelay=0|1`); `big N` writes N bytes of `x` then `done`; `sleep MS`
//! answers `pong` after MS milliseconds; `pid` answers the serving
//! process's pid; anything else is echoed. When a connection's handler
//! starts it prints, on stderr, `START peer=ADDR pid=PID`; when it ends,
//! `END peer=ADDR error=KIND/ERRNO
//! peer_gone=N pid=PID` (`error=none` when it ended cleanly), `N` being
//! the serving process's [`Stats::peer_gone`](socketserver::Stats). Prints
//! `listening on URL`, serves until SIGTERM or SIGINT. Logs go to stderr
//! (`RUST_LOG`, default `warn`).

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use socketserver::transport::Keepalive;
use socketserver::{Server, StreamHandler, StreamRequest};

/// How the connection's handler ended, kept for `finish`.
#[derive(Default)]
struct Ended(Option<String>);

struct PeerServer;

impl PeerServer {
    fn serve(req: &mut StreamRequest) -> io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if req.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let text = line.trim_end();
            if text == "ping" {
                writeln!(req, "pong")?;
            } else if text == "opts" {
                let opts = options(req.stream().as_tcp().expect("a TCP connection"))?;
                writeln!(req, "{opts}")?;
            } else if let Some(ms) = text.strip_prefix("sleep ") {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                writeln!(req, "pong")?;
            } else if text == "pid" {
                writeln!(req, "{}", std::process::id())?;
            } else if let Some(n) = text.strip_prefix("big ") {
                let mut left: usize = n.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "big N: N is a number")
                })?;
                let chunk = vec![b'x'; 64 * 1024];
                while left > 0 {
                    let n = left.min(chunk.len());
                    req.write_all(&chunk[..n])?;
                    left -= n;
                }
                writeln!(req, "done")?;
            } else {
                req.write_all(line.as_bytes())?;
            }
        }
    }
}

impl StreamHandler for PeerServer {
    fn setup(&self, req: &mut StreamRequest) -> io::Result<()> {
        eprintln!("START peer={} pid={}", req.peer_addr(), std::process::id());
        Ok(())
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let result = PeerServer::serve(req);
        req.state::<Ended>().0 = Some(match &result {
            Ok(()) => "none".to_owned(),
            Err(e) => format!("{:?}/{}", e.kind(), e.raw_os_error().unwrap_or(0)),
        });
        result
    }

    fn finish(&self, req: &mut StreamRequest) -> io::Result<()> {
        let error = req.state::<Ended>().0.take();
        eprintln!(
            "END peer={} error={} peer_gone={} pid={}",
            req.peer_addr(),
            error.as_deref().unwrap_or("panic"),
            req.stats().peer_gone,
            std::process::id()
        );
        Ok(())
    }

    fn handle_error(&self, _peer: &socketserver::Address, _error: &socketserver::RequestError) {
        // Reported by `finish`.
    }
}

/// The TCP options of `stream`, read back with `getsockopt`.
fn options(stream: &std::net::TcpStream) -> io::Result<String> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket.keepalive()?;
    let user_timeout = socket.tcp_user_timeout()?.unwrap_or_default();
    Ok(format!(
        "keepalive={} idle={} interval={} count={} user_timeout_ms={} nodelay={}",
        u8::from(keepalive),
        socket.keepalive_time()?.as_secs(),
        socket.keepalive_interval()?.as_secs(),
        socket.keepalive_retries()?,
        user_timeout.as_millis(),
        u8::from(socket.nodelay()?),
    ))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

fn secs(args: &[String], name: &str) -> Option<Duration> {
    flag(args, name).map(|v| Duration::from_secs(v.parse().expect("a number of seconds")))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(strategy)) = (
        args.iter().find(|a| !a.starts_with("--")),
        flag(&args, "--strategy"),
    ) else {
        eprintln!("usage: peer_server ADDR --strategy=NAME [--keepalive=SECS] [--user-timeout=SECS] [--write-timeout=SECS] [--proxy-from=IP]");
        return ExitCode::from(2);
    };
    let strategy = match socketserver::strategy::from_name(&strategy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("peer_server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Server::builder().strategy(strategy);
    if let Some(write) = secs(&args, "--write-timeout") {
        builder = builder.write_timeout(Some(write));
    }
    if let Some(idle) = secs(&args, "--keepalive") {
        builder = builder.keepalive(
            (!idle.is_zero()).then(|| Keepalive::default().idle(idle).interval(idle / 3).count(3)),
        );
    }
    if let Some(timeout) = secs(&args, "--user-timeout") {
        builder = builder.user_timeout(Some(timeout));
    }
    if let Some(proxy) = flag(&args, "--proxy-from") {
        let trusted = match proxy.parse() {
            Ok(t) => vec![t],
            Err(e) => {
                eprintln!("peer_server: --proxy-from={proxy}: {e}");
                return ExitCode::from(2);
            }
        };
        builder = builder.proxy_protocol(socketserver::proxy::ProxyProtocol::Required { trusted });
    }
    match socketserver_tests::tls::config_from_args(&args) {
        Ok(Some(config)) => builder = builder.tls(config),
        Ok(None) => {}
        Err(e) => {
            eprintln!("peer_server: {e}");
            return ExitCode::from(2);
        }
    }
    let result = builder
        .tcp(addr.as_str(), PeerServer)
        .and_then(socketserver_tests::serve_until_signalled);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer_server: {e}");
            ExitCode::FAILURE
        }
    }
}
