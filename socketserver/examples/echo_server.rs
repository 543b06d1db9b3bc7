//! An echo server under any strategy and transport.
//!
//! ```text
//! cargo run --release -p socketserver --example echo_server -- ADDR STRATEGY [--udp]
//! ```
//!
//! ADDR is `HOST:PORT` or `unix:PATH`; STRATEGY is one of `synchronous`,
//! `threading`, `pool`, `forking`; `--udp` serves datagrams (UDP, or Unix
//! datagram for `unix:PATH`). The first line on stdout is
//! `listening on SCHEME://ADDR` with the real port. SIGINT or SIGTERM stops
//! the server cleanly (exit status 0).

use std::io::{self, Write};
use std::process::ExitCode;

use socketserver::{Address, DatagramRequest, Server, Strategy, StreamRequest, Transport};

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo_server ADDR STRATEGY [--udp]\n  ADDR      HOST:PORT or unix:PATH\n  STRATEGY  {}",
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
        .shutdown_on_signals(&[libc::SIGINT, libc::SIGTERM])?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {}", server.url())?;
    out.flush()?;
    server.serve_forever()?;
    log::info!("shutting down {}", server.url());
    server.server_close();
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let udp = args.iter().any(|a| a == "--udp");
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
    let addr = match Address::resolve(addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo_server: {addr}: {e}");
            return usage();
        }
    };
    let builder = Server::builder().strategy(strategy);
    let result = match (&addr, udp) {
        (Address::Inet(a), false) => builder.tcp(*a, echo_stream).and_then(run),
        (Address::Inet(a), true) => builder.udp(*a, echo_datagram).and_then(run),
        (Address::Unix(Some(p)), false) => builder.unix(p, echo_stream).and_then(run),
        (Address::Unix(Some(p)), true) => builder.unixgram(p, echo_datagram).and_then(run),
        (Address::Unix(None), _) => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}
