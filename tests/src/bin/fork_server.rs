//! A single-threaded `Forking` server for `tests/tests/all/forking.rs`: forking
//! is only safe from a process with no other threads, so the forking tests
//! run their servers in this process rather than in the test harness.
//!
//! ```text
//! fork_server TRANSPORT ADDR MAX_CHILDREN MODE [--spawn-thread]
//!   TRANSPORT      tcp | udp | unix | unixgram
//!   ADDR           HOST:PORT, or a socket path for unix and unixgram
//!   MAX_CHILDREN   Forking::max_children
//!   MODE           echo        echo everything back
//!                  panic       echo, but a request starting with `panic` panics
//!                  sleep:MS    sleep MS milliseconds, then echo
//!                  exit:CODE   echo, but a request starting with `exit` ends
//!                              the child at once with status CODE
//!                  abort       echo, but a request starting with `abort`
//!                              crashes the child (SIGABRT)
//!                  log         log a warning in the child, then echo
//!   --spawn-thread start an idle thread first (to provoke the warning about
//!                  forking a multi-threaded process)
//!   --noisy-thread start a thread that logs all the time (it holds the
//!                  logger's lock at many a fork)
//!   --tls-cert=PEM --tls-key=PEM
//!                  stream transports speak TLS with this certificate
//!                  chain and key (the handshake runs in the child)
//! ```
//!
//! Prints `listening on URL` and flushes, serves until SIGTERM or SIGINT,
//! closes (waiting for its children) and exits 0. Logs go to stderr
//! (`RUST_LOG`, default `warn`).

use std::io::{self, BufRead};
use std::process::ExitCode;
use std::time::Duration;

use socketserver::{
    DatagramHandler, DatagramRequest, Forking, Server, StreamHandler, StreamRequest,
};

#[derive(Clone, Copy, Debug)]
enum Mode {
    Echo,
    Panic,
    Sleep(Duration),
    Exit(i32),
    Abort,
    Log,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s.split_once(':') {
            None if s == "echo" => Some(Mode::Echo),
            None if s == "panic" => Some(Mode::Panic),
            None if s == "abort" => Some(Mode::Abort),
            None if s == "log" => Some(Mode::Log),
            Some(("sleep", ms)) => ms
                .parse()
                .ok()
                .map(|ms| Mode::Sleep(Duration::from_millis(ms))),
            Some(("exit", code)) => code.parse().ok().map(Mode::Exit),
            _ => None,
        }
    }

    /// What every mode does before echoing, given the request's first bytes.
    fn before_echo(self, first: &[u8]) {
        match self {
            Mode::Echo => {}
            Mode::Panic if first.starts_with(b"panic") => panic!("asked to panic"),
            Mode::Panic => {}
            Mode::Sleep(d) => std::thread::sleep(d),
            Mode::Exit(code) if first.starts_with(b"exit") => std::process::exit(code),
            Mode::Exit(_) => {}
            Mode::Abort if first.starts_with(b"abort") => std::process::abort(),
            Mode::Abort => {}
            Mode::Log => log::warn!("a child serving {} bytes", first.len()),
        }
    }
}

struct ModeHandler(Mode);

impl StreamHandler for ModeHandler {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        // Peek at the first bytes; `echo` sends the buffered ones too.
        let first = req.fill_buf()?.to_vec();
        self.0.before_echo(&first);
        req.echo().map(drop)
    }
}

impl DatagramHandler for ModeHandler {
    fn handle(&self, req: &mut DatagramRequest) -> io::Result<()> {
        self.0.before_echo(req.data());
        let data = req.take_data();
        req.reply(&data)
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: fork_server tcp|udp|unix|unixgram ADDR MAX_CHILDREN \
         echo|panic|sleep:MS|exit:CODE|abort|log [--spawn-thread|--noisy-thread] \
         [--tls-cert=PEM --tls-key=PEM]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spawn_thread = args.iter().any(|a| a == "--spawn-thread");
    let noisy_thread = args.iter().any(|a| a == "--noisy-thread");
    let positional: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let [transport, addr, max_children, mode] = positional[..] else {
        return usage();
    };
    let (Ok(max_children), Some(mode)) = (max_children.parse::<usize>(), Mode::parse(mode)) else {
        return usage();
    };
    if spawn_thread {
        std::thread::spawn(|| loop {
            std::thread::park();
        });
    } else if noisy_thread {
        std::thread::spawn(|| loop {
            log::warn!("noise");
            std::thread::sleep(Duration::from_micros(200));
        });
    } else {
        let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
        if threads != 1 {
            eprintln!("fork_server: expected to be single-threaded, found {threads} threads");
            return ExitCode::from(3);
        }
    }
    let mut builder = Server::builder().strategy(Forking::new().max_children(max_children));
    match socketserver_tests::tls::config_from_args(&args) {
        Ok(Some(config)) => builder = builder.tls(config),
        Ok(None) => {}
        Err(e) => {
            eprintln!("fork_server: {e}");
            return ExitCode::from(2);
        }
    }
    let handler = ModeHandler(mode);
    let result = match transport {
        "tcp" => builder
            .tcp(addr, handler)
            .and_then(socketserver_tests::serve_until_signalled),
        "udp" => builder
            .udp(addr, handler)
            .and_then(socketserver_tests::serve_until_signalled),
        "unix" => builder
            .unix(addr, handler)
            .and_then(socketserver_tests::serve_until_signalled),
        "unixgram" => builder
            .unixgram(addr, handler)
            .and_then(socketserver_tests::serve_until_signalled),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fork_server: {e}");
            ExitCode::FAILURE
        }
    }
}
