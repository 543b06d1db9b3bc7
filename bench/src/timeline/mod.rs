//! `bench timeline`: a picture of each concurrency model.
//!
//! One small scenario runs under each strategy: 8 clients connect at once
//! and each sends 5 requests, one after the other, to a handler that
//! answers after 20 ms (`green::sleep`, a plain sleep outside `Green`). The
//! server runs as a child process (`bench baseline timeline --strategy
//! ID`, a single-threaded process when it forks); for every request it
//! answers with when it accepted the connection (`verify_request`), when it
//! started and ended the request, and what ran it: its pid and its thread
//! (a green worker's thread name, or a thread id). The clients note when
//! they sent each request. All times are `CLOCK_MONOTONIC`, the same clock
//! in every process.
//!
//! [`layout`](mod@layout) turns the records into lanes and bars, [`svg`] draws them:
//! one SVG per strategy and `all.svg` with every strategy on one time
//! axis, plus `timeline.json` with the records. A run takes a few seconds;
//! the shapes (how many lanes, which requests wait, which overlap) are the
//! same from run to run, the milliseconds move a little.

pub mod layout;
pub mod svg;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use socketserver::{
    green, Address, Green, Pool, PreFork, Server, Strategy, StreamHandler, StreamRequest,
    Synchronous, Threading,
};

use crate::clock::mono_ns;
use crate::proc::ServerChild;
use layout::{layout, Record};

/// Clients connecting at once.
pub const CLIENTS: usize = 8;
/// Requests per client, one after the other on its connection.
pub const REQUESTS: usize = 5;
/// How long the handler takes per request.
pub const SERVICE: Duration = Duration::from_millis(20);
/// Longest wait for a connection or an answer.
const IO_LIMIT: Duration = Duration::from_secs(10);

/// The scenarios: id (file name and `--strategy` of the server), title,
/// and the guide chapter that shows the picture.
pub const SCENARIOS: [(&str, &str, &str); 7] = [
    (
        "synchronous",
        "Synchronous: one request at a time, in the server loop",
        "synchronous.md",
    ),
    (
        "threading",
        "Threading: a thread per connection",
        "threading.md",
    ),
    (
        "pool",
        "Pool(4): four worker threads fed by a queue",
        "pool.md",
    ),
    (
        "forking",
        "Forking: a child process per connection",
        "forking.md",
    ),
    (
        "prefork",
        "PreFork: four long-lived children that accept themselves",
        "prefork.md",
    ),
    (
        "green",
        "Green, 2 workers: a coroutine per connection on two threads",
        "green.md",
    ),
    (
        "prefork-green",
        "PreFork with Green inside: 2 children, 2 green workers each",
        "prefork.md",
    ),
];

/// Options of `bench timeline`.
#[derive(Debug, clap::Args)]
pub struct TimelineArgs {
    /// Write the SVGs and timeline.json into DIR.
    #[arg(long, value_name = "DIR", default_value = "docs/pictures")]
    pub out: PathBuf,
}

/// The strategy of scenario `id`.
pub fn strategy(id: &str) -> io::Result<Box<dyn Strategy>> {
    Ok(match id {
        "synchronous" => Box::new(Synchronous),
        "threading" => Box::new(Threading::new()),
        "pool" => Box::new(Pool::new(4)),
        "forking" => Box::new(socketserver::Forking::new()),
        // As many children as the picture has lanes, from the start, so the
        // shape does not depend on when the pool would have grown.
        "prefork" => Box::new(
            PreFork::new()
                .min_servers(4)
                .max_servers(4)
                .min_spare_servers(0),
        ),
        "green" => Box::new(Green::new().threads(2)),
        "prefork-green" => Box::new(
            PreFork::new()
                .inner(Green::new().threads(2))
                .min_servers(2)
                .max_servers(2)
                .min_spare_servers(0),
        ),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no timeline scenario {other:?}"),
            ))
        }
    })
}

/// The handler of the timeline server: notes when each connection was
/// accepted, and answers each line after [`SERVICE`] with
/// `ACCEPT START END PID|THREAD` (microseconds of `CLOCK_MONOTONIC`).
#[derive(Default)]
struct Recorder {
    accepted: Mutex<HashMap<String, u64>>,
}

fn now_us() -> u64 {
    mono_ns() / 1000
}

/// What runs this code: `PID|green N` on a green worker, else
/// `PID|ThreadId(N)`.
fn worker_id() -> String {
    let t = thread::current();
    let thread = match t.name() {
        Some(name) if name.starts_with("green") => name.to_owned(),
        _ => format!("{:?}", t.id()),
    };
    format!("{}|{thread}", std::process::id())
}

impl StreamHandler for Recorder {
    fn verify_request(&self, peer: &Address) -> bool {
        // Under Forking this runs in the parent, before the fork: the child
        // finds the entry in its copy of the map.
        let mut map = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(peer.to_string(), now_us());
        true
    }

    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let accept = {
            let mut map = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&req.peer_addr().to_string()).unwrap_or(0)
        };
        let worker = worker_id();
        let mut line = String::new();
        loop {
            line.clear();
            if req.rfile().read_line(&mut line)? == 0 {
                return Ok(());
            }
            let start = now_us();
            green::sleep(SERVICE);
            let end = now_us();
            let w = req.wfile();
            writeln!(w, "{accept} {start} {end} {worker}")?;
            w.flush()?;
        }
    }
}

/// `bench baseline timeline --strategy ID`: serves the timeline scenario's
/// handler on 127.0.0.1 under scenario `id`'s strategy, on this thread,
/// until killed.
pub fn serve(id: &str) -> io::Result<()> {
    let server = Server::builder()
        .strategy(strategy(id)?)
        .tcp("127.0.0.1:0", Recorder::default())?;
    let addr = server
        .local_addr()
        .ok_or_else(|| io::Error::other("no local address"))?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "listening on tcp://{addr}")?;
        out.flush()?;
    }
    server.serve_forever()
}

/// Connects to `addr` with the deadlines every client here has.
fn connect(addr: SocketAddr) -> io::Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect_timeout(&addr, IO_LIMIT)
        .map_err(|e| io::Error::new(e.kind(), format!("connect {addr}: {e}")))?;
    s.set_read_timeout(Some(IO_LIMIT))?;
    s.set_write_timeout(Some(IO_LIMIT))?;
    s.set_nodelay(true)?;
    let r = BufReader::new(s.try_clone()?);
    Ok((s, r))
}

/// Sends one request and reads its answer: `(accept, start, end, worker)`.
fn exchange(
    s: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
) -> io::Result<(u64, u64, u64, String)> {
    s.write_all(b"request\n")?;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    let mut f = line.trim_end().splitn(4, ' ');
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad answer {line:?}"));
    let mut num = || -> io::Result<u64> { f.next().and_then(|x| x.parse().ok()).ok_or_else(bad) };
    let (a, b, c) = (num()?, num()?, num()?);
    let worker = f.next().ok_or_else(bad)?.to_owned();
    Ok((a, b, c, worker))
}

/// Runs the scenario against a server at `addr`: a first request alone
/// (not recorded; every strategy has started what it starts by then), then
/// [`CLIENTS`] clients released together, [`REQUESTS`] each. Times are
/// relative to the release.
pub fn drive(addr: SocketAddr) -> io::Result<Vec<Record>> {
    {
        let (mut s, mut r) = connect(addr)?;
        exchange(&mut s, &mut r)?;
    }
    let go = Arc::new(Barrier::new(CLIENTS + 1));
    // Each client's records, in absolute microseconds until all are back.
    let handles: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let go = Arc::clone(&go);
            thread::spawn(move || -> io::Result<Vec<Record>> {
                go.wait();
                let (mut s, mut r) = connect(addr)?;
                let mut out = Vec::with_capacity(REQUESTS);
                for seq in 0..REQUESTS {
                    let sent_us = now_us();
                    let (accept_us, start_us, end_us, worker) = exchange(&mut s, &mut r)?;
                    out.push(Record {
                        client,
                        seq,
                        sent_us,
                        accept_us,
                        start_us,
                        end_us,
                        worker,
                    });
                }
                Ok(out)
            })
        })
        .collect();
    let t0 = now_us();
    go.wait();
    let mut records = Vec::with_capacity(CLIENTS * REQUESTS);
    for h in handles {
        let rows = h
            .join()
            .map_err(|_| io::Error::other("a timeline client panicked"))??;
        records.extend(rows.into_iter().map(|r| Record {
            sent_us: r.sent_us.saturating_sub(t0),
            accept_us: r.accept_us.saturating_sub(t0),
            start_us: r.start_us.saturating_sub(t0),
            end_us: r.end_us.saturating_sub(t0),
            ..r
        }));
    }
    records.sort_by_key(|r| (r.client, r.seq));
    Ok(records)
}

/// The caption of scenario pictures.
pub fn caption() -> String {
    format!(
        "{CLIENTS} clients at once, {REQUESTS} requests each, {} ms per request",
        SERVICE.as_millis()
    )
}

/// `bench timeline`: every scenario, its SVG, `all.svg` and
/// `timeline.json` in `args.out`.
pub fn run(args: &TimelineArgs) -> io::Result<()> {
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", args.out.display())))?;
    let mut all: Vec<(&str, &str, Vec<Record>)> = Vec::new();
    for (id, title, _) in SCENARIOS {
        eprintln!("timeline: {id}");
        let argv: Vec<String> = ["baseline", "timeline", "--strategy", id]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut server = ServerChild::start(&exe, &argv, &[("RUST_LOG", "error")], 1)?;
        let addr = server
            .addr("tcp")
            .ok_or_else(|| io::Error::other("the timeline server printed no tcp address"))?;
        let records = drive(addr).map_err(|e| io::Error::new(e.kind(), format!("{id}: {e}")))?;
        server.stop(Duration::from_secs(3));
        all.push((id, title, records));
    }
    write_pictures(&args.out, &all)?;
    let json: Vec<serde_json::Value> = all
        .iter()
        .map(|(id, title, recs)| serde_json::json!({ "id": id, "title": title, "records": recs }))
        .collect();
    let path = args.out.join("timeline.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    eprintln!("timeline: wrote {}", args.out.display());
    Ok(())
}

/// Writes `ID.svg` for each scenario and `all.svg` with all of them on
/// one time axis.
pub fn write_pictures(dir: &Path, all: &[(&str, &str, Vec<Record>)]) -> io::Result<()> {
    let layouts: Vec<_> = all.iter().map(|(_, _, r)| layout(r)).collect();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
    };
    for ((id, title, _), l) in all.iter().zip(&layouts) {
        let panel = svg::Panel {
            title: (*title).to_owned(),
            layout: l,
        };
        write(
            &format!("{id}.svg"),
            svg::render(&caption(), &[panel], None),
        )?;
    }
    let panels: Vec<svg::Panel<'_>> = all
        .iter()
        .zip(&layouts)
        .map(|((_, title, _), l)| svg::Panel {
            title: (*title).to_owned(),
            layout: l,
        })
        .collect();
    write(
        "all.svg",
        svg::render(
            &format!("Every strategy on one time axis: {}", caption()),
            &panels,
            None,
        ),
    )
}
