//! A `PreFork` TCP server for `tests/tests/all/prefork.rs`, run as a process of
//! its own (forking from the multi-threaded test harness would be the
//! hazard `Forking` warns about).
//!
//! ```text
//! prefork_server ADDR [--min=N] [--max=N] [--min-spare=N] [--max-spare=N]
//!                     [--max-requests=N] [--forks-per-second=N] [--threading | --green]
//!                     [--max-per-ip=N] [--max-connections=N] [--wait]
//!                     [--tls-cert=PEM --tls-key=PEM] [--user=NAME]
//! ```
//!
//! With `--user`, the server drops to that user (and its primary group)
//! once bound, before serving (`socketserver::privilege::drop_to`).
//!
//! With `--wait`, a full server (`--max-connections`) waits for a
//! connection to end instead of refusing (`LimitPolicy::Wait`).
//!
//! With `--tls-cert` and `--tls-key`, connections speak TLS (the handshake
//! runs in the child that accepted the connection).
//!
//! Each connection is served line by line: `pid` replies with the serving
//! process's pid, `abort` crashes that process (SIGABRT), `sleep MS` sleeps
//! then echoes, anything else is echoed. Prints `listening on URL` and
//! flushes, serves until SIGTERM or SIGINT, closes and exits 0. Logs go to
//! stderr (`RUST_LOG`, default `warn`).

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{PreFork, Server, StreamRequest, Threading};

fn serve(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if req.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let text = line.trim_end();
        if text == "pid" {
            writeln!(req, "{}", std::process::id())?;
        } else if text == "abort" {
            std::process::abort();
        } else {
            if let Some(ms) = text.strip_prefix("sleep ") {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            }
            req.write_all(line.as_bytes())?;
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.parse().expect("a number"))
}

/// Drops to `--user=NAME` if given, then serves until signalled.
fn serve_as<T, S, H>(args: &[String], server: Server<T, S, H>) -> io::Result<()>
where
    T: socketserver::Transport,
    S: socketserver::Strategy,
    H: socketserver::Handler<T::Request>,
{
    if let Some(user) = args.iter().find_map(|a| a.strip_prefix("--user=")) {
        socketserver::privilege::drop_to(user, None)?;
    }
    socketserver_tests::serve_until_signalled(server)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: prefork_server ADDR [--min=N] [--max=N] [--min-spare=N] [--max-spare=N] [--max-requests=N] [--forks-per-second=N] [--threading | --green] [--max-per-ip=N] [--max-connections=N] [--wait] [--tls-cert=PEM --tls-key=PEM]");
        return ExitCode::from(2);
    };
    let tls = match socketserver_tests::tls::config_from_args(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("prefork_server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Server::builder();
    if let Some(config) = tls {
        builder = builder.tls(config);
    }
    if let Some(n) = flag(&args, "--max-per-ip") {
        builder = builder.max_per_ip(Some(usize::try_from(n).expect("a count")));
    }
    if let Some(n) = flag(&args, "--max-connections") {
        builder = builder.max_connections(Some(usize::try_from(n).expect("a count")));
    }
    if args.iter().any(|a| a == "--wait") {
        builder = builder.limit_policy(socketserver::LimitPolicy::Wait);
    }
    let mut prefork = PreFork::new();
    let size = |n: u64| usize::try_from(n).expect("a size");
    if let Some(n) = flag(&args, "--min") {
        prefork = prefork.min_servers(size(n));
    }
    if let Some(n) = flag(&args, "--max") {
        prefork = prefork.max_servers(size(n));
    }
    if let Some(n) = flag(&args, "--min-spare") {
        prefork = prefork.min_spare_servers(size(n));
    }
    if let Some(n) = flag(&args, "--max-spare") {
        prefork = prefork.max_spare_servers(size(n));
    }
    if let Some(n) = flag(&args, "--max-requests") {
        prefork = prefork.max_requests(n);
    }
    if let Some(n) = flag(&args, "--forks-per-second") {
        prefork = prefork.max_forks_per_second(u32::try_from(n).expect("a rate"));
    }
    let result = if args.iter().any(|a| a == "--threading") {
        builder
            .strategy(prefork.inner(Threading::new()))
            .tcp(addr.as_str(), serve)
            .and_then(|s| serve_as(&args, s))
    } else if args.iter().any(|a| a == "--green") {
        builder
            .strategy(prefork.inner(socketserver::Green::new().threads(1)))
            .tcp(addr.as_str(), serve)
            .and_then(|s| serve_as(&args, s))
    } else {
        builder
            .strategy(prefork)
            .tcp(addr.as_str(), serve)
            .and_then(|s| serve_as(&args, s))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prefork_server: {e}");
            ExitCode::FAILURE
        }
    }
}
