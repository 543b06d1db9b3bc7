//! `PreFork`, run in `prefork_server` (a single-threaded process of its own,
//! in a process group of its own so that `ps` of the group shows every
//! process it left). Every wait has a deadline; a server that outlives its
//! test is killed with its group.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver_tests::*;

/// Starts `prefork_server 127.0.0.1:0 args`.
fn start(args: &[&str]) -> ServerProcess {
    let args: Vec<&str> = ["127.0.0.1:0"].iter().chain(args).copied().collect();
    ServerProcess::start(env!("CARGO_BIN_EXE_prefork_server"), &args)
}

/// One line out, one line back, on `stream`.
fn ask(stream: &mut BufReader<TcpStream>, line: &str) -> std::io::Result<String> {
    stream.get_mut().write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    stream.read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(reply.trim_end().to_owned())
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    BufReader::new(stream)
}

/// Samples the server's live and zombie children every 5 ms until stopped:
/// (fewest live, most live) seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(usize, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut lo, mut hi) = (usize::MAX, 0);
            while !flag.load(Ordering::SeqCst) {
                let live = children_of(pid).iter().filter(|&&(_, s)| s != 'Z').count();
                lo = lo.min(live);
                hi = hi.max(live);
                thread::sleep(Duration::from_millis(5));
            }
            (lo, hi)
        });
        Sampler { stop, thread }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn children_stay_between_min_and_max_as_load_comes_and_goes() {
    let server = start(&["--min=3", "--max=8", "--min-spare=1", "--max-spare=2"]);
    server.wait_children("start", |n| n == 3);
    let sampler = Sampler::start(server.pid());
    // 12 connections held open: each holds a child; 8 children at most.
    let mut clients: Vec<_> = (0..12).map(|_| connect(server.inet())).collect();
    for c in &mut clients {
        c.get_mut().write_all(b"hi\n").unwrap();
    }
    server.wait_children("grow to max_servers", |n| n == 8);
    // The 8 served first answer; the other 4 wait in the backlog.
    let mut pending = clients;
    let mut answered = 0;
    let start = Instant::now();
    while !pending.is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} clients never answered",
            pending.len()
        );
        let mut still = Vec::new();
        for mut c in pending {
            c.get_ref()
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut line = String::new();
            match c.read_line(&mut line) {
                Ok(n) if n > 0 => {
                    assert_eq!(line, "hi\n");
                    answered += 1;
                    // Leaving frees the child for a queued client.
                }
                _ => still.push(c),
            }
        }
        pending = still;
    }
    assert_eq!(answered, 12);
    // All idle now: 8 idle > max_spare 2, retired down to min_servers.
    server.wait_children("shrink back to min_servers", |n| n == 3);
    let (lo, hi) = sampler.finish();
    assert!(lo >= 3, "fewer than min_servers children: {lo}");
    assert!(hi <= 8, "more than max_servers children: {hi}");
    wait_until(PROMPT, "retired children reaped", || {
        server.children().1 == 0
    });
}

#[test]
fn ten_thousand_requests_with_crashing_children_never_exceed_max_servers() {
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 8;
    let server = start(&["--min=4", "--max=10", "--max-requests=0"]);
    server.wait_children("start", |n| n == 4);
    let sampler = Sampler::start(server.pid());
    let next = Arc::new(AtomicUsize::new(0));
    let failed_normal = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, failed) = (Arc::clone(&next), Arc::clone(&failed_normal));
            let addr = server.inet();
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return;
                }
                let mut c = connect(addr);
                if i % 1000 == 999 {
                    // Crashes the child serving it: no reply.
                    assert!(ask(&mut c, "abort").is_err());
                } else if ask(&mut c, &format!("req {i}")).ok().as_deref()
                    != Some(&*format!("req {i}"))
                {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    within(Duration::from_secs(120), "10,000 requests", move || {
        for t in threads {
            t.join().unwrap();
        }
    });
    let (_, hi) = sampler.finish();
    eprintln!("10,000 requests, 10 crashes: at most {hi} children");
    assert_eq!(
        failed_normal.load(Ordering::SeqCst),
        0,
        "normal requests failed"
    );
    assert!(hi <= 10, "max_servers exceeded: {hi} children");
    wait_until(PROMPT, "crashes logged", || {
        server
            .stderr()
            .matches("killed by signal 6 (SIGABRT)")
            .count()
            == 10
    });
    server.wait_children("replaced", |n| n >= 4);
    wait_until(PROMPT, "no zombies", || server.children().1 == 0);
}

fn sigterm_drains_and_leaves_no_process(to_group: bool) {
    let mut server = start(&["--min=3", "--max=6"]);
    server.wait_children("start", |n| n == 3);
    let mut idle: Vec<_> = (0..2).map(|_| connect(server.inet())).collect();
    for c in &mut idle {
        assert_eq!(ask(c, "hello").unwrap(), "hello");
    }
    let mut busy = connect(server.inet());
    busy.get_mut().write_all(b"sleep 300\n").unwrap();
    thread::sleep(Duration::from_millis(50));
    let pgid = server.pid();
    if to_group {
        server.signal_group(libc::SIGTERM);
    } else {
        server.signal(libc::SIGTERM);
    }
    let status = server.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        server.stderr()
    );
    // The busy request finished its message; the idle ones were closed.
    let mut line = String::new();
    busy.read_line(&mut line).unwrap();
    assert_eq!(line, "sleep 300\n");
    for c in &mut idle {
        let mut rest = String::new();
        assert_eq!(c.read_line(&mut rest).unwrap(), 0, "idle client not closed");
    }
    let left = group_members(pgid);
    assert!(left.is_empty(), "processes left in the group: {left:?}");
    assert!(
        !server.stderr().contains("killed by signal"),
        "{}",
        server.stderr()
    );
}

#[test]
fn sigterm_drains_children_exits_zero_and_leaves_no_process() {
    sigterm_drains_and_leaves_no_process(false);
}

#[test]
fn sigterm_to_the_process_group_drains_children_exits_zero_and_leaves_no_process() {
    sigterm_drains_and_leaves_no_process(true);
}

#[test]
fn a_killed_parent_leaves_no_child_serving() {
    let mut server = start(&["--min=3"]);
    server.wait_children("start", |n| n == 3);
    let pgid = server.pid();
    server.signal(libc::SIGKILL);
    let _ = server.wait_exit(DEADLINE);
    wait_until(DEADLINE, "children gone with their parent", || {
        group_members(pgid).is_empty()
    });
}

#[test]
fn max_requests_recycles_children() {
    let server = start(&["--min=2", "--max=4", "--min-spare=1", "--max-requests=5"]);
    server.wait_children("start", |n| n == 2);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        let mut c = connect(server.inet());
        let pid = ask(&mut c, "pid").unwrap();
        *seen.entry(pid).or_default() += 1;
    }
    assert!(
        seen.values().all(|&n| n <= 5),
        "a child served more than max_requests: {seen:?}"
    );
    assert!(seen.len() >= 8, "children not recycled: {seen:?}");
    wait_until(PROMPT, "no zombies", || server.children().1 == 0);
}

#[test]
fn a_handler_that_always_crashes_does_not_fork_bomb() {
    let server = start(&["--min=2", "--max=20", "--forks-per-second=20"]);
    server.wait_children("start", |n| n == 2);
    let stop = Arc::new(AtomicBool::new(false));
    let storm = Duration::from_secs(2);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let addr = server.inet();
            thread::spawn(move || {
                // One request at a time, each waiting for its child to
                // crash: none is left queued when the storm stops.
                while !stop.load(Ordering::SeqCst) {
                    let mut c = connect(addr);
                    assert!(ask(&mut c, "abort").is_err());
                }
            })
        })
        .collect();
    thread::sleep(storm);
    stop.store(true, Ordering::SeqCst);
    let crashes = server.stderr().matches("(SIGABRT)").count();
    within(
        Duration::from_secs(30),
        "the last crashing requests",
        move || {
            for t in threads {
                t.join().unwrap();
            }
        },
    );
    eprintln!("{crashes} children crashed (and were forked) in {storm:?} of crashes");
    // The burst (10) plus 20 per second, less once the rate backs off.
    assert!(
        crashes <= 10 + 20 * 2 + 5,
        "{crashes} children crashed in {storm:?}"
    );
    assert!(
        server.stderr().contains("children keep crashing"),
        "{}",
        server.stderr()
    );
    // The server recovers: a normal request is served.
    let mut c = connect(server.inet());
    assert_eq!(ask(&mut c, "still there").unwrap(), "still there");
}

#[test]
fn threading_inside_a_child_serves_concurrent_connections() {
    let server = start(&["--min=1", "--max=1", "--min-spare=0", "--threading"]);
    server.wait_children("start", |n| n == 1);
    let mut clients: Vec<_> = (0..5).map(|_| connect(server.inet())).collect();
    let pids: Vec<String> = clients.iter_mut().map(|c| ask(c, "pid").unwrap()).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
}

#[test]
fn green_inside_a_child_serves_concurrent_connections_and_drains_them_on_sigterm() {
    // One worker thread in one child: a connection waiting for its next
    // line must not hold the worker (the others would go unanswered).
    let mut server = start(&["--min=1", "--max=1", "--min-spare=0", "--green"]);
    server.wait_children("start", |n| n == 1);
    let mut clients: Vec<_> = (0..5).map(|_| connect(server.inet())).collect();
    let pids: Vec<String> = clients.iter_mut().map(|c| ask(c, "pid").unwrap()).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
    for c in &mut clients {
        assert_eq!(ask(c, "again").unwrap(), "again");
    }
    let pgid = server.pid();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        server.stderr()
    );
    for c in &mut clients {
        let mut rest = String::new();
        assert_eq!(c.read_line(&mut rest).unwrap(), 0, "idle client not closed");
    }
    let left = group_members(pgid);
    assert!(left.is_empty(), "processes left in the group: {left:?}");
}
