//! The server of the composition matrix (`tests/tests/all/matrix.rs`): one
//! strategy, one layer stack, the limits asked for, run as a process of its
//! own (so `Forking` and `PreFork` fork from a process with one thread).
//!
//! ```text
//! matrix_server ADDR STRATEGY [--tls-cert=PEM --tls-key=PEM] [--proxy]
//!               [--max-connections=N] [--max-per-ip=N] [--max-pre-handler=N]
//!               [--message-timeout-ms=N] [--close-timeout-ms=N] [--upgrade]
//! ```
//!
//! STRATEGY: synchronous, threading, pool, forking, prefork,
//! prefork-threading, prefork-green, green. `--proxy`: a PROXY header
//! (v1 or v2) is required from 127.0.0.1.
//!
//! Each connection is served line by line: `panic` panics in the handler,
//! `json TEXT` parses TEXT as JSON (`ok` or an error that ends the
//! connection), `sleep MS` waits (in the strategy's own way) then echoes,
//! `pid` answers the pid of the server's own process (the one that printed
//! `listening on`, not a forked child), anything else is echoed; a line
//! over 64 KiB ends the connection. Prints `listening on URL`, serves until
//! SIGTERM or SIGINT, closes gracefully (`--close-timeout-ms`, default 5 s)
//! and exits 0.
//!
//! `--upgrade`: SIGUSR2 upgrades the server (`reload::Upgrade::serve`): a
//! new copy of this program, with the same arguments, takes the listening
//! socket over (it adopts the inherited socket instead of binding ADDR),
//! and this one exits 0 once its connections are done.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use socketserver::proxy::ProxyProtocol;
use socketserver::{
    Forking, Green, Pool, PreFork, Server, Strategy, StreamRequest, Synchronous, Threading,
};

const MAX_LINE: u64 = 64 * 1024;

/// The pid of the process that started serving (forked children keep it).
static SERVER_PID: OnceLock<u32> = OnceLock::new();

fn serve(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = req.read_message(|r| io::Read::take(r, MAX_LINE).read_line(&mut line))?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a line over 64 KiB",
            ));
        }
        let text = line.trim_end();
        if text == "panic" {
            panic!("the client asked for a panic");
        } else if let Some(json) = text.strip_prefix("json ") {
            let value: serde_json::Value = serde_json::from_str(json)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            writeln!(req, "ok {}", value.is_object())?;
        } else if text == "pid" {
            writeln!(req, "{}", SERVER_PID.get().copied().unwrap_or(0))?;
        } else if let Some(ms) = text.strip_prefix("sleep ") {
            socketserver::green::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            req.write_all(line.as_bytes())?;
        } else {
            req.write_all(line.as_bytes())?;
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
        .map(|v| v.parse().expect("a number"))
}

fn run<S: Strategy>(strategy: S, addr: &str, args: &[String]) -> io::Result<()> {
    let mut builder = Server::builder()
        .strategy(strategy)
        .max_connections(flag(args, "--max-connections").map(|n| n as usize))
        .max_per_ip(flag(args, "--max-per-ip").map(|n| n as usize))
        .max_pre_handler(flag(args, "--max-pre-handler").map(|n| n as usize))
        .close_timeout(Duration::from_millis(
            flag(args, "--close-timeout-ms").unwrap_or(5000),
        ))
        .busy_message("BUSY\n");
    if let Some(ms) = flag(args, "--message-timeout-ms") {
        builder = builder
            .message_timeout(Some(Duration::from_millis(ms)))
            .min_data_rate(None);
    }
    if args.iter().any(|a| a == "--proxy") {
        builder = builder.proxy_protocol(ProxyProtocol::Required {
            trusted: vec!["127.0.0.1".parse().expect("an address")],
        });
    }
    if let Some(config) = socketserver_tests::tls::config_from_args(args)? {
        builder = builder.tls(config);
    }
    // Started by an upgrade: the socket handed over, not ADDR.
    let server = match socketserver::activation::listeners()?.pop() {
        Some(socketserver::activation::Listener::Tcp(l)) => {
            builder.build(socketserver::transport::Tcp::from_std(l)?, serve)?
        }
        Some(other) => return Err(io::Error::other(format!("inherited {other:?}"))),
        None => builder.tcp(addr, serve)?,
    };
    if args.iter().any(|a| a == "--upgrade") {
        socketserver_tests::serve_upgradable(server)
    } else {
        socketserver_tests::serve_until_signalled(server)
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    SERVER_PID.get_or_init(std::process::id);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [addr, strategy] = positional[..] else {
        eprintln!("usage: matrix_server ADDR STRATEGY [flags]: see its docs");
        return ExitCode::from(2);
    };
    let result = match strategy.as_str() {
        "synchronous" => run(Synchronous, addr, &args),
        "threading" => run(Threading::new(), addr, &args),
        "pool" => run(Pool::new(8), addr, &args),
        "forking" => run(Forking::new(), addr, &args),
        "prefork" => run(PreFork::new(), addr, &args),
        "prefork-threading" => run(PreFork::new().inner(Threading::new()), addr, &args),
        "prefork-green" => run(PreFork::new().inner(Green::new().threads(1)), addr, &args),
        "green" => run(Green::new().threads(2), addr, &args),
        other => {
            eprintln!("matrix_server: unknown strategy {other:?}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("matrix_server: {e}");
            ExitCode::FAILURE
        }
    }
}
