//! `Green`'s stacks hold what a thread's hold: 2 MiB by default, so that a
//! handler that runs under `Threading` runs under `Green` too (deep
//! recursion, deeply nested JSON); a deep request's pages go back to the
//! system when its stack is reused, not held for good.

use std::io::{BufRead, BufReader, Write};

use socketserver::{framing, Green, Server, StreamRequest};
use socketserver_tests::*;

/// Recurses (frames of 1 KiB and more) until `kib` KiB of stack lie below
/// `top`, the address of a local of the first call; returns the depth.
#[inline(never)]
fn deep(kib: usize, top: usize) -> u64 {
    let frame = std::hint::black_box([0u8; 1024]);
    let here = std::ptr::from_ref(&frame) as usize;
    if top.saturating_sub(here) >= kib * 1024 {
        return 1;
    }
    deep(kib, top) + 1 + u64::from(frame[kib % 1024])
}

/// Uses `kib` KiB of stack; returns how many frames that took.
fn use_stack(kib: usize) -> u64 {
    let top = std::hint::black_box(0u8);
    deep(kib, std::ptr::from_ref(&top) as usize)
}

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_handler_recursing_through_one_and_a_half_mib_answers_under_default_green() {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let mut line = String::new();
            while req.read_line(&mut line)? > 0 {
                let kib: usize = line.trim().parse().unwrap_or(0);
                writeln!(req, "{}", use_stack(kib))?;
                line.clear();
            }
            Ok(())
        })
        .unwrap();
    let running = Running::start(server);
    // Warm up (the worker, its first slab), then note the memory.
    let mut c = tcp_client(&running.address);
    writeln!(c, "1").unwrap();
    let mut reply = String::new();
    BufReader::new(&mut c).read_line(&mut reply).unwrap();
    drop(c);
    let before = rss_kib();
    for _ in 0..3 {
        let mut c = tcp_client(&running.address);
        writeln!(c, "1536").unwrap();
        let mut reply = String::new();
        BufReader::new(&mut c).read_line(&mut reply).unwrap();
        let frames: u64 = reply.trim().parse().expect("an answer");
        assert!(frames > 1, "{frames} frames");
        drop(c);
        // Its stack goes back when the request ends: the pages below its
        // top 32 KiB go back to the system.
        wait_until(DEADLINE, "the deep request's pages are given back", || {
            rss_kib() < before + 1024
        });
    }
    running.stop();
}

#[test]
fn json_nested_128_deep_is_parsed_or_refused_under_green() {
    let server = Server::builder()
        .strategy(Green::new().threads(1))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            let parsed = framing::read_json::<_, serde_json::Value>(req);
            let answer = match parsed {
                Ok(Some(_)) => "parsed".to_owned(),
                Ok(None) => "nothing".to_owned(),
                Err(e) => format!("refused: {e}"),
            };
            writeln!(req, "{answer}")
        })
        .unwrap();
    let running = Running::start(server);
    for depth in [127, 128, 4096] {
        let json = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let mut c = tcp_client(&running.address);
        framing::write_frame(&mut c, json.as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(&mut c).read_line(&mut reply).unwrap();
        assert!(
            reply == "parsed\n" || reply.starts_with("refused: "),
            "depth {depth}: {reply:?}"
        );
    }
    running.stop();
}
