//! What an idle connection costs a `Green` server in memory mappings and
//! resident memory: its coroutine stack comes out of a slab shared by 64
//! stacks, with guards that do not split the slab into mappings of their
//! own where the kernel can install guard regions (`MADV_GUARD_INSTALL`,
//! Linux 6.13), so that `vm.max_map_count` does not cap the connections.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

use socketserver::{Green, Server, StreamRequest};
use socketserver_tests::*;

/// Raises the soft limit on open files to the hard one; returns it.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above; raising the soft limit up to the hard one is allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps")
        .lines()
        .count()
}

fn rss_kib() -> usize {
    status_kib("VmRSS:")
}

/// A `/proc/self/status` figure in KiB (`VmRSS:`, `VmPTE:`).
fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a figure of /proc/self/status")
}

/// Whether this kernel installs guard regions with `madvise` (Linux 6.13).
fn kernel_has_guard_regions() -> bool {
    const MADV_GUARD_INSTALL: libc::c_int = 102;
    // SAFETY: a fresh private anonymous page of our own, unmapped after.
    unsafe {
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let ok = libc::madvise(page, 4096, MADV_GUARD_INSTALL) == 0;
        libc::munmap(page, 4096);
        ok
    }
}

fn ask(c: &mut TcpStream) {
    c.write_all(b"hi\n").unwrap();
    let mut reply = String::new();
    BufReader::new(c).read_line(&mut reply).unwrap();
    assert_eq!(reply, "hi\n");
}

#[test]
fn idle_connections_cost_few_mappings_and_little_memory() {
    // Two descriptors per connection (client and server), 50 warm-up
    // connections, and some spare.
    let wanted = 10_000;
    let n = wanted.min((raise_fd_limit().saturating_sub(500) / 2).saturating_sub(50));
    assert!(
        n >= 1_000,
        "too few descriptors for this test: {n} connections"
    );
    let server = Server::builder()
        .strategy(Green::new().threads(2))
        .tcp("127.0.0.1:0", |req: &mut StreamRequest| {
            req.echo().map(drop)
        })
        .unwrap();
    let running = Running::start(server);
    // Warm up: the workers, their first slabs, the allocator's arenas.
    let mut warm: Vec<TcpStream> = (0..50).map(|_| tcp_client(&running.address)).collect();
    for c in &mut warm {
        ask(c);
    }
    let (maps_before, rss_before) = (mappings(), rss_kib());
    let pte_before = status_kib("VmPTE:");
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = tcp_client(&running.address);
        ask(&mut c); // its coroutine has run and waits for the next line
        clients.push(c);
    }
    let (maps_after, rss_after) = (mappings(), rss_kib());
    let pte_after = status_kib("VmPTE:");
    let per_conn_maps = maps_after.saturating_sub(maps_before) as f64 / n as f64;
    let per_conn_rss = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    let guards = kernel_has_guard_regions();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "kernel {}; page tables (VmPTE, not in RSS) {pte_before} -> {pte_after} KiB",
        kernel.trim()
    );
    println!(
        "{n} idle connections opened in {:?}: /proc/self/maps {maps_before} -> {maps_after} \
         ({per_conn_maps:.4} per connection), VmRSS {rss_before} -> {rss_after} KiB \
         ({per_conn_rss:.2} KiB per connection, clients' side included); guard regions by \
         madvise: {guards}",
        started.elapsed()
    );
    if guards {
        assert!(
            per_conn_maps <= 0.05,
            "{per_conn_maps:.4} mappings per idle connection"
        );
    } else {
        // mprotect'd guards split a slab: about two mappings per stack.
        assert!(
            per_conn_maps <= 2.1,
            "{per_conn_maps:.4} mappings per idle connection"
        );
    }
    // A release build's idle coroutine touches one or two stack pages:
    // 4.9 KiB per connection (`bench --only '^green/idle-10k$'`). A debug
    // build's frames are larger, and this count includes the clients.
    let rss_limit = if cfg!(debug_assertions) { 16.0 } else { 8.0 };
    assert!(
        per_conn_rss <= rss_limit,
        "{per_conn_rss:.2} KiB of resident memory per idle connection"
    );
    drop(clients);
    drop(warm);
    running.stop();
}
