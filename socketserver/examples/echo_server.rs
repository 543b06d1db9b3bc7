//! An echo server under any strategy and transport.
//!
//! ```text
//! cargo run --release -p socketserver --example echo_server -- ADDR STRATEGY [--udp]
//! ```
//!
//! ADDR is `HOST:PORT`, `unix:PATH`, or `systemd` (the first socket passed by
//! socket activation, `LISTEN_FDS`); STRATEGY is one of `synchronous`,
//! `threading`, `pool`, `forking`, `green`; `--udp` serves datagrams (UDP, or Unix
//! datagram for `unix:PATH`); `--reuse-port` sets `SO_REUSEPORT` so that
//! several processes can share the port. The first line on stdout is
//! `listening on SCHEME://ADDR` with the real port. SIGINT or SIGTERM stops
//! the server cleanly (exit status 0); it then prints
//! `echo_server: served N requests` on stderr.

use std::io::{self, Write};
use std::process::ExitCode;

use socketserver::{Address, DatagramRequest, Server, Strategy, StreamRequest, Transport};

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo_server ADDR STRATEGY [--udp] [--reuse-port]\n  ADDR      HOST:PORT, unix:PATH or systemd\n  STRATEGY  {}",
        socketserver::strategy::NAMES.join("|")
    );
    ExitCode::from(2)
}

fn echo_stream(req: &mut StreamRequest) -> io::Result<()> {
    req.echo().map(drop)
}

fn echo_datagram(req: &mut DatagramRequest) -> io::Result<()> {
    let data = req.take_data();
    req.reply(&data)
}

fn run<T, H>(server: Server<T, Box<dyn Strategy>, H>) -> io::Result<()>
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
    server.serve_forever()?;
    log::info!("shutting down {}", server.url());
    let served = server.stats().accepted;
    server.server_close();
    eprintln!("echo_server: served {served} requests");
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let udp = args.iter().any(|a| a == "--udp");
    let reuse_port = args.iter().any(|a| a == "--reuse-port");
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
    let builder = Server::builder().strategy(strategy).reuse_port(reuse_port);
    if addr.as_str() == "systemd" {
        return report(serve_activated(builder));
    }
    let addr = match Address::resolve(addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_server: {addr}: {e}");
            return usage();
        }
    };
    let result = match (&addr, udp) {
        (Address::Inet(a), false) => builder.tcp(*a, echo_stream).and_then(run),
        (Address::Inet(a), true) => builder.udp(*a, echo_datagram).and_then(run),
        (Address::Unix(Some(p)), false) => builder.unix(p, echo_stream).and_then(run),
        (Address::Unix(Some(p)), true) => builder.unixgram(p, echo_datagram).and_then(run),
        (Address::Unix(None), _) => return usage(),
    };
    report(result)
}

/// Serves the first socket passed by socket activation.
fn serve_activated(builder: socketserver::Builder<Box<dyn Strategy>>) -> io::Result<()> {
    use socketserver::activation::{self, Listener};
    use socketserver::transport::{Tcp, Udp, Unix, Unixgram};
    let Some(listener) = activation::listeners()?.into_iter().next() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no socket passed by socket activation (LISTEN_FDS/LISTEN_PID)",
        ));
    };
    match listener {
        Listener::Tcp(l) => builder.build(Tcp::from_std(l)?, echo_stream).and_then(run),
        Listener::Udp(s) => builder
            .build(Udp::from_std(s)?, echo_datagram)
            .and_then(run),
        Listener::Unix(l) => builder.build(Unix::from_std(l)?, echo_stream).and_then(run),
        Listener::Unixgram(s) => builder
            .build(Unixgram::from_std(s)?, echo_datagram)
            .and_then(run),
    }
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
