//! A server on several sockets (`transport::Listeners`) for
//! `tests/tests/several_sockets.rs`, run as a process of its own so that
//! `Forking` and `PreFork` fork from a process with one thread.
//!
//! ```text
//! several_server STRATEGY DIR
//! ```
//!
//! STRATEGY: synchronous, threading, pool, forking, prefork,
//! prefork-threading, prefork-green, green. Listens on 127.0.0.1:0,
//! `[::1]:0` and the Unix socket DIR/several.sock, prints `listening on
//! URL, URL, URL` (every listener, in that order), serves until SIGTERM or
//! SIGINT, closes gracefully and exits 0. Each connection is served line by
//! line: the reply to `LINE` is `INDEX LINE`, INDEX being the listener
//! that accepted the connection.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

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

fn run<S: Strategy>(strategy: S, dir: &Path) -> io::Result<()> {
    let options = SocketOptions::default();
    let mut listeners = Listeners::new()?;
    listeners.push(Tcp::bind("127.0.0.1:0", &options)?)?;
    listeners.push(Tcp::bind("[::1]:0", &options)?)?;
    listeners.push(Unix::bind(dir.join("several.sock"), &options)?)?;
    let server = Server::builder()
        .strategy(strategy)
        .build(listeners, serve)?;
    socketserver_tests::serve_until_signalled(server)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [strategy, dir] = &args[..] else {
        eprintln!("usage: several_server STRATEGY DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(dir);
    let result = match strategy.as_str() {
        "synchronous" => run(Synchronous, dir),
        "threading" => run(Threading::new(), dir),
        "pool" => run(Pool::new(4), dir),
        "forking" => run(Forking::new(), dir),
        "prefork" => run(PreFork::new(), dir),
        "prefork-threading" => run(PreFork::new().inner(Threading::new()), dir),
        "prefork-green" => run(PreFork::new().inner(Green::new().threads(1)), dir),
        "green" => run(Green::new().threads(2), dir),
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
