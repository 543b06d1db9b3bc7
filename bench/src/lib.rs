//! `bench`: the strategies of socketserver side by side with what a Rust
//! user would otherwise write (a plain std thread-per-connection echo, a std
//! UDP loop, tokio, tokio-rustls for TLS) and what a Python user has today
//! (Python's `socketserver`), measured in one run on this machine.
//!
//! ```text
//! cargo run --release -p bench -- --quick
//! ```
//!
//! Every server runs as a child process in a process group of its own
//! (`bench baseline echo --strategy S` for ours,
//! `bench baseline std-tcp|std-udp|tokio-tcp|tokio-tls`, or an embedded Python
//! script), started fresh for each cell and stopped with SIGTERM to the
//! group (SIGKILL after a deadline). The load comes from [`loadgen`], in
//! this process. Cells:
//!
//! | cell | what |
//! |---|---|
//! | `pp64-c1`, `pp64-c50`, `pp64-c500` | 64-byte ping-pong on 1, 50, 500 connections |
//! | `pp16k-c50` | 16 KiB ping-pong on 50 connections |
//! | `connect-c8` | connect, echo 64 bytes, close; 8 at a time |
//! | `udp64-c8` | 64-byte UDP datagrams from 8 sockets |
//! | `tls-pp64-c50` | TLS, 64-byte ping-pong on 50 connections |
//! | `tls-handshake-c8` | TLS: connect, full handshake (no resumption), echo 64 bytes, close; 8 at a time |
//! | `idle-1k`, `idle-10k` | open 1,000 / 10,000 connections one after another (one echo each) and hold them: open time and rate (vs tokio), server RSS per idle connection |
//! | `exit-idle-10k` (`exit-idle-1k` with `--quick`) | hold 10,000 (1,000) idle connections, then SIGTERM: time to `serve_forever` returning (ours, from its stderr) and to the process reaped |
//! | `shutdown-idle`, `shutdown-busy` | `shutdown()` to `serve_forever` returning ([`shutdown`]) |
//!
//! Load, idle and exit cells run `--repeat N` rounds, every server of the
//! cell once per round (the order rotating). A load row is the median round
//! by req/s, and its ratio to the cell's reference server (`std`;
//! `tls-tokio` in the TLS cells) is the median of its per-round ratios; an
//! idle row is the median round by open time, with every round's open time
//! kept; an exit row gives the median of each of its times. The TLS cells'
//! certificates are made at the start of a run with the `openssl` command
//! line ([`certs`]).
//!
//! For the exit cells our servers run `bench baseline echo --report-times`,
//! which stops on SIGTERM the way `echo_server ADDR STRATEGY
//! --report-times` (the library's example) does and prints
//! `serve_forever returned at monotonic_ns=N` and `exiting at
//! monotonic_ns=N` on stderr; `bench` reads `CLOCK_MONOTONIC` just before
//! it sends the signal, so the two subtract. The baselines (std, tokio)
//! install no handler: the signal's default action ends them, and the time
//! to reaping is their exit.
//!
//! The results go to stdout as markdown (and to `--markdown`, `--json`,
//! `--svg`), progress to stderr.

pub mod baseline;
pub mod certs;
mod charts;
pub mod clock;
pub mod html;
pub mod proc;
pub mod report;
pub mod shutdown;
pub mod strategies;
pub mod timeline;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use loadgen::{Config, IdleConfig, Mode, TlsClient};

use proc::ServerChild;
use report::{fmt_rate, fmt_us, IdleResult, Results, Row};
use shutdown::ShutdownResult;

/// The Python side: Python's socketserver echo servers and its shutdown
/// measurement.
const PY_SCRIPT: &str = include_str!("compare.py");

/// The options of a `bench` run.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Short runs and fewer cells (no 10,000-connection idle and exit
    /// cells, fewer shutdown runs): under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Write every row (and the targets) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as markdown to FILE (it is printed on stdout too).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write SVG charts into DIR.
    #[arg(long, value_name = "DIR")]
    pub svg: Option<PathBuf>,
    /// Measured seconds of each load run [default: 2, --quick 0.4].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Warmup seconds before each measured window [default: 1, --quick 0.25].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub warmup: Option<Duration>,
    /// Run only the server/cell pairs matching REGEX, e.g. `threading|std`,
    /// `/pp64-c50$`, `^py-`. Pairs are named SERVER/CELL.
    #[arg(long, value_name = "REGEX")]
    pub only: Option<String>,
    /// Run each load, idle and exit cell N times, servers interleaved, and
    /// report the median (by req/s, by open time; exit: of each time) (a
    /// noisy machine).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: usize,
    /// Leave Python's servers out.
    #[arg(long)]
    pub no_python: bool,
    /// The directory of the anchor echo servers (`ref_go`, `ref_mio`,
    /// `ref_monoio`, each run as `PROGRAM ADDR`): Go and the per-core
    /// epoll and io_uring bounds, measured beside the others. Default:
    /// `$BENCH_ANCHORS`; an anchor whose program is not there is skipped,
    /// and the report says why.
    #[arg(long, value_name = "DIR")]
    pub anchors: Option<PathBuf>,
    /// Print the server/cell pairs that would run, and exit.
    #[arg(long)]
    pub list: bool,
    /// Measure nothing: gather the reports and charts of `--docs`'s
    /// `bench/` and the timelines of its `pictures/` into one
    /// self-contained page, DIR/index.html.
    #[arg(long, value_name = "DIR")]
    pub html: Option<PathBuf>,
    /// The guide `--html` reads.
    #[arg(long, value_name = "DIR", default_value = "docs", requires = "html")]
    pub docs: PathBuf,
    /// Test setting: every cell and every server once, in under a minute
    /// (see `SMOKE`); the numbers mean nothing.
    #[arg(long, hide = true)]
    pub smoke: bool,
}

/// Like [`parse_secs`], but 0 is allowed.
pub(crate) fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_secs(s)
}

pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| *f > 0.0)
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds (e.g. 2 or 0.5)"))
}

/// How a server is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `bench baseline echo --strategy S` (S one of the library's
    /// `strategy::NAMES`; with `--stack-size` and `--keep-alive` if set).
    Ours(&'static str, Option<usize>, Option<&'static str>),
    /// `bench baseline echo --strategy S --tls-cert C --tls-key K`.
    OursTls(&'static str),
    /// `bench baseline tokio-tls --tls-cert C --tls-key K`.
    TokioTls,
    /// `bench baseline std-tcp` (TCP cells) or `std-udp` (UDP cells).
    Std,
    /// `bench baseline tokio-tcp`.
    Tokio,
    /// Python: the TCP and the UDP server class (script kinds).
    Py(&'static str, Option<&'static str>),
    /// An anchor: a prebuilt echo server of `--anchors DIR` (this file
    /// name), run as `PROGRAM ADDR`; TCP only.
    Anchor(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct ServerDef {
    id: &'static str,
    label: &'static str,
    kind: Kind,
}

const SERVERS: &[ServerDef] = &[
    ServerDef {
        id: "synchronous",
        label: "socketserver `Synchronous`: one request at a time in the server loop (`bench baseline echo --strategy synchronous`)",
        kind: Kind::Ours("synchronous", None, None),
    },
    ServerDef {
        id: "threading",
        label: "socketserver `Threading` with its defaults: a thread per connection (per datagram over UDP), a finished thread kept alive 5 s for the next request, 2 MiB stacks",
        kind: Kind::Ours("threading", None, None),
    },
    ServerDef {
        id: "threading-64k",
        label: "socketserver `Threading` with 64 KiB thread stacks (`--stack-size 65536`), idle cells only",
        kind: Kind::Ours("threading", Some(64 * 1024), None),
    },
    ServerDef {
        id: "threading-new",
        label: "socketserver `Threading` with `keep_alive(Duration::ZERO)`: a new thread for every request, gone when it ends, as in Python (`--keep-alive 0`); connect and UDP cells only",
        kind: Kind::Ours("threading", None, Some("0")),
    },
    ServerDef {
        id: "pool",
        label: "socketserver `Pool` with its default size: {pool_workers} worker threads fed by a bounded queue",
        kind: Kind::Ours("pool", None, None),
    },
    ServerDef {
        id: "forking",
        label: "socketserver `Forking`: a child process per connection (per datagram over UDP), at most 40",
        kind: Kind::Ours("forking", None, None),
    },
    ServerDef {
        id: "prefork",
        label: "socketserver `PreFork` with its defaults: 5 to 50 long-lived child processes that each accept on the shared socket and serve one connection at a time (`Synchronous` inside), 2 to 10 idle, 1000 connections each",
        kind: Kind::Ours("prefork", None, None),
    },
    ServerDef {
        id: "green",
        label: "socketserver `Green` with its defaults: a coroutine per connection (per datagram over UDP), 2 MiB stacks (address space; pages as touched), one worker thread with its epoll reactor per core",
        kind: Kind::Ours("green", None, None),
    },
    ServerDef {
        id: "std",
        label: "baseline: plain std, blocking accept loop and a thread per connection, TCP_NODELAY (`bench baseline std-tcp`); over UDP a blocking `recv_from`/`send_to` loop (`bench baseline std-udp`)",
        kind: Kind::Std,
    },
    ServerDef {
        id: "tokio",
        label: "baseline: tokio multi-thread runtime (one worker per core), a task per connection (`bench baseline tokio-tcp`)",
        kind: Kind::Tokio,
    },
    ServerDef {
        id: "go",
        label: "anchor: Go, a goroutine per connection with blocking reads and writes on Go's netpoller, the nearest peer of blocking handlers on a reactor (`ref_go ADDR` of `--anchors`)",
        kind: Kind::Anchor("ref_go"),
    },
    ServerDef {
        id: "percore-epoll",
        label: "anchor (a bound, not a peer): a hand-written epoll loop (mio) per core, each with its own `SO_REUSEPORT` listener and its own connections, no scheduler and no hand-off (`ref_mio ADDR` of `--anchors`)",
        kind: Kind::Anchor("ref_mio"),
    },
    ServerDef {
        id: "percore-uring",
        label: "anchor (a bound, not a peer): monoio (io_uring), one runtime per core, each with its own `SO_REUSEPORT` listener, the thread-per-core design of the fastest Rust runtimes (`ref_monoio ADDR` of `--anchors`)",
        kind: Kind::Anchor("ref_monoio"),
    },
    ServerDef {
        id: "tls-threading",
        label: "TLS: socketserver `Threading` with `Builder::tls(tls::server_config(CERT, KEY))` (rustls 0.23, ring provider), what `echo_server ADDR threading --tls CERT KEY` runs",
        kind: Kind::OursTls("threading"),
    },
    ServerDef {
        id: "tls-green",
        label: "TLS: socketserver `Green` with the same `Builder::tls` configuration",
        kind: Kind::OursTls("green"),
    },
    ServerDef {
        id: "tls-tokio",
        label: "TLS baseline: tokio-rustls 0.26 on the tokio multi-thread runtime, a task per connection, with the very same rustls `ServerConfig` (`bench baseline tokio-tls`)",
        kind: Kind::TokioTls,
    },
    ServerDef {
        id: "py-threading",
        label: "Python `socketserver.ThreadingTCPServer` (UDP: `ThreadingUDPServer`): a thread per connection / datagram",
        kind: Kind::Py("threading-tcp", Some("threading-udp")),
    },
    ServerDef {
        id: "py-forking",
        label: "Python `socketserver.ForkingTCPServer`: a process per connection, max_children 40",
        kind: Kind::Py("forking-tcp", None),
    },
    ServerDef {
        id: "py-sync",
        label: "Python `socketserver.TCPServer` (UDP: `UDPServer`): one request at a time",
        kind: Kind::Py("tcp", Some("udp")),
    },
];

/// Worker threads of `Pool::default()` on this machine.
fn pool_workers() -> usize {
    socketserver::Pool::default().workers()
}

/// What `def` is, in words, with this machine's figures filled in.
fn label(def: &ServerDef) -> String {
    def.label
        .replace("{pool_workers}", &pool_workers().to_string())
}

fn server(id: &str) -> &'static ServerDef {
    SERVERS
        .iter()
        .find(|s| s.id == id)
        .expect("a known server id")
}

const TCP_SERVERS: &[&str] = &[
    "synchronous",
    "threading",
    "pool",
    "forking",
    "prefork",
    "green",
    "std",
    "tokio",
    "go",
    "percore-epoll",
    "percore-uring",
    "py-threading",
    "py-forking",
    "py-sync",
];
const CONNECT_SERVERS: &[&str] = &[
    "synchronous",
    "threading",
    "threading-new",
    "pool",
    "forking",
    "prefork",
    "green",
    "std",
    "tokio",
    "go",
    "percore-epoll",
    "percore-uring",
    "py-threading",
    "py-forking",
    "py-sync",
];
const UDP_SERVERS: &[&str] = &[
    "synchronous",
    "threading",
    "threading-new",
    "pool",
    "forking",
    "green",
    "std",
    "py-threading",
    "py-sync",
];
const TLS_SERVERS: &[&str] = &["tls-threading", "tls-green", "tls-tokio"];
const IDLE_SERVERS: &[&str] = &[
    "threading",
    "threading-64k",
    "green",
    "std",
    "tokio",
    "py-threading",
];
/// The exit cells: ours under the strategies that hold thousands of idle
/// connections, and the baselines (killed by the signal).
const EXIT_SERVERS: &[&str] = &["green", "threading", "std", "tokio"];
const SHUTDOWN_SERVERS: &[&str] = &[
    "synchronous",
    "threading",
    "pool",
    "forking",
    "green",
    "py-threading",
];

/// The server/cell pairs of `--smoke`: every cell, every server at least
/// once, every kind of server (ours under each strategy, std, tokio,
/// Python) in a load cell, two or three servers per cell.
const SMOKE: &[&str] = &[
    "synchronous/pp64-c1",
    "std/pp64-c1",
    "threading/pp64-c50",
    "tokio/pp64-c50",
    "py-threading/pp64-c50",
    "pool/pp64-c500",
    "std/pp64-c500",
    "forking/pp16k-c50",
    "py-forking/pp16k-c50",
    "threading-new/connect-c8",
    "green/connect-c8",
    "prefork/connect-c8",
    "prefork/pp64-c50",
    "tls-threading/tls-pp64-c50",
    "tls-tokio/tls-pp64-c50",
    "tls-green/tls-handshake-c8",
    "tls-tokio/tls-handshake-c8",
    "std/connect-c8",
    "py-sync/connect-c8",
    "threading/udp64-c8",
    "std/udp64-c8",
    "py-threading/udp64-c8",
    "threading-64k/idle-1k",
    "std/idle-1k",
    "green/exit-idle-1k",
    "tokio/exit-idle-1k",
    "synchronous/shutdown-idle",
    "py-threading/shutdown-idle",
    "forking/shutdown-busy",
    "pool/shutdown-busy",
];

/// Busy clients in the busy shutdown cell.
const SHUTDOWN_BUSY: usize = 20;

/// Longest wait, in an exit cell, from SIGTERM to the server process
/// reaped; past it the group is killed and the round fails.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
enum What {
    Load {
        mode: Mode,
        conns: usize,
        size: usize,
    },
    Idle {
        count: usize,
    },
    /// Hold `count` idle connections, then SIGTERM.
    Exit {
        count: usize,
    },
    Shutdown {
        busy: usize,
    },
}

#[derive(Debug, Clone)]
struct Cell {
    id: &'static str,
    title: &'static str,
    what: What,
    /// Over TLS (load cells).
    tls: bool,
    /// The server every other one is divided by, round by round.
    reference: &'static str,
    servers: Vec<&'static str>,
}

/// The shortest warmup of a TLS cell (`--smoke` and `--quick` have
/// shorter ones; see `run_load`).
const TLS_MIN_WARMUP: Duration = Duration::from_secs(1);

/// The shortest measured window of a TLS cell.
const TLS_MIN_DURATION: Duration = Duration::from_millis(500);

/// Settings of one run, from the options.
#[derive(Debug, Clone)]
struct Settings {
    duration: Duration,
    warmup: Duration,
    repeat: usize,
    shutdown_runs: usize,
    idle_limit: Duration,
    exe: PathBuf,
    python: Option<(PathBuf, String)>,
    /// The certificates of the TLS cells, when any runs.
    tls: Option<std::sync::Arc<certs::Certs>>,
    /// Where the anchors' programs are (`--anchors`).
    anchors: Option<PathBuf>,
}

fn plan(args: &CompareArgs, idle_cap: Option<usize>) -> Vec<Cell> {
    let load = |id, title, mode, conns, size, servers: &[&'static str]| Cell {
        id,
        title,
        what: What::Load { mode, conns, size },
        tls: false,
        reference: "std",
        servers: servers.to_vec(),
    };
    let tls = |id, title, mode, conns| Cell {
        id,
        title,
        what: What::Load {
            mode,
            conns,
            size: 64,
        },
        tls: true,
        reference: "tls-tokio",
        servers: TLS_SERVERS.to_vec(),
    };
    let mut cells = vec![
        load(
            "pp64-c1",
            "64-byte ping-pong, 1 connection",
            Mode::PingPong,
            1,
            64,
            TCP_SERVERS,
        ),
        load(
            "pp64-c50",
            "64-byte ping-pong, 50 connections",
            Mode::PingPong,
            50,
            64,
            TCP_SERVERS,
        ),
        load(
            "pp64-c500",
            "64-byte ping-pong, 500 connections",
            Mode::PingPong,
            500,
            64,
            TCP_SERVERS,
        ),
        load(
            "pp16k-c50",
            "16 KiB ping-pong, 50 connections",
            Mode::PingPong,
            50,
            16 * 1024,
            TCP_SERVERS,
        ),
        load(
            "connect-c8",
            "connect, echo 64 bytes, close; 8 at a time (new connections per second)",
            Mode::Connect,
            8,
            64,
            CONNECT_SERVERS,
        ),
        load(
            "udp64-c8",
            "UDP echo, 64-byte datagrams, 8 sockets",
            Mode::Udp,
            8,
            64,
            UDP_SERVERS,
        ),
        tls(
            "tls-pp64-c50",
            "TLS: 64-byte ping-pong, 50 connections",
            Mode::PingPong,
            50,
        ),
        tls(
            "tls-handshake-c8",
            "TLS: connect, full handshake (no resumption), echo 64 bytes, close; 8 at a time (handshakes per second)",
            Mode::Connect,
            8,
        ),
    ];
    let (small, big) = if args.smoke {
        (100, None)
    } else {
        (1_000, Some(10_000))
    };
    let cap = |n: usize| idle_cap.map_or(n, |c| n.min(c));
    cells.push(Cell {
        id: "idle-1k",
        title: "server memory holding 1,000 idle connections",
        what: What::Idle { count: cap(small) },
        tls: false,
        reference: "std",
        servers: IDLE_SERVERS.to_vec(),
    });
    if let (Some(n), false) = (big, args.quick) {
        cells.push(Cell {
            id: "idle-10k",
            title: "server memory holding 10,000 idle connections",
            what: What::Idle { count: cap(n) },
            tls: false,
            reference: "std",
            servers: IDLE_SERVERS.to_vec(),
        });
    }
    let (id, title, n) = match (big, args.quick) {
        (Some(n), false) => (
            "exit-idle-10k",
            "SIGTERM to a server holding 10,000 idle connections",
            n,
        ),
        _ => (
            "exit-idle-1k",
            "SIGTERM to a server holding 1,000 idle connections",
            small,
        ),
    };
    cells.push(Cell {
        id,
        title,
        what: What::Exit { count: cap(n) },
        tls: false,
        reference: "tokio",
        servers: EXIT_SERVERS.to_vec(),
    });
    cells.push(Cell {
        id: "shutdown-idle",
        title: "shutdown() to serve_forever returning, idle server",
        what: What::Shutdown { busy: 0 },
        tls: false,
        reference: "std",
        servers: SHUTDOWN_SERVERS.to_vec(),
    });
    cells.push(Cell {
        id: "shutdown-busy",
        title: "shutdown() to serve_forever returning, 20 busy clients",
        what: What::Shutdown {
            busy: SHUTDOWN_BUSY,
        },
        tls: false,
        reference: "std",
        servers: SHUTDOWN_SERVERS.to_vec(),
    });
    cells
}

/// Runs the comparison; returns whether every cell produced numbers.
pub fn run(args: CompareArgs) -> io::Result<bool> {
    if let Some(dir) = &args.html {
        let path = html::write(dir, &args.docs)?;
        eprintln!("bench: wrote {}", path.display());
        return Ok(true);
    }
    let started = Instant::now();
    let only = match &args.only {
        Some(re) => Some(
            regex::Regex::new(re)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--only: {e}")))?,
        ),
        None => None,
    };
    let mut notes = Vec::new();
    // The idle cells need about 10,000 descriptors here and in the server;
    // children inherit the raised limit.
    let want_fds = if args.quick || args.smoke {
        1_000
    } else {
        10_000
    };
    let idle_cap = match loadgen::ensure_fds(want_fds + 1_024) {
        Ok(_) => None,
        Err(loadgen::Error::FdLimit { hard, .. }) => {
            let cap = (hard as usize).saturating_sub(1_200).max(10);
            notes.push(format!(
                "The hard RLIMIT_NOFILE is {hard}: idle cells were capped at {cap} connections."
            ));
            Some(cap)
        }
        Err(e) => return Err(io::Error::other(format!("raising RLIMIT_NOFILE: {e}"))),
    };
    let python = find_python();
    let mut cells = plan(&args, idle_cap);
    if python.is_none() || args.no_python {
        let why = if args.no_python {
            "left out (--no-python)"
        } else {
            "skipped: python3 was not found"
        };
        eprintln!("bench: Python's socketserver {why}");
        notes.push(format!("Python's socketserver servers were {why}."));
        for c in &mut cells {
            c.servers.retain(|s| !s.starts_with("py-"));
        }
    }
    if args.smoke {
        for c in &mut cells {
            c.servers
                .retain(|s| SMOKE.contains(&format!("{s}/{}", c.id).as_str()));
        }
    }
    if let Some(re) = &only {
        for c in &mut cells {
            c.servers.retain(|s| re.is_match(&format!("{s}/{}", c.id)));
        }
    }
    let anchors = args
        .anchors
        .clone()
        .or_else(|| std::env::var_os("BENCH_ANCHORS").map(PathBuf::from));
    for def in SERVERS {
        let Kind::Anchor(program) = def.kind else {
            continue;
        };
        // Only an anchor that would run (after --smoke and --only) is
        // looked for, and reported when missing.
        if !cells.iter().any(|c| c.servers.contains(&def.id)) {
            continue;
        }
        if let Some(why) = anchor_missing(anchors.as_deref(), program) {
            eprintln!("bench: {} skipped: {why}", def.id);
            notes.push(format!("`{}` was skipped: {why}.", def.id));
            for c in &mut cells {
                c.servers.retain(|s| *s != def.id);
            }
        }
    }
    cells.retain(|c| !c.servers.is_empty());
    if args.list {
        for c in &cells {
            for s in &c.servers {
                println!("{s}/{}", c.id);
            }
        }
        return Ok(true);
    }
    let (duration, warmup) = match (args.smoke, args.quick) {
        // Long enough for a slow server (Python's, on a saturated machine)
        // to answer at least once inside the window: at 0.1 s after 0.05 s
        // some cells had no number at all under load.
        (true, _) => (Duration::from_millis(400), Duration::from_millis(300)),
        (false, true) => (Duration::from_millis(400), Duration::from_millis(250)),
        (false, false) => (Duration::from_secs(2), Duration::from_secs(1)),
    };
    let script = match &python {
        Some(_) if !args.no_python => Some(write_script()?),
        _ => None,
    };
    // Certificates for the TLS cells, made now in a temp dir (removed when
    // the run ends).
    let tls = if cells.iter().any(|c| c.tls) {
        match certs::Certs::make() {
            Ok(c) => Some(std::sync::Arc::new(c)),
            Err(e) => {
                eprintln!("bench: TLS cells skipped: {e}");
                notes.push(format!("The TLS cells were skipped: {e}."));
                cells.retain(|c| !c.tls);
                None
            }
        }
    } else {
        None
    };
    let settings = Settings {
        duration: args.duration.unwrap_or(duration),
        warmup: args.warmup.unwrap_or(warmup),
        repeat: args.repeat.max(1),
        shutdown_runs: match (args.smoke, args.quick) {
            (true, _) => 2,
            (false, true) => 5,
            (false, false) => 20,
        },
        idle_limit: Duration::from_secs(if args.quick || args.smoke { 20 } else { 60 }),
        exe: std::env::current_exe()?,
        python: python.clone().zip(script.clone()).map(|((_, v), s)| (s, v)),
        tls,
        anchors,
    };
    let load_before = loadavg();
    eprintln!(
        "bench: load average {load_before} before starting; {} cells, {:.1} s windows after {:.2} s warmup",
        cells.len(),
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64()
    );
    if cfg!(debug_assertions) {
        eprintln!("bench: this is a debug build; numbers are not representative (use --release)");
        notes.push("This run used a debug build: the numbers are not representative.".into());
    }
    let total: usize = cells
        .iter()
        .map(|c| match c.what {
            What::Shutdown { .. } => c.servers.len(),
            _ => c.servers.len() * settings.repeat,
        })
        .sum();
    let mut progress = Progress {
        done: 0,
        total,
        started,
    };
    let mut rows = Vec::new();
    for cell in &cells {
        match cell.what {
            What::Load { .. } => {
                rows.extend(run_load_cell(&settings, cell, &mut progress));
            }
            What::Idle { count } => {
                let runs = run_rounds(&settings, cell, &mut progress, |def| {
                    run_idle(&settings, def, cell, count)
                });
                rows.extend(runs.into_iter().map(merge_idle));
            }
            What::Exit { count } => {
                let runs = run_rounds(&settings, cell, &mut progress, |def| {
                    run_exit(&settings, def, cell, count)
                });
                rows.extend(runs.into_iter().map(merge_exit));
            }
            What::Shutdown { busy } => {
                for id in &cell.servers {
                    let row = run_shutdown(&settings, server(id), cell, busy);
                    progress.line(&row);
                    rows.push(row);
                }
            }
        }
    }
    if let Some(s) = &script {
        let _ = std::fs::remove_file(s);
    }
    let references: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c.id.to_owned(), c.reference.to_owned()))
        .collect();
    report::fill_ratios(&mut rows, &references);
    let targets = report::targets(&rows);
    notes.extend(standard_notes(&settings));
    let quote = |a: String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./=-:,".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    let mut argv: Vec<String> = std::env::args().skip(1).map(quote).collect();
    argv.insert(0, "cargo run --release -p bench --".into());
    let results = Results {
        command: argv.join(" "),
        date: date_utc(),
        machine: machine(&settings),
        cores: cores(),
        load_before,
        load_after: loadavg(),
        duration_s: settings.duration.as_secs_f64(),
        warmup_s: settings.warmup.as_secs_f64(),
        repeat: settings.repeat,
        wall_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        rows,
        targets,
        notes,
    };
    let svgs = match &args.svg {
        Some(dir) => match charts::write_all(dir, &results.rows) {
            Ok(files) => {
                // Links relative to the markdown file when it is in DIR.
                let prefix = svg_prefix(dir, args.markdown.as_deref());
                files
                    .into_iter()
                    .map(|(f, c)| (format!("{prefix}{f}"), c))
                    .collect()
            }
            Err(e) => {
                eprintln!("bench: writing charts to {}: {e}", dir.display());
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let legend: Vec<(String, String)> = SERVERS
        .iter()
        .filter(|s| results.rows.iter().any(|r| r.server == s.id))
        .map(|s| (s.id.to_owned(), label(s)))
        .collect();
    let md = report::markdown(&results, &legend, &svgs);
    if let Some(p) = &args.json {
        let json = serde_json::to_string_pretty(&results).map_err(io::Error::other)?;
        write_file(p, &json)?;
    }
    if let Some(p) = &args.markdown {
        write_file(p, &md)?;
    }
    io::stdout().lock().write_all(md.as_bytes())?;
    let ok = results.rows.iter().all(|r| r.failure.is_none());
    eprintln!(
        "bench: done in {:.0} s; load average now {}",
        started.elapsed().as_secs_f64(),
        results.load_after
    );
    Ok(ok)
}

fn write_file(p: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(p, text)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", p.display())))
}

/// The path from the markdown file's folder to the SVG folder, as a link
/// prefix (`""` when they are the same folder).
fn svg_prefix(svg_dir: &Path, markdown: Option<&Path>) -> String {
    let md_dir = markdown
        .and_then(|m| m.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if canon(md_dir) == canon(svg_dir) {
        String::new()
    } else {
        format!("{}/", svg_dir.display())
    }
}

struct Progress {
    done: usize,
    total: usize,
    started: Instant,
}

impl Progress {
    fn line(&mut self, r: &Row) {
        self.done += 1;
        let what = if let Some(f) = &r.failure {
            format!("FAILED: {f}")
        } else if let Some(i) = &r.idle {
            format!(
                "held {}/{} in {:.1} s, RSS {:.1} -> {:.1} MiB, {:.1} KiB/conn",
                i.held,
                i.requested,
                i.open_secs,
                i.rss_before_kib as f64 / 1024.0,
                i.rss_held_kib as f64 / 1024.0,
                i.kib_per_conn
            )
        } else if let Some(x) = &r.exit {
            format!(
                "held {}/{}, SIGTERM -> serve_forever returned {}, reaped {:.1} ms ({})",
                x.held,
                x.requested,
                x.returned_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms")),
                x.exit_ms,
                x.ended
            )
        } else if let Some(s) = &r.shutdown {
            format!(
                "median {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} runs",
                s.median_ms, s.p99_ms, s.max_ms, s.runs
            )
        } else {
            format!(
                "{:>9} req/s  p50 {:>8}  p99 {:>8}  cpu {:.2}  errors {}  active {}/{}",
                fmt_rate(r.req_per_s),
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                r.server_cpu,
                r.errors,
                r.active_conns,
                r.conns
            )
        };
        eprintln!(
            "bench: [{:>3}/{}] {:<14} {:<13} {what}  ({:.0} s)",
            self.done,
            self.total,
            r.cell,
            r.server,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn base_row(def: &ServerDef, cell: &Cell, kind: &str) -> Row {
    let (mode, conns, size) = match cell.what {
        What::Load { mode, conns, size } => (mode.name().to_owned(), conns, size),
        What::Idle { count } => ("idle".to_owned(), count, 64),
        What::Exit { count } => ("exit".to_owned(), count, 64),
        What::Shutdown { busy } => ("shutdown".to_owned(), busy, 64),
    };
    Row {
        server: def.id.to_owned(),
        label: label(def),
        cell: cell.id.to_owned(),
        cell_title: cell.title.to_owned(),
        kind: kind.to_owned(),
        mode,
        conns,
        size,
        ..Row::default()
    }
}

/// Starts `def` for TCP or UDP and returns it with the address to load.
fn start_server(s: &Settings, def: &ServerDef, udp: bool) -> io::Result<(ServerChild, SocketAddr)> {
    start_server_with(s, def, udp, false)
}

/// [`start_server`]; with `report_times`, ours stop cleanly on SIGTERM and
/// say when on stderr (`bench baseline echo --report-times`).
fn start_server_with(
    s: &Settings,
    def: &ServerDef,
    udp: bool,
    report_times: bool,
) -> io::Result<(ServerChild, SocketAddr)> {
    let exe = s.exe.to_string_lossy().into_owned();
    let listen = "127.0.0.1:0".to_owned();
    let quiet = [("RUST_LOG", "error")];
    let own = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let child = match def.kind {
        Kind::Ours(strategy, stack, keep_alive) => {
            let mut a = own(&["baseline", "echo", "--listen", &listen]);
            a.extend(own(&["--strategy", strategy]));
            if udp {
                a.push("--udp".into());
            }
            if let Some(n) = stack {
                a.extend(own(&["--stack-size", &n.to_string()]));
            }
            if let Some(secs) = keep_alive {
                a.extend(own(&["--keep-alive", secs]));
            }
            if report_times {
                a.push("--report-times".into());
            }
            ServerChild::start(&exe, &a, &quiet, 1)?
        }
        Kind::Std => {
            let which = if udp { "std-udp" } else { "std-tcp" };
            ServerChild::start(
                &exe,
                &own(&["baseline", which, "--listen", &listen]),
                &quiet,
                1,
            )?
        }
        Kind::Tokio => ServerChild::start(
            &exe,
            &own(&["baseline", "tokio-tcp", "--listen", &listen]),
            &quiet,
            1,
        )?,
        Kind::OursTls(_) | Kind::TokioTls => {
            let c = s
                .tls
                .as_ref()
                .ok_or_else(|| io::Error::other("no certificates for TLS"))?;
            let (cert, key) = (c.cert.to_string_lossy(), c.key.to_string_lossy());
            let mut a = match def.kind {
                Kind::OursTls(strategy) => own(&["baseline", "echo", "--strategy", strategy]),
                _ => own(&["baseline", "tokio-tls"]),
            };
            a.extend(own(&[
                "--listen",
                &listen,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ]));
            ServerChild::start(&exe, &a, &quiet, 1)?
        }
        Kind::Py(tcp, udp_kind) => {
            let (script, _) = s
                .python
                .as_ref()
                .ok_or_else(|| io::Error::other("python3 is not available"))?;
            let kind = if udp {
                udp_kind.ok_or_else(|| io::Error::other("no UDP server of this kind"))?
            } else {
                tcp
            };
            let a = vec![
                script.to_string_lossy().into_owned(),
                "serve".into(),
                kind.into(),
                listen.clone(),
            ];
            ServerChild::start("python3", &a, &[], 1)?
        }
        Kind::Anchor(program) => {
            if udp {
                return Err(io::Error::other("the anchors serve TCP only"));
            }
            let dir = s
                .anchors
                .as_ref()
                .ok_or_else(|| io::Error::other("no --anchors directory"))?;
            let addr = free_port()?;
            let path = dir.join(program);
            ServerChild::start_at(&path.to_string_lossy(), &[addr.to_string()], addr)?
        }
    };
    let scheme = if udp { "udp" } else { "tcp" };
    let addr = child
        .addr(scheme)
        .ok_or_else(|| io::Error::other(format!("the server printed no {scheme} address")))?;
    Ok((child, addr))
}

/// Runs every server of a cell `repeat` times with `one`, interleaved (the
/// order rotates each round); returns each server's rows in round order.
fn run_rounds(
    s: &Settings,
    cell: &Cell,
    progress: &mut Progress,
    mut one: impl FnMut(&ServerDef) -> Row,
) -> Vec<Vec<Row>> {
    let n = cell.servers.len();
    let mut runs: Vec<Vec<Row>> = vec![Vec::new(); n];
    for round in 0..s.repeat {
        for k in 0..n {
            let i = (k + round) % n;
            let row = one(server(cell.servers[i]));
            progress.line(&row);
            runs[i].push(row);
        }
    }
    runs
}

/// The median of `v` (0 when empty).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// One server's idle rounds as one row: the median round by open time
/// (among the rounds that did not fail), with every round's open time
/// (0 for a failed round) in `idle.open_secs_rounds`; a failed round marks
/// the row failed.
fn merge_idle(rs: Vec<Row>) -> Row {
    let rounds: Vec<f64> = rs
        .iter()
        .map(|r| match (&r.idle, &r.failure) {
            (Some(i), None) => i.open_secs,
            _ => 0.0,
        })
        .collect();
    let failure = rs.iter().find_map(|r| r.failure.clone());
    let mut good: Vec<Row> = rs
        .iter()
        .filter(|r| r.failure.is_none() && r.idle.is_some())
        .cloned()
        .collect();
    good.sort_by(|a, b| {
        let t = |r: &Row| r.idle.as_ref().map_or(0.0, |i| i.open_secs);
        t(a).total_cmp(&t(b))
    });
    let mut row = if good.is_empty() {
        rs.into_iter().next().unwrap_or_default()
    } else {
        good.swap_remove((good.len() - 1) / 2)
    };
    if let Some(i) = &mut row.idle {
        i.open_secs_rounds = rounds;
    }
    if row.failure.is_none() {
        row.failure = failure;
    }
    row
}

/// One server's exit rounds as one row: the median of each time over the
/// rounds that ended in time, every round's times kept; a failed round
/// marks the row failed.
fn merge_exit(rs: Vec<Row>) -> Row {
    let failure = rs.iter().find_map(|r| r.failure.clone());
    let ok: Vec<&report::ExitResult> = rs
        .iter()
        .filter(|r| r.failure.is_none())
        .filter_map(|r| r.exit.as_ref())
        .collect();
    let Some(first) = rs.first() else {
        return Row::default();
    };
    let mut row = first.clone();
    let all = |f: &dyn Fn(&report::ExitResult) -> Option<f64>| -> Vec<f64> {
        ok.iter().filter_map(|x| f(x)).collect()
    };
    let exit_ms_rounds = all(&|x| Some(x.exit_ms));
    let returned_ms_rounds = all(&|x| x.returned_ms);
    let exiting_ms_rounds = all(&|x| x.exiting_ms);
    let some_median = |v: &[f64]| (!v.is_empty()).then(|| median(v));
    row.exit = rs.iter().find_map(|r| r.exit.clone()).map(|x| {
        let mut ended: Vec<String> = ok.iter().map(|x| x.ended.clone()).collect();
        ended.dedup();
        report::ExitResult {
            held: ok.iter().map(|x| x.held).min().unwrap_or(x.held),
            rounds: ok.len(),
            exit_ms: median(&exit_ms_rounds),
            returned_ms: some_median(&returned_ms_rounds),
            exiting_ms: some_median(&exiting_ms_rounds),
            open_secs_rounds: rs
                .iter()
                .filter_map(|r| r.exit.as_ref())
                .flat_map(|x| x.open_secs_rounds.clone())
                .collect(),
            exit_ms_rounds,
            returned_ms_rounds,
            exiting_ms_rounds,
            ended: ended.join(", "),
            ..x
        }
    });
    row.failure = failure;
    row.active_conns = row.exit.as_ref().map_or(0, |x| x.held as u64);
    row.errors = rs.iter().map(|r| r.errors).max().unwrap_or(0);
    row
}

/// Runs every server of a load cell `repeat` times, interleaved (the
/// order rotates each round), and keeps each server's median row.
fn run_load_cell(s: &Settings, cell: &Cell, progress: &mut Progress) -> Vec<Row> {
    let runs = run_rounds(s, cell, progress, |def| run_load(s, def, cell));
    runs.into_iter()
        .map(|mut rs| {
            let repeats: Vec<f64> = rs.iter().map(|r| r.req_per_s).collect();
            rs.sort_by(|a, b| a.req_per_s.total_cmp(&b.req_per_s));
            // A failed repetition sorts first (0 req/s); prefer a good median.
            let good: Vec<Row> = rs.iter().filter(|r| r.failure.is_none()).cloned().collect();
            let mut row = if good.is_empty() {
                rs.swap_remove(0)
            } else {
                good[(good.len() - 1) / 2].clone()
            };
            if rs.iter().any(|r| r.failure.is_some()) && row.failure.is_none() && s.repeat > 1 {
                row.failure = rs.iter().find_map(|r| r.failure.clone());
            }
            row.repeats = repeats;
            row
        })
        .collect()
}

fn run_load(s: &Settings, def: &ServerDef, cell: &Cell) -> Row {
    let mut row = base_row(def, cell, "load");
    let What::Load { mode, conns, size } = cell.what else {
        unreachable!("a load cell")
    };
    let (mut server, addr) = match start_server(s, def, mode == Mode::Udp) {
        Ok(x) => x,
        Err(e) => {
            row.failure = Some(e.to_string());
            return row;
        }
    };
    let mut cfg = Config::new(addr);
    if cell.tls {
        match s
            .tls
            .as_ref()
            .map(|c| TlsClient::from_ca_file(&c.ca, "localhost"))
        {
            Some(Ok(client)) => cfg.tls = Some(client),
            Some(Err(e)) => {
                row.failure = Some(format!("TLS client: {e}"));
                server.stop(Duration::from_secs(3));
                return row;
            }
            None => {
                row.failure = Some("no certificates for TLS".into());
                server.stop(Duration::from_secs(3));
                return row;
            }
        }
    }
    cfg.mode = mode;
    cfg.conns = conns;
    cfg.size = size;
    // A TLS cell's windows are at least TLS_MIN_WARMUP and
    // TLS_MIN_DURATION: the `--smoke` windows (0.3 s, 0.4 s) are shorter
    // than full handshakes take in a test build (unoptimized ring) on a busy
    // machine, and a cell whose handshakes all end after its window has no
    // number ("no request completed"), a failure of the smoke test.
    let (warmup, duration) = if cell.tls {
        (
            s.warmup.max(TLS_MIN_WARMUP),
            s.duration.max(TLS_MIN_DURATION),
        )
    } else {
        (s.warmup, s.duration)
    };
    cfg.duration = duration;
    cfg.warmup = warmup;
    // CPU of the server's group over the measured window, sampled on a
    // thread at the window's start and end (loadgen starts its clock right
    // after one probe connection, well under a millisecond later).
    let pgid = server.pid();
    let sampler = thread::spawn(move || {
        let t0 = Instant::now();
        thread::sleep(warmup);
        let (c0, a) = (proc::group_cpu(pgid), Instant::now());
        thread::sleep((t0 + warmup + duration).saturating_duration_since(Instant::now()));
        let (c1, b) = (proc::group_cpu(pgid), Instant::now());
        c1.saturating_sub(c0).as_secs_f64() / (b - a).as_secs_f64().max(1e-3)
    });
    let result = loadgen::run(&cfg);
    row.server_cpu = (sampler.join().unwrap_or(0.0) * 100.0).round() / 100.0;
    let report = match result {
        Ok(r) => Some(r),
        Err(loadgen::Error::NothingServed(r)) => {
            row.failure = Some(format!("nothing served ({} errors)", r.errors));
            Some(*r)
        }
        Err(e) => {
            row.failure = Some(e.to_string());
            None
        }
    };
    if let Some(r) = report {
        row.req_per_s = r.req_per_s;
        row.p50_us = r.p50_us;
        row.p99_us = r.p99_us;
        row.p999_us = r.p999_us;
        row.max_us = r.max_us;
        row.loadgen_cpu = r.lg_cpu;
        row.errors = r.errors;
        row.lost = r.lost;
        row.active_conns = r.active_conns;
        if row.failure.is_none() && r.req_per_s <= 0.0 {
            row.failure = Some("no request completed in the measured window".into());
        }
    }
    if server.exited() {
        row.failure = Some(format!("the server exited{}", server.stderr_tail()));
    }
    server.stop(Duration::from_secs(3));
    row
}

fn run_idle(s: &Settings, def: &ServerDef, cell: &Cell, count: usize) -> Row {
    let mut row = base_row(def, cell, "idle");
    let (mut server, addr) = match start_server(s, def, false) {
        Ok(x) => x,
        Err(e) => {
            row.failure = Some(e.to_string());
            return row;
        }
    };
    thread::sleep(Duration::from_millis(200));
    let rss_before = server.rss_kib();
    let mut cfg = IdleConfig::new(addr, count);
    cfg.echo_size = 64;
    cfg.time_limit = s.idle_limit;
    match loadgen::hold_idle(&cfg) {
        Ok(held) => {
            // Let the last threads settle (touch their stacks).
            thread::sleep(Duration::from_millis(300));
            let rss_held = server.rss_kib();
            let rep = held.report().clone();
            let n = held.len();
            let idle = IdleResult {
                requested: count,
                held: n,
                alive: held.alive(),
                open_secs: rep.secs,
                rss_before_kib: rss_before,
                rss_held_kib: rss_held,
                kib_per_conn: if n > 0 {
                    ((rss_held.saturating_sub(rss_before)) as f64 / n as f64 * 10.0).round() / 10.0
                } else {
                    0.0
                },
                server_threads: proc::threads(server.pid()),
                capped: rep
                    .stopped_early
                    .then(|| format!("stopped after {:.0} s", rep.secs)),
                open_per_s: if rep.secs > 0.0 {
                    (n as f64 / rep.secs).round()
                } else {
                    0.0
                },
                ..IdleResult::default()
            };
            row.conns = count;
            row.active_conns = rep.echoed as u64;
            row.errors = (rep.connect_errors + rep.echo_errors) as u64;
            if n == 0 {
                row.failure = Some("no connection could be held".into());
            }
            row.idle = Some(idle);
            drop(held);
        }
        Err(e) => row.failure = Some(e.to_string()),
    }
    if server.exited() {
        row.failure = Some(format!("the server exited{}", server.stderr_tail()));
    }
    server.stop(Duration::from_secs(5));
    row
}

/// One round of an exit cell: start `def` (ours with `--report-times`),
/// hold `count` idle connections (one echo each, as in the idle cells),
/// SIGTERM to its process group, and time the reaping (and, for ours, the
/// `serve_forever returned` and `exiting at` lines) from the signal. The
/// connections stay open until the process is gone.
fn run_exit(s: &Settings, def: &ServerDef, cell: &Cell, count: usize) -> Row {
    let mut row = base_row(def, cell, "exit");
    let ours = matches!(def.kind, Kind::Ours(..));
    let (mut server, addr) = match start_server_with(s, def, false, ours) {
        Ok(x) => x,
        Err(e) => {
            row.failure = Some(e.to_string());
            return row;
        }
    };
    thread::sleep(Duration::from_millis(200));
    let mut cfg = IdleConfig::new(addr, count);
    cfg.echo_size = 64;
    cfg.time_limit = s.idle_limit;
    let held = match loadgen::hold_idle(&cfg) {
        Ok(h) => h,
        Err(e) => {
            row.failure = Some(e.to_string());
            server.stop(Duration::from_secs(5));
            return row;
        }
    };
    // As in the idle cells: let the last connections settle.
    thread::sleep(Duration::from_millis(300));
    let rep = held.report().clone();
    row.errors = (rep.connect_errors + rep.echo_errors) as u64;
    row.active_conns = rep.echoed as u64;
    if server.exited() {
        row.failure = Some(format!(
            "the server exited before the signal{}",
            server.stderr_tail()
        ));
        return row;
    }
    let alive = held.alive();
    let (sent, reaped) = server.signal_and_reap(libc::SIGTERM, EXIT_LIMIT);
    drop(held);
    let ms = |at: u64| ((at.saturating_sub(sent)) as f64 / 1e3).round() / 1e3;
    let line_ms = |prefix: &str| {
        server
            .stderr_text()
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse::<u64>().ok())
            .map(ms)
    };
    let Some((at, status)) = reaped else {
        row.failure = Some(format!(
            "still running {EXIT_LIMIT:?} after SIGTERM (killed){}",
            server.stderr_tail()
        ));
        return row;
    };
    let ended = match (
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(libc::SIGTERM)) => "killed by SIGTERM".to_owned(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    };
    let returned_ms = line_ms("serve_forever returned at monotonic_ns=");
    let exiting_ms = line_ms("exiting at monotonic_ns=");
    if ours && (returned_ms.is_none() || !status.success()) {
        row.failure = Some(format!(
            "no clean stop ({ended}, `serve_forever returned` line {}){}",
            if returned_ms.is_some() {
                "seen"
            } else {
                "missing"
            },
            server.stderr_tail()
        ));
    }
    row.conns = count;
    row.exit = Some(report::ExitResult {
        requested: count,
        held: alive,
        rounds: 1,
        exit_ms: ms(at),
        returned_ms,
        exiting_ms,
        exit_ms_rounds: vec![ms(at)],
        returned_ms_rounds: returned_ms.into_iter().collect(),
        exiting_ms_rounds: exiting_ms.into_iter().collect(),
        open_secs_rounds: vec![rep.secs],
        ended,
    });
    if alive == 0 && row.failure.is_none() {
        row.failure = Some("no connection could be held".into());
    }
    row
}

fn run_shutdown(s: &Settings, def: &ServerDef, cell: &Cell, busy: usize) -> Row {
    let mut row = base_row(def, cell, "shutdown");
    let runs = s.shutdown_runs;
    let limit = Duration::from_secs(30) + Duration::from_secs(2) * runs as u32;
    let result = match def.kind {
        Kind::Ours(strategy, ..) => {
            let args = vec![
                "baseline".to_owned(),
                "shutdown-probe".into(),
                "--strategy".into(),
                strategy.into(),
                "--runs".into(),
                runs.to_string(),
                "--busy".into(),
                busy.to_string(),
            ];
            run_with_deadline(&s.exe.to_string_lossy(), &args, limit).and_then(|out| {
                serde_json::from_str::<ShutdownResult>(out.trim()).map_err(|e| {
                    io::Error::other(format!("the probe printed {:?}: {e}", out.trim()))
                })
            })
        }
        Kind::Py(..) => match &s.python {
            Some((script, _)) => {
                let args = vec![
                    script.to_string_lossy().into_owned(),
                    "shutdown".into(),
                    runs.to_string(),
                    busy.to_string(),
                ];
                run_with_deadline("python3", &args, limit).and_then(|out| {
                    #[derive(serde::Deserialize)]
                    struct Py {
                        samples_ms: Vec<f64>,
                        load_requests: u64,
                    }
                    let p: Py = serde_json::from_str(out.trim()).map_err(|e| {
                        io::Error::other(format!("the script printed {:?}: {e}", out.trim()))
                    })?;
                    Ok(ShutdownResult::from_samples(
                        "ThreadingTCPServer",
                        busy,
                        p.samples_ms,
                        p.load_requests,
                        "in-process: serve_forever on a thread, shutdown() from the main \
                         thread (it blocks until serve_forever returns), busy clients on \
                         threads of the same interpreter",
                    ))
                })
            }
            None => Err(io::Error::other("python3 is not available")),
        },
        _ => Err(io::Error::other("no shutdown probe for this server")),
    };
    match result {
        Ok(r) => {
            row.p50_us = r.median_ms * 1000.0;
            row.p99_us = r.p99_ms * 1000.0;
            row.max_us = r.max_ms * 1000.0;
            if busy > 0 && r.load_requests == 0 {
                row.failure = Some("the busy clients completed no request".into());
            }
            row.shutdown = Some(r);
        }
        Err(e) => row.failure = Some(e.to_string()),
    }
    row
}

/// Runs a command in its own process group; returns its stdout, or an
/// error if it fails or outlives `limit` (then the group is killed).
fn run_with_deadline(program: &str, args: &[String], limit: Duration) -> io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= end {
            // SAFETY: signalling the process group of our own child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => Err(io::Error::other(format!(
            "{program} {}: {st}: {}",
            args.join(" "),
            err.lines().last().unwrap_or("")
        ))),
        None => Err(io::Error::other(format!(
            "{program} {}: still running after {limit:?}",
            args.join(" ")
        ))),
    }
}

/// Why the anchor `program` cannot run from `dir` (`None`: it can).
fn anchor_missing(dir: Option<&Path>, program: &str) -> Option<String> {
    let Some(dir) = dir else {
        return Some(format!(
            "no anchors directory (--anchors DIR or BENCH_ANCHORS) to find `{program}` in"
        ));
    };
    let path = dir.join(program);
    match std::fs::metadata(&path) {
        Ok(m)
            if m.is_file()
                && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0 =>
        {
            None
        }
        Ok(_) => Some(format!("{} is not an executable file", path.display())),
        Err(e) => Some(format!("{} was not found ({e})", path.display())),
    }
}

/// A TCP port on 127.0.0.1 free just now, for a server that must be told
/// its address (the anchors print none).
fn free_port() -> io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| io::Error::new(e.kind(), format!("binding 127.0.0.1:0: {e}")))?;
    l.local_addr()
}

fn find_python() -> Option<(PathBuf, String)> {
    let out = Command::new("python3").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some((PathBuf::from("python3"), v))
}

fn write_script() -> io::Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("bench-compare-{}.py", std::process::id()));
    std::fs::write(&p, PY_SCRIPT)?;
    Ok(p)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

fn machine(s: &Settings) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let cores = cores();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1_048_576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let mut m = vec![
        (
            "CPU".to_owned(),
            format!("{model}, {cores} cores available"),
        ),
        ("memory".into(), mem),
        ("kernel".into(), format!("Linux {kernel}")),
        (
            "build".into(),
            if cfg!(debug_assertions) {
                "debug (not representative)".into()
            } else {
                "release".into()
            },
        ),
    ];
    if let Some((_, v)) = &s.python {
        m.push(("Python".into(), v.clone()));
    }
    m
}

/// Cores this process may run on.
fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether the kernel says it runs under a hypervisor (the `hypervisor`
/// CPU flag in /proc/cpuinfo).
fn virtual_machine() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
    })
}

fn standard_notes(s: &Settings) -> Vec<String> {
    let mut n = vec![
        "Our echo server (`bench baseline echo`) is a socketserver `Server` with the \
         strategy under test and a one-line handler (`req.echo()` for streams, \
         `req.reply(&data)` for datagrams); it logs nothing, like the baselines. UDP cells \
         start it with only a UDP socket, served on the main thread."
            .to_owned(),
        format!(
            "`synchronous` and `py-sync` serve one connection at a time: with 50 or 500 \
             long-lived connections only the first is served (active 1/50) and the others \
             wait in the listen backlog. `pool` serves at most its {} workers' connections \
             at once; `forking` and `py-forking` at most 40 children (max_children). Their \
             req/s in the 50 and 500 cells is what those few connections achieve.",
            pool_workers()
        ),
        "Server CPU is read from /proc/PID/stat for every process in the server's process \
         group (utime + stime + cutime + cstime) at the start and the end of the measured \
         window. The load generator's own CPU is `loadgen_cpu` in the JSON."
            .to_owned(),
        "Errors count wrong echoes, resets and failed connects over the whole run; UDP \
         datagrams not answered within 500 ms are counted as lost, not as errors."
            .to_owned(),
        "Shutdown under `synchronous` returns once the request running inline is done; in \
         the busy cell a request is a whole connection of 10 round trips, so its latency is \
         that request's remaining time. `forking` is probed from a single-threaded process \
         whose shutdown() comes from another process (as with a signal), so the server \
         loop notices it at its next poll(2), at most 1 ms of requests later."
            .to_owned(),
        format!(
            "With 1 connection the client and the server take turns, and each waits idle for \
             the other: on {} waking an idle core costs tens of microseconds, so that cell \
             measures wake-up latency more than any server (all servers land within noise of \
             each other).",
            if virtual_machine() {
                "this virtual machine (/proc/cpuinfo has the hypervisor flag)"
            } else {
                "a machine like this one"
            }
        ),
    ];
    if s.tls.is_some() {
        n.push(
            "TLS cells: every server gets the same rustls 0.23 `ServerConfig` \
             (`socketserver::tls::server_config`: ring provider, TLS 1.2 and 1.3, a P-256 \
             certificate signed by a throwaway CA made with `openssl` at the start of the run, \
             rustls' default in-memory session cache and TLS 1.3 tickets); tokio-rustls drives \
             it on tokio, ours through `Builder::tls`. The load generator's rustls client \
             (ring) trusts that CA, verifies the certificate for `localhost`, negotiates TLS \
             1.3 and never resumes a session, so `tls-handshake-c8` is one full handshake \
             (X25519 key exchange, ECDSA P-256 signature) per connection, closed with `close_notify`. The \
             client's handshake work runs on the same 2 cores as the server."
                .into(),
        );
    }
    if s.python.is_some() {
        n.push(
            "Python servers use socketserver's defaults (listen backlog 5, max_children 40) \
             with TCP_NODELAY on (`disable_nagle_algorithm = True`) like every other server \
             here, and `daemon_threads = True`; the handler echoes with \
             `recv(65536)`/`sendall`."
                .into(),
        );
    }
    n
}
