//! `PreFork` recycling children (`max_requests`) under load, with
//! `Threading` inside each child (`prefork_server --threading`, a process
//! of its own): a retiring child stops accepting and serves what it
//! accepted, so no request is lost however often children are replaced.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socketserver_tests::*;

/// How long the clients run.
const LOAD: Duration = Duration::from_secs(3);
const CLIENTS: usize = 8;
/// A client's pause between connecting and sending: a fresh connection
/// waits for its first message meanwhile, as a real client's does.
const THINK: Duration = Duration::from_millis(2);

/// Connect, a pause, one line out, the same line back, close.
fn one_request(addr: SocketAddr, n: u64, think: Duration) -> std::io::Result<()> {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let line = format!("request {n}\n");
    thread::sleep(think);
    (&stream).write_all(line.as_bytes())?;
    let mut back = String::new();
    reader.read_line(&mut back)?;
    if back != line {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("sent {line:?}, got {back:?}"),
        ));
    }
    Ok(())
}

fn recycling_under_load_loses_nothing(args: &[&str]) {
    let mut all = vec!["127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_prefork_server"), &all);
    let addr = server.inet();
    server.wait_children("start", |n| n >= 2);
    let first_children = server.live_children();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (stop, ok, errors) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&errors));
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match one_request(addr, n, THINK) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors
                            .lock()
                            .unwrap()
                            .push(format!("client {id}, request {n}: {e}")),
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < LOAD {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let served = ok.load(Ordering::Relaxed);
    let errors = errors.lock().unwrap().clone();
    let recycled = first_children
        .iter()
        .filter(|p| !server.live_children().contains(p))
        .count();
    eprintln!(
        "{args:?}: {served} requests served in {LOAD:?}, {} lost, {recycled} of the first \
         children recycled",
        errors.len()
    );
    assert!(
        recycled > 0,
        "no child was recycled: the test shows nothing"
    );
    assert!(
        errors.is_empty(),
        "{} of {} requests lost: {:?}; stderr: {}",
        errors.len(),
        served + errors.len() as u64,
        &errors[..errors.len().min(5)],
        server.stderr()
    );
    let (status, _) = server.terminate(DEADLINE);
    assert!(status.success(), "exit {status}");
    assert!(
        group_members(server.pid()).is_empty(),
        "processes left in the group"
    );
}

#[test]
fn recycling_threading_children_under_load_loses_no_request() {
    recycling_under_load_loses_nothing(&["--threading", "--max-requests=10", "--min=2"]);
}

#[test]
fn recycling_synchronous_children_under_load_loses_no_request() {
    recycling_under_load_loses_nothing(&["--max-requests=10", "--min=2"]);
}

/// One child (`max_servers` 1), `Threading` inside, recycled after every
/// request: each connection after the first reaches a child that is worn
/// out but still accepting (it learns so at its next wake-up), which must
/// serve it before it leaves, though the client takes 50 ms to speak.
#[test]
fn a_worn_out_child_serves_the_connection_it_accepted_last() {
    let mut server = ServerProcess::start(
        env!("CARGO_BIN_EXE_prefork_server"),
        &[
            "127.0.0.1:0",
            "--threading",
            "--min=1",
            "--max=1",
            "--min-spare=0",
            "--max-requests=1",
        ],
    );
    server.wait_children("start", |n| n == 1);
    let addr = server.inet();
    for n in 0..5 {
        one_request(addr, n, Duration::from_millis(50))
            .unwrap_or_else(|e| panic!("request {n} lost: {e}; stderr: {}", server.stderr()));
    }
    let (status, _) = server.terminate(DEADLINE);
    assert!(status.success(), "exit {status}");
    assert!(
        group_members(server.pid()).is_empty(),
        "processes left in the group"
    );
}
