//! `loadgen` command line: runs one load and prints the report as one JSON line.
//!
//! Exit status: 0 success; 1 the run failed (nothing answering, nothing served, a local
//! resource); 2 bad arguments; 3 refused target (not loopback) or invalid settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::{Config, Error, IdleConfig, Mode};

/// Closed-loop load generator for echo servers on loopback (127.0.0.0/8, ::1 only).
#[derive(Parser, Debug)]
#[command(version, about)]
#[allow(clippy::doc_markdown)] // these doc comments are the --help text, shown as written
struct Args {
    /// Server address, IP:PORT or localhost:PORT ([::1]:PORT for IPv6).
    #[arg(long, value_parser = parse_addr)]
    addr: SocketAddr,
    /// pingpong, connect or udp.
    #[arg(long, default_value = "pingpong", value_parser = clap::builder::ValueParser::new(parse_mode))]
    mode: Mode,
    /// Concurrent connections (or UDP sockets).
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Bytes per request.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measured window, seconds.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    duration: Duration,
    /// Warmup before the window, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    warmup: Duration,
    /// Event-loop threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// UDP: milliseconds before an unanswered datagram counts as lost.
    #[arg(long, default_value_t = 500)]
    udp_timeout_ms: u64,
    /// Ping-pong: connections opening at once at most (0 = no limit).
    #[arg(long, default_value_t = 4)]
    ramp: usize,
    /// Print a progress line on stderr about twice a second.
    #[arg(long)]
    progress: bool,
    /// Instead of a load: hold this many idle connections for --duration seconds. The
    /// JSON report is printed as soon as they are open.
    #[arg(long, value_name = "N")]
    idle: Option<usize>,
    /// With --idle: send --size bytes on each new connection and check the echo.
    #[arg(long, requires = "idle")]
    idle_echo: bool,
    /// Speak TLS (pingpong and connect modes), trusting the PEM certificates in FILE
    /// (the CA that signed the server's certificate). No session is ever resumed: in
    /// connect mode every connection is a full handshake.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// With --tls-ca: the name the server's certificate must be valid for.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "localhost",
        requires = "tls_ca"
    )]
    tls_name: String,
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    // No name lookups: only the literal name localhost is accepted besides IPs.
    match s.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|e| format!("bad port {port:?}: {e}")),
        _ => Err(format!("{s:?} is not IP:PORT or localhost:PORT")),
    }
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?}: {e}"))
}

fn exit_for(e: &Error) -> ExitCode {
    match e {
        Error::NotLoopback(_) | Error::InvalidConfig(_) => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    if let Some(n) = a.idle {
        return hold(&a, n);
    }
    let tls = match &a.tls_ca {
        Some(ca) => match loadgen::TlsClient::from_ca_file(ca, &a.tls_name) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("loadgen: {e}");
                return exit_for(&e);
            }
        },
        None => None,
    };
    let cfg = Config {
        addr: a.addr,
        mode: a.mode,
        conns: a.conns,
        size: a.size,
        duration: a.duration,
        warmup: a.warmup,
        threads: a.threads,
        udp_timeout: Duration::from_millis(a.udp_timeout_ms),
        ramp: a.ramp,
        tls,
    };
    let show = a.progress;
    let result = loadgen::run_with_progress(&cfg, |p| {
        if show {
            eprintln!(
                "loadgen: {:>6.1}s {:?} served={} errors={} connected={}",
                p.elapsed.as_secs_f64(),
                p.phase,
                p.served,
                p.errors,
                p.connected
            );
        }
    });
    match result {
        Ok(r) => {
            println!("{}", r.to_json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Error::NothingServed(r) = &e {
                println!("{}", r.to_json());
            }
            eprintln!("loadgen: {e}");
            exit_for(&e)
        }
    }
}

fn hold(a: &Args, n: usize) -> ExitCode {
    let mut cfg = IdleConfig::new(a.addr, n);
    if a.idle_echo {
        cfg.echo_size = a.size;
    }
    match loadgen::hold_idle(&cfg) {
        Ok(held) => {
            println!(
                "{}",
                serde_json::to_string(held.report()).unwrap_or_default()
            );
            std::thread::sleep(a.duration);
            eprintln!("loadgen: {} of {} still open", held.alive(), held.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            exit_for(&e)
        }
    }
}
