//! Peers that vanish, between separate hosts (network namespaces, see
//! `socketserver_tests::netns`): a link is cut (its end inside the peer's
//! namespace goes down, so no FIN and no reset ever arrives) and the peer's
//! process killed. With the default keepalive (15 s idle, 3 probes 5 s
//! apart) and user timeout, the server notices and frees what the
//! connection held, under every strategy; behind `HAProxy`, a cut backend is
//! taken out, clients see no failure but the requests it had in flight,
//! it rejoins when its link returns, and its ghost connections are
//! reclaimed.
//!
//! These tests wait up to 45 s each (mostly in parallel), so they are
//! `#[ignore]`d in the ordinary run; `.ci/run` runs them in a step of their
//! own (`cargo test -p socketserver-tests --test partition -- --ignored
//! --test-threads 4`). Each skips, saying why, where namespaces cannot be
//! made (not root) or `haproxy` is missing. Each prints its figures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver_tests::netns::{host_or_skip, Host, Process};
use socketserver_tests::{LogCapture, ServerProcess, TempDir};

/// The bound on noticing a vanished peer with the default keepalive
/// (about 30 s after its last packet).
const NOTICE_BOUND: Duration = Duration::from_secs(45);

/// A `peer_server` in this (the root) namespace, listening on `host`'s
/// side of its link.
fn server_facing(host: &Host, args: &[&str]) -> ServerProcess {
    let listen = format!("{}:0", host.here());
    let mut all = vec![listen.as_str()];
    all.extend_from_slice(args);
    ServerProcess::start(env!("CARGO_BIN_EXE_peer_server"), &all)
}

/// A `peer_client` inside `host`, connected to `server`.
fn client_in(host: &Host, server: SocketAddr, args: &[&str]) -> Process {
    let mut cmd = host.command(env!("CARGO_BIN_EXE_peer_client"));
    cmd.arg(server.to_string()).args(args);
    Process::start(cmd)
}

/// The `key=value` fields of a `peer_server` `START`/`END` line.
fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// The `END` line `server` printed for a connection from `peer`, if any.
fn end_of(server: &ServerProcess, peer: &str) -> Option<String> {
    server
        .stderr()
        .lines()
        .find(|l| l.starts_with("END ") && fields(l).get("peer") == Some(&peer))
        .map(str::to_owned)
}

/// Waits (at most `limit` after `since`) for the `END` line of `peer`;
/// returns it with the time since `since`.
fn wait_end(
    server: &ServerProcess,
    peer: &str,
    since: Instant,
    limit: Duration,
) -> (String, Duration) {
    loop {
        if let Some(line) = end_of(server, peer) {
            return (line, since.elapsed());
        }
        assert!(
            since.elapsed() < limit,
            "the connection of {peer} still open {limit:?} after its peer vanished; stderr: {}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// TCP connections in this namespace in state `ESTABLISHED` with `peer`
/// (from /proc/net/tcp).
fn established_with(peer: Ipv4Addr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let remote = cols[2].split(':').next().unwrap();
            let ip = u32::from_str_radix(remote, 16).unwrap();
            // The kernel prints the address as a native-endian integer.
            Ipv4Addr::from(ip.to_ne_bytes()) == peer && cols[3] == "01"
        })
        .count()
}

/// Threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after
/// `limit` since `since`. Returns the time since `since`.
fn wait_for(
    what: &str,
    since: Instant,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    loop {
        if cond() {
            return since.elapsed();
        }
        assert!(since.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// What happened to one strategy's vanished idle client.
struct Reclaimed {
    strategy: &'static str,
    /// From the connection's last packet to the handler's end.
    silent: Duration,
    /// From the cut to the handler's end.
    ended: Duration,
    /// From the cut to the resources being free (thread, child process,
    /// kernel socket).
    freed: Duration,
    error: String,
    peer_gone: String,
}

/// A client in its own namespace connects to a server of `strategy` here,
/// says `ping`, then its link is cut and it is killed while idle. Measures
/// how long until the server's handler ended and what it held is free.
fn vanish_while_idle(strategy: &'static str) -> Option<Reclaimed> {
    vanish_while_idle_over(strategy, None)
}

/// [`vanish_while_idle`], the connection speaking TLS with `tls`'s
/// certificate when given.
fn vanish_while_idle_over(
    strategy: &'static str,
    tls: Option<&socketserver_tests::tls::Cert>,
) -> Option<Reclaimed> {
    let host = host_or_skip(&format!("vanish_while_idle({strategy})"))?;
    let mut server_args = vec![format!("--strategy={strategy}")];
    let mut client_args = vec!["say".to_owned(), "ping".to_owned()];
    if let Some(cert) = tls {
        server_args.push(format!("--tls-cert={}", cert.cert.display()));
        server_args.push(format!("--tls-key={}", cert.key.display()));
        client_args.push(format!("--tls-ca={}", cert.ca.display()));
    }
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let server = server_facing(&host, &server_args);
    let mut client = client_in(&host, server.inet(), &client_args);
    let connected = client.wait_line(Duration::from_secs(10), |l| l.starts_with("connected "));
    let peer = connected.trim_start_matches("connected ").to_owned();
    client.wait_line(Duration::from_secs(10), |l| l == "pong");
    // The connection's last packet (keepalive counts its idle time from it).
    let last_heard = Instant::now();
    assert_eq!(established_with(host.there()), 1, "{strategy}");
    let busy_threads = threads_of(server.pid());
    let cut = Instant::now();
    host.cut();
    client.kill();
    let (end, ended) = wait_end(&server, &peer, cut, NOTICE_BOUND);
    let silent = last_heard.elapsed();
    let f = fields(&end);
    let error = f["error"].to_owned();
    assert!(
        error == "TimedOut/110" || error == "HostUnreachable/113",
        "{strategy}: the connection ended with {end}"
    );
    assert!(
        f["peer_gone"].parse::<u64>().unwrap() >= 1,
        "{strategy}: {end}"
    );
    let freed = match strategy {
        // The request's thread exits once idle threads' keep-alive (5 s)
        // has passed.
        "threading" => wait_for("the request's thread exits", cut, NOTICE_BOUND, || {
            threads_of(server.pid()) < busy_threads
        }),
        // The child that served it exits.
        "forking" => wait_for("the request's child exits", cut, NOTICE_BOUND, || {
            server.children().0 == 0
        }),
        // The handler's end is the connection's: its socket is closed,
        // its worker (pool thread, coroutine, prefork child) free.
        _ => ended,
    };
    assert_eq!(established_with(host.there()), 0, "{strategy}");
    // The link returns: the server serves a new client (Synchronous: only
    // now that the vanished one is gone).
    host.restore();
    let mut next = client_in(&host, server.inet(), &client_args);
    next.wait_line(Duration::from_secs(10), |l| l == "pong");
    Some(Reclaimed {
        strategy,
        silent,
        ended,
        freed,
        error,
        peer_gone: f["peer_gone"].to_owned(),
    })
}

#[test]
#[ignore = "waits ~35 s; run by .ci/run's partition step"]
fn an_idle_client_that_vanishes_is_reclaimed_within_45_s_under_every_strategy() {
    let strategies = [
        "synchronous",
        "threading",
        "pool",
        "forking",
        "prefork",
        "green",
    ];
    let runs: Vec<_> = strategies
        .iter()
        .map(|&s| thread::spawn(move || vanish_while_idle(s)))
        .collect();
    let mut table = String::new();
    let mut failed = Vec::new();
    for (run, name) in runs.into_iter().zip(strategies) {
        match run.join() {
            Ok(Some(r)) => {
                let _ = writeln!(
                    table,
                    "{:<12} handler ended {:>5.1} s after the last packet, {:>5.1} s after the cut ({}, peer_gone {}), freed after {:>5.1} s",
                    r.strategy,
                    r.silent.as_secs_f64(),
                    r.ended.as_secs_f64(),
                    r.error,
                    r.peer_gone,
                    r.freed.as_secs_f64()
                );
                assert!(r.ended < NOTICE_BOUND && r.freed < NOTICE_BOUND);
            }
            Ok(None) => return,
            Err(e) => failed.push((name, e)),
        }
    }
    println!("vanished idle client, default keepalive (15 s + 3 x 5 s):\n{table}");
    if let Some((name, e)) = failed.pop() {
        std::panic::resume_unwind(Box::new(format!(
            "under {name}: {:?}",
            e.downcast_ref::<String>()
        )));
    }
}

#[test]
#[ignore = "waits ~35 s; run by .ci/run's partition step"]
fn an_idle_tls_client_that_vanishes_is_reclaimed_and_counted_as_gone() {
    // Keepalive sits below TLS: the socket's ETIMEDOUT reaches the handler
    // through the session's read, is counted and frees the connection.
    let dir = TempDir::new("partition-tls");
    let cert = socketserver_tests::tls::make_cert(&dir, "partition");
    let runs: Vec<_> = ["threading", "green"]
        .into_iter()
        .map(|s| {
            let cert = cert.clone();
            thread::spawn(move || vanish_while_idle_over(s, Some(&cert)))
        })
        .collect();
    for run in runs {
        let Some(r) = run.join().unwrap() else {
            return;
        };
        println!(
            "TLS, {}: handler ended {:.1} s after the cut ({}, peer_gone {})",
            r.strategy,
            r.ended.as_secs_f64(),
            r.error,
            r.peer_gone
        );
        assert!(r.ended < NOTICE_BOUND && r.freed < NOTICE_BOUND);
    }
}

#[test]
#[ignore = "waits ~15 s; run by .ci/run's partition step"]
fn a_client_that_vanishes_during_a_large_reply_is_cut_within_the_user_timeout() {
    let Some(host) = host_or_skip("a_client_that_vanishes_during_a_large_reply") else {
        return;
    };
    // The write timeout stays at its default, 60 s.
    let server = server_facing(&host, &["--strategy=threading", "--user-timeout=10"]);
    let mut client = client_in(&host, server.inet(), &["slow", "1000000000"]);
    let connected = client.wait_line(Duration::from_secs(10), |l| l.starts_with("connected "));
    let peer = connected.trim_start_matches("connected ").to_owned();
    client.wait_line(Duration::from_secs(10), |l| l == "reading");
    thread::sleep(Duration::from_millis(500));
    let cut = Instant::now();
    host.cut();
    client.kill();
    let (end, ended) = wait_end(&server, &peer, cut, Duration::from_secs(45));
    println!(
        "client vanished while a 1 GB reply was written to it: the write failed {:.1} s after \
         the cut (user timeout 10 s, write timeout 60 s): {end}",
        ended.as_secs_f64()
    );
    let f = fields(&end);
    assert!(
        f["error"] == "TimedOut/110" || f["error"] == "HostUnreachable/113",
        "{end}"
    );
    assert!(f["peer_gone"] == "1", "{end}");
    assert!(
        ended < Duration::from_secs(25),
        "after {ended:?}: not the user timeout"
    );
}

/// A chat member on the root side: its lines on a channel.
struct Member {
    stream: TcpStream,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Member {
    fn join(addr: SocketAddr, nick: &str) -> Member {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        writeln!(stream, "{nick}").unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = stream.try_clone().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Member { stream, lines }
    }

    /// Waits for a line starting with `text`.
    fn wait_for(&self, text: &str, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(text) => return,
                Ok(_) => {}
                Err(e) => panic!("no {text:?} within {limit:?}: {e}"),
            }
        }
    }
}

#[test]
#[ignore = "waits ~30 s; run by .ci/run's partition step"]
fn a_chat_member_whose_link_is_cut_leaves_the_room_within_45_s() {
    let Some(host) = host_or_skip("a_chat_member_whose_link_is_cut_leaves_the_room") else {
        return;
    };
    let logs = LogCapture::install();
    let room = demos::chat::Room::new(demos::chat::RoomConfig::default());
    let server = Arc::new(
        socketserver::Server::builder()
            .strategy(socketserver::Threading::new())
            .tcp((host.here(), 0), room)
            .unwrap(),
    );
    let addr = server.server_address().as_inet().unwrap();
    let serving = {
        let server = Arc::clone(&server);
        thread::spawn(move || server.serve_forever())
    };
    let alice = Member::join(addr, "alice");
    alice.wait_for("* welcome alice", Duration::from_secs(10));
    let bob = Member::join(addr, "bob");
    alice.wait_for("* bob joined", Duration::from_secs(10));
    let mut carol = client_in(&host, addr, &["say", "carol"]);
    carol.wait_line(Duration::from_secs(10), |l| {
        l.starts_with("* welcome carol")
    });
    alice.wait_for("* carol joined", Duration::from_secs(10));

    let cut = Instant::now();
    host.cut();
    carol.kill();
    alice.wait_for("* carol left", NOTICE_BOUND);
    let left = cut.elapsed();
    bob.wait_for("* carol left", Duration::from_secs(5));
    // The room goes on.
    writeln!(&alice.stream, "still here").unwrap();
    bob.wait_for("alice: still here", Duration::from_secs(5));
    // Her leave is announced before her request has quite ended.
    wait_for(
        "carol's connection closed",
        cut,
        NOTICE_BOUND + Duration::from_secs(5),
        || server.stats().connections == 2,
    );
    let stats = server.stats();
    println!(
        "chat: carol's link cut, the others saw her leave {:.1} s later; stats {stats:?}",
        left.as_secs_f64()
    );
    assert_eq!(stats.peer_gone, 1);
    // Logged once, at info, by the server (the handler's own report of the
    // error is at debug: a disconnect).
    let line = logs.wait_for(log::Level::Info, &["is gone", "1 vanished peers so far"]);
    assert!(line.contains(&host.there().to_string()), "{line}");
    server.shutdown();
    serving.join().unwrap().unwrap();
}

/// `show stat` on `HAProxy`'s admin socket: one map per row.
fn haproxy_stats(admin: &std::path::Path) -> Option<Vec<HashMap<String, String>>> {
    let mut s = std::os::unix::net::UnixStream::connect(admin).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut csv = String::new();
    s.read_to_string(&mut csv).ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    Some(
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                header
                    .iter()
                    .zip(l.split(','))
                    .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                    .collect()
            })
            .collect(),
    )
}

/// The status (`UP`, `DOWN`, ...) of backend server `name`.
fn status_of(admin: &std::path::Path, name: &str) -> Option<String> {
    haproxy_stats(admin)?
        .into_iter()
        .find(|r| r["pxname"] == "backends" && r["svname"] == name)
        .map(|r| r["status"].clone())
}

/// Whether `haproxy` runs here; prints why the test is skipped if not.
fn haproxy_available(test: &str) -> bool {
    match std::process::Command::new("haproxy")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => true,
        other => {
            eprintln!(
                "skipping {test}: haproxy cannot be run ({other:?}); `apt-get install haproxy` \
                 (.ci/run does)"
            );
            false
        }
    }
}

/// One request through `HAProxy`: `sleep 200`, answered `pong` 200 ms
/// later. Returns the client's port (the backends log it: PROXY v2 names
/// the client).
fn request(frontend: SocketAddr) -> Result<u16, (u16, String)> {
    let mut s = TcpStream::connect_timeout(&frontend, Duration::from_secs(5))
        .map_err(|e| (0, format!("connect: {e}")))?;
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    let fail = |what: &str, e: std::io::Error| (port, format!("{what}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail("set timeout", e))?;
    s.write_all(b"sleep 200\n").map_err(|e| fail("write", e))?;
    let mut reply = String::new();
    BufReader::new(&s)
        .read_line(&mut reply)
        .map_err(|e| fail("read", e))?;
    if reply == "pong\n" {
        Ok(port)
    } else {
        Err((port, format!("reply {reply:?}")))
    }
}

/// One finished request of the load.
struct Done {
    started: Instant,
    result: Result<u16, (u16, String)>,
}

#[test]
#[ignore = "waits ~40 s; run by .ci/run's partition step"]
fn a_backend_cut_off_behind_haproxy_is_taken_out_rejoins_and_its_ghosts_are_reclaimed() {
    let test = "a_backend_cut_off_behind_haproxy";
    if !haproxy_available(test) {
        return;
    }
    let hosts: Vec<Host> = (0..3).map_while(|_| host_or_skip(test)).collect();
    if hosts.len() < 3 {
        return;
    }
    let exe = env!("CARGO_BIN_EXE_peer_server");
    let backends: Vec<ServerProcess> = hosts
        .iter()
        .map(|h| {
            let listen = format!("{}:0", h.there());
            let proxy = format!("--proxy-from={}", h.here());
            let args = h.exec_args(exe, &[&listen, "--strategy=threading", &proxy]);
            ServerProcess::start("ip", &args)
        })
        .collect();
    let dir = TempDir::new("partition-haproxy");
    let admin = dir.join("admin.sock");
    let frontend = SocketAddr::from((
        [127, 0, 0, 1],
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(),
    ));
    let mut cfg = format!(
        "global
    maxconn 1000
    stats socket {admin} mode 600 level admin

defaults
    mode tcp
    option tcpka
    timeout connect 500ms
    timeout check 500ms
    timeout client 10s
    timeout server 3s
    retries 3
    option redispatch

frontend front
    bind {frontend}
    default_backend backends

backend backends
    balance roundrobin
    default-server send-proxy-v2 check inter 500ms fall 2 rise 2
",
        admin = admin.display()
    );
    for (i, b) in backends.iter().enumerate() {
        let _ = writeln!(cfg, "    server s{} {}", i + 1, b.inet());
    }
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let mut haproxy_cmd = std::process::Command::new("haproxy");
    haproxy_cmd
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let _haproxy = Process::start(haproxy_cmd);
    let haproxy_log = || std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
    let all_up = || (1..=3).all(|i| status_of(&admin, &format!("s{i}")).as_deref() == Some("UP"));
    let t0 = Instant::now();
    wait_for("the 3 backends are UP", t0, Duration::from_secs(10), all_up);

    // Bounded load: 6 clients, each one request after another, until told
    // to stop (at most 90 s).
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(90);
                let mut done = Vec::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    let started = Instant::now();
                    done.push(Done {
                        started,
                        result: request(frontend),
                    });
                }
                done
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(2));

    // Cut s2 off. The connections it has open now become ghosts.
    let victim = &backends[1];
    let starts_before: Vec<String> = victim
        .stderr()
        .lines()
        .filter(|l| l.starts_with("START "))
        .map(|l| fields(l)["peer"].to_owned())
        .collect();
    let cut = Instant::now();
    hosts[1].cut();
    let ghosts: Vec<String> = starts_before
        .into_iter()
        .filter(|p| end_of(victim, p).is_none())
        .collect();
    let to_down = wait_for("s2 marked DOWN", cut, Duration::from_secs(10), || {
        status_of(&admin, "s2").is_some_and(|s| s.starts_with("DOWN"))
    });
    let down_at = cut + to_down;
    // Every ghost is reclaimed by keepalive / the user timeout while the
    // link is still down.
    let mut ends = Vec::new();
    for ghost in &ghosts {
        let (line, after) = wait_end(victim, ghost, cut, NOTICE_BOUND);
        ends.push((after, fields(&line)["error"].to_owned()));
    }
    let reclaimed = ends.iter().map(|e| e.0).max().unwrap_or_default();
    assert!(
        ends.iter()
            .all(|(_, e)| e == "TimedOut/110" || e == "HostUnreachable/113"),
        "ghosts ended with {ends:?}"
    );
    // The link returns: s2 rejoins and serves again.
    let starts_at_restore = victim.stderr().matches("START ").count();
    let restored = Instant::now();
    hosts[1].restore();
    let to_up = wait_for("s2 UP again", restored, Duration::from_secs(15), || {
        status_of(&admin, "s2").as_deref() == Some("UP")
    });
    wait_for("s2 serves again", restored, Duration::from_secs(15), || {
        victim.stderr().matches("START ").count() > starts_at_restore
    });
    stop.store(true, Ordering::SeqCst);
    let done: Vec<Done> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();

    // Which failed, and were they in flight on s2 at the cut?
    let victim_log = victim.stderr();
    let on_victim = |port: u16| victim_log.contains(&format!("START peer=127.0.0.1:{port} "));
    // (seconds from the cut to the request's start, negative before it;
    // client port; error)
    let failures: Vec<(String, u16, &String)> = done
        .iter()
        .filter_map(|d| match &d.result {
            Err((port, e)) => {
                let from_cut = if d.started < cut {
                    -(cut - d.started).as_secs_f64()
                } else {
                    (d.started - cut).as_secs_f64()
                };
                Some((format!("{from_cut:+.2} s"), *port, e))
            }
            Ok(_) => None,
        })
        .collect();
    let in_flight_failures = done
        .iter()
        .filter(|d| d.started < cut)
        .filter(|d| matches!(&d.result, Err((p, _)) if on_victim(*p)))
        .count();
    let s2 = haproxy_stats(&admin)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r["pxname"] == "backends" && r["svname"] == "s2")
        .unwrap_or_default();
    println!(
        "HAProxy, s2's link cut under load (6 clients, 200 ms requests, check inter 500ms \
         fall 2 rise 2): DOWN {:.2} s after the cut; {} requests, {} failed ({} of them in \
         flight on s2 at the cut): {failures:?}; {} ghost connections on s2 reclaimed within \
         {:.1} s of the cut ({ends:?}); s2 UP {:.2} s after the link returned; HAProxy for \
         s2: connection errors {}, retries {}, redispatches {}",
        to_down.as_secs_f64(),
        done.len(),
        failures.len(),
        in_flight_failures,
        ghosts.len(),
        reclaimed.as_secs_f64(),
        to_up.as_secs_f64(),
        s2.get("econ").map_or("?", String::as_str),
        s2.get("wretr").map_or("?", String::as_str),
        s2.get("wredis").map_or("?", String::as_str),
    );
    // Only requests in flight on s2 at the cut failed: none that started
    // later, none on another backend.
    for d in &done {
        if let Err((port, e)) = &d.result {
            assert!(
                d.started < cut && on_victim(*port),
                "a request started {:?} after the cut failed ({e}) and was not in flight on s2\n{}",
                d.started.saturating_duration_since(cut),
                haproxy_log()
            );
        }
    }
    assert!(to_down < Duration::from_secs(5), "DOWN after {to_down:?}");
    assert!(done.iter().filter(|d| d.started > down_at).count() > 20);
}

#[test]
fn the_keepalive_haproxy_configuration_in_docs_deploy_md_is_valid() {
    if !haproxy_available("the_keepalive_haproxy_configuration_in_docs_deploy_md_is_valid") {
        return;
    }
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md");
    let docs = std::fs::read_to_string(docs).unwrap();
    let start = docs
        .find("# haproxy.cfg (HAProxy >= 2.2")
        .expect("docs/deploy.md shows the keepalive configuration");
    let len = docs[start..].find("```").expect("the block ends");
    let dir = TempDir::new("deploy-keepalive-cfg");
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, &docs[start..start + len]).unwrap();
    let out = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
