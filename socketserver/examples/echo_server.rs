//! An echo server under any strategy and transport.
//!
//! ```text
//! cargo run --release -p socketserver --example echo_server -- ADDR STRATEGY [--udp]
//! cargo run --release -p socketserver --features tls --example echo_server -- ADDR STRATEGY --tls CERT KEY
//! ```
//!
//! ADDR is `HOST:PORT`, `unix:PATH`, or `systemd` (the first socket passed by
//! socket activation, `LISTEN_FDS`); STRATEGY is one of `synchronous`,
//! `threading`, `pool`, `forking`, `prefork`, `green`; `--udp` serves datagrams (UDP, or Unix
//! datagram for `unix:PATH`); `--reuse-port` sets `SO_REUSEPORT` so that
//! several processes can share the port; `--proxy-protocol` requires a
//! PROXY protocol header (v1 or v2, as `HAProxy`'s `send-proxy-v2` sends) on
//! every stream connection, from `127.0.0.1` or `::1` only, and serves the
//! client it names; `--greet` makes the server speak first on each stream
//! connection: `peer CLIENT via PROXY` (`via -` without a proxy), then it
//! echoes; `--tell-pid` makes it say `pid N` (the serving process) first
//! instead; `--max-per-ip=N` allows N connections per client address at
//! once; `--upgrade` makes SIGUSR2 start a new copy of the program that
//! takes the listening socket over, after which this one lets its
//! connections finish and exits 0 (`socketserver::reload`). Whatever ADDR
//! says, a socket passed with `LISTEN_FDS` (by systemd, or by the process
//! being upgraded) is served; `--tls CERT KEY` serves TLS on stream
//! connections with the PEM certificate chain CERT and key KEY (build with
//! `--features tls`). The first line on stdout is
//! `listening on SCHEME://ADDR` with the real port. SIGINT or SIGTERM stops
//! the server cleanly (exit status 0); it then prints
//! `echo_server: served N requests` on stderr. `--report-times` adds two
//! lines on stderr for measuring shutdown from outside:
//! `serve_forever returned at monotonic_ns=N` right after `serve_forever`
//! returns, and `exiting at monotonic_ns=N` just before `main` returns, N
//! being `CLOCK_MONOTONIC` in nanoseconds (one clock for every process on
//! Linux, so a script that reads it before `kill` can subtract).

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use std::net::{Ipv4Addr, Ipv6Addr};

use socketserver::proxy::{IpNet, ProxyProtocol};
use socketserver::{Address, DatagramRequest, Server, Strategy, StreamRequest, Transport};

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo_server ADDR STRATEGY [--udp] [--reuse-port] [--proxy-protocol] [--greet] [--tell-pid] [--max-per-ip=N] [--upgrade] [--report-times] [--tls CERT KEY]\n  ADDR      HOST:PORT, unix:PATH or systemd\n  STRATEGY  {}",
        socketserver::strategy::NAMES.join("|")
    );
    ExitCode::from(2)
}

fn echo_stream(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

/// `peer CLIENT via PROXY`, then an echo.
fn greet_stream(req: &mut StreamRequest) -> io::Result<()> {
    let via = req
        .proxy_addr()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    let line = format!("peer {} via {via}\n", req.peer_addr());
    req.write_all(line.as_bytes())?;
    answer_then_echo(req)
}

/// After the server spoke first, the client owes an answer: waiting for it
/// is part of the conversation, not idleness, so it is a plain read (a
/// graceful close lets it arrive, where a message read would count the
/// connection idle and close it). Then the echo, whose chunks are messages.
fn answer_then_echo(req: &mut StreamRequest) -> io::Result<()> {
    if req.fill_buf()?.is_empty() {
        return Ok(());
    }
    req.echo().map(drop)
}

/// `pid N`, then an echo.
fn pid_stream(req: &mut StreamRequest) -> io::Result<()> {
    let line = format!("pid {}\n", std::process::id());
    req.write_all(line.as_bytes())?;
    answer_then_echo(req)
}

fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    let data = req.take_data();
    req.reply(&data)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `std::time::Instant` reads
/// on Linux, but as a number another process can compare with its own
/// reading.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Options of [`run`].
#[derive(Clone, Copy)]
struct RunOpts {
    /// `--upgrade`: serve through `socketserver::reload`.
    upgrade: bool,
    /// `--report-times`: say on stderr when `serve_forever` returned.
    report_times: bool,
}

fn run<T, H>(server: Server<T, Box<dyn Strategy>, H>, opts: RunOpts) -> io::Result<()>
where
    T: Transport,
    H: socketserver::Handler<T::Request>,
{
    // Handlers first: a script may signal as soon as it reads the line.
    server
        .shutdown_handle()
        .shutdown_on_signals(&[socketserver::Signal::Int, socketserver::Signal::Term])?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {}", server.url())?;
    out.flush()?;
    if opts.upgrade {
        use socketserver::reload::{Served, Upgrade};
        let served = Upgrade::new()?.serve(&server);
        if opts.report_times {
            eprintln!("serve_forever returned at monotonic_ns={}", mono_ns());
        }
        if let Served::Upgraded {
            successor,
            handover,
            report,
        } = served?
        {
            eprintln!(
                "echo_server: handed over to process {successor} in {} ms; served {} requests; {report:?}",
                handover.as_millis(),
                server.stats().accepted
            );
            return Ok(());
        }
    } else {
        let served = server.serve_forever();
        if opts.report_times {
            eprintln!("serve_forever returned at monotonic_ns={}", mono_ns());
        }
        served?;
    }
    log::info!("shutting down {}", server.url());
    let served = server.stats().accepted;
    server.server_close();
    eprintln!("echo_server: served {served} requests");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let report_times = std::env::args().any(|a| a == "--report-times");
    let code = serve(report_times);
    if report_times {
        eprintln!("exiting at monotonic_ns={}", mono_ns());
    }
    code
}

/// Everything `main` does but the `exiting at` line.
fn serve(report_times: bool) -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let tls = match args.iter().position(|a| a == "--tls") {
        None => None,
        Some(i) => {
            if i + 2 >= args.len() {
                eprintln!("echo_server: --tls needs CERT and KEY");
                return usage();
            }
            let files: Vec<String> = args.drain(i..i + 3).skip(1).collect();
            Some((files[0].clone(), files[1].clone()))
        }
    };
    let udp = args.iter().any(|a| a == "--udp");
    let reuse_port = args.iter().any(|a| a == "--reuse-port");
    let proxy_protocol = args.iter().any(|a| a == "--proxy-protocol");
    let greet = args.iter().any(|a| a == "--greet");
    let tell_pid = args.iter().any(|a| a == "--tell-pid");
    let opts = RunOpts {
        upgrade: args.iter().any(|a| a == "--upgrade"),
        report_times,
    };
    let max_per_ip = match args.iter().find_map(|a| a.strip_prefix("--max-per-ip=")) {
        None => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!("echo_server: --max-per-ip={n}: {e}");
                return usage();
            }
        },
    };
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [addr, strategy] = positional[..] else {
        return usage();
    };
    let strategy = match socketserver::strategy::from_name(strategy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: {e}");
            return usage();
        }
    };
    let mut builder = Server::builder()
        .strategy(strategy)
        .reuse_port(reuse_port)
        .max_per_ip(max_per_ip);
    if proxy_protocol {
        builder = builder.proxy_protocol(ProxyProtocol::Required {
            trusted: vec![
                IpNet::host(Ipv4Addr::LOCALHOST.into()),
                IpNet::host(Ipv6Addr::LOCALHOST.into()),
            ],
        });
    }
    if let Some((cert, key)) = tls {
        match with_tls(builder, &cert, &key) {
            Ok(b) => builder = b,
            Err(e) => {
                eprintln!("echo_server: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let echo_stream = match (greet, tell_pid) {
        (true, _) => greet_stream,
        (false, true) => pid_stream,
        (false, false) => echo_stream,
    };
    // A socket passed by systemd or by the process being upgraded wins
    // over ADDR (the upgraded process passes its own arguments on).
    let inherited = match socketserver::activation::listeners() {
        Ok(l) => l,
        Err(e) => return report(Err(e)),
    };
    if addr.as_str() == "systemd" || !inherited.is_empty() {
        return report(serve_activated(inherited, builder, echo_stream, opts));
    }
    let addr = match Address::resolve(addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_server: {addr}: {e}");
            return usage();
        }
    };
    let result = match (&addr, udp) {
        (Address::Inet(a), false) => builder.tcp(*a, echo_stream).and_then(|s| run(s, opts)),
        (Address::Inet(a), true) => builder.udp(*a, echo_datagram).and_then(|s| run(s, opts)),
        (Address::Unix(Some(p)), false) => builder.unix(p, echo_stream).and_then(|s| run(s, opts)),
        (Address::Unix(Some(p)), true) => builder
            .unixgram(p, echo_datagram)
            .and_then(|s| run(s, opts)),
        (Address::Unix(None), _) => return usage(),
    };
    report(result)
}

/// Serves the first socket passed by socket activation.
fn serve_activated(
    inherited: Vec<socketserver::activation::Listener>,
    builder: socketserver::Builder<Box<dyn Strategy>>,
    echo_stream: fn(&mut StreamRequest) -> io::Result<()>,
    opts: RunOpts,
) -> io::Result<()> {
    use socketserver::activation::Listener;
    use socketserver::transport::{Tcp, Udp, Unix, Unixgram};
    let Some(listener) = inherited.into_iter().next() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no socket passed by socket activation (LISTEN_FDS/LISTEN_PID)",
        ));
    };
    match listener {
        Listener::Tcp(l) => builder
            .build(Tcp::from_std(l)?, echo_stream)
            .and_then(|s| run(s, opts)),
        Listener::Udp(s) => builder
            .build(Udp::from_std(s)?, echo_datagram)
            .and_then(|s| run(s, opts)),
        Listener::Unix(l) => builder
            .build(Unix::from_std(l)?, echo_stream)
            .and_then(|s| run(s, opts)),
        Listener::Unixgram(s) => builder
            .build(Unixgram::from_std(s)?, echo_datagram)
            .and_then(|s| run(s, opts)),
    }
}

/// TLS with the PEM files `cert` and `key`.
#[cfg(feature = "tls")]
fn with_tls(
    builder: socketserver::Builder<Box<dyn Strategy>>,
    cert: &str,
    key: &str,
) -> io::Result<socketserver::Builder<Box<dyn Strategy>>> {
    Ok(builder.tls(socketserver::tls::server_config(cert, key)?))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _: socketserver::Builder<Box<dyn Strategy>>,
    _: &str,
    _: &str,
) -> io::Result<socketserver::Builder<Box<dyn Strategy>>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--tls: built without TLS; build with `--features tls`",
    ))
}

fn report(result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}
