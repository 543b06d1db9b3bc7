//! A server on several sockets (`transport::Listeners`) for
//! `tests/tests/several_sockets.rs`, run as a process of its own so that
//! `Forking` and `PreFork` fork from a process with one thread.
//!
//! ```text
//! several_server STRATEGY DIR [--upgrade]
//! ```
//!
//! STRATEGY: synchronous, threading, pool, forking, prefork,
//! prefork-threading, prefork-green, green. Listens on 127.0.0.1:0,
//! `[::1]:0` and the Unix socket DIR/several.sock, prints `listening on
//! URL, URL, URL` (every listener, in that order), serves until SIGTERM or
//! SIGINT, closes gracefully and exits 0. Each connection is served line by
//! line: the reply to `LINE` is `INDEX LINE`, INDEX being the listener
//! that accepted the connection.
//!
//! `--upgrade`: SIGUSR2 upgrades the server (`reload::Upgrade::serve`): a
//! new copy of this program takes every socket over, in order (it rebuilds
//! its set from the inherited sockets instead of binding), and this one
//! exits 0 once its connections are done.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use socketserver::activation::Listener;
use socketserver::transport::{Listeners, SocketOptions, Tcp, Unix};
use socketserver::{
    Forking, Green, Pool, PreFork, Server, Strategy, StreamRequest, Synchronous, Threading,
};

fn serve(req: &mut StreamRequest) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if req.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let index = req.listener();
        write!(req, "{index} {line}")?;
    }
}

fn run<S: Strategy>(strategy: S, dir: &Path, upgrade: bool) -> io::Result<()> {
    let inherited = socketserver::activation::listeners()?;
    let mut listeners = Listeners::new()?;
    if inherited.is_empty() {
        let options = SocketOptions::default();
        listeners.push(Tcp::bind("127.0.0.1:0", &options)?)?;
        listeners.push(Tcp::bind("[::1]:0", &options)?)?;
        listeners.push(Unix::bind(dir.join("several.sock"), &options)?)?;
    }
    // Started by an upgrade: the same sockets, in the order handed over.
    for l in inherited {
        match l {
            Listener::Tcp(l) => listeners.push(Tcp::from_std(l)?)?,
            Listener::Unix(l) => listeners.push(Unix::from_std(l)?)?,
            other => return Err(io::Error::other(format!("inherited {other:?}"))),
        };
    }
    let server = Server::builder()
        .strategy(strategy)
        .build(listeners, serve)?;
    if upgrade {
        socketserver_tests::serve_upgradable(server)
    } else {
        socketserver_tests::serve_until_signalled(server)
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let upgrade = args.iter().any(|a| a == "--upgrade");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [strategy, dir] = positional[..] else {
        eprintln!("usage: several_server STRATEGY DIR [--upgrade]");
        return ExitCode::from(2);
    };
    let dir = Path::new(dir);
    let result = match strategy.as_str() {
        "synchronous" => run(Synchronous, dir, upgrade),
        "threading" => run(Threading::new(), dir, upgrade),
        "pool" => run(Pool::new(4), dir, upgrade),
        "forking" => run(Forking::new(), dir, upgrade),
        "prefork" => run(PreFork::new(), dir, upgrade),
        "prefork-threading" => run(PreFork::new().inner(Threading::new()), dir, upgrade),
        "prefork-green" => run(PreFork::new().inner(Green::new().threads(1)), dir, upgrade),
        "green" => run(Green::new().threads(2), dir, upgrade),
        other => {
            eprintln!("several_server: unknown strategy {other:?}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("several_server: {e}");
            ExitCode::FAILURE
        }
    }
}
