//! `--metrics ADDR` on demos servers: a `metrics on http://HOST:PORT/metrics`
//! line follows the `listening on` lines; the endpoint serves the counters
//! of every server of the process, each under its own `server` label, in a
//! form `promtool check metrics` accepts; and a real Prometheus, run with
//! the scrape configuration of docs/deploy (target and interval replaced),
//! scrapes it and answers the accepted count through its query API.
//! promtool and prometheus come from the Debian package `prometheus`; the
//! tests that need them skip, saying so, when they are absent.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ServerProcess, DEADLINE};
use demos::listening::parse_metrics_line;
use socketserver::Address;

/// A plain HTTP/1.0 GET; the status line and the body.
fn http_get(at: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut c = TcpStream::connect_timeout(&at, DEADLINE)?;
    c.set_read_timeout(Some(DEADLINE))?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: {at}\r\n\r\n")?;
    let mut reply = String::new();
    c.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

/// Sends one line to the echo server at `at` and reads it back.
fn echo_once(at: SocketAddr) {
    let mut c = TcpStream::connect(at).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(b"hello\n").unwrap();
    let mut line = String::new();
    BufReader::new(&c).read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

fn have(program: &str, test: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("{test}: skipped: {program} is not installed (Debian package prometheus)");
    }
    ok
}

/// An echo server on TCP and UDP with `--metrics`: its TCP address, its
/// `server` labels, and the metrics endpoint.
fn start_echo() -> (ServerProcess, SocketAddr, [String; 2], SocketAddr) {
    let server = ServerProcess::start(
        &[
            "echo",
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let Address::Inet(tcp) = server.next_listening() else {
        panic!("not TCP")
    };
    let Address::Inet(udp) = server.next_listening() else {
        panic!("not UDP")
    };
    let line = server.next_line();
    let metrics =
        parse_metrics_line(&line).unwrap_or_else(|| panic!("not a metrics line: {line:?}"));
    (
        server,
        tcp,
        [format!("tcp://{tcp}"), format!("udp://{udp}")],
        metrics,
    )
}

#[test]
fn the_metrics_endpoint_counts_both_servers_apart_and_promtool_accepts_it() {
    let (_server, tcp, [tcp_label, udp_label], metrics) = start_echo();
    for _ in 0..3 {
        echo_once(tcp);
    }
    let mut text = String::new();
    common::wait_until(DEADLINE, "three connections finished", || {
        let (status, body) = http_get(metrics, "/metrics").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        text = body;
        sample(
            &text,
            &format!("socketserver_requests_finished_total{{server=\"{tcp_label}\"}}"),
        ) == 3.0
    });
    let s = |name: &str, label: &str| sample(&text, &format!("{name}{{server=\"{label}\"}}"));
    assert_eq!(s("socketserver_accepted_total", &tcp_label), 3.0);
    assert_eq!(s("socketserver_accepted_total", &udp_label), 0.0);
    assert_eq!(s("socketserver_received_bytes_total", &tcp_label), 18.0);
    assert_eq!(s("socketserver_sent_bytes_total", &tcp_label), 18.0);
    socketserver_tests::promtool_accepts(&text);
}

#[test]
fn a_unix_metrics_address_is_refused() {
    let out = common::run_demos(
        &["echo", "serve", "--metrics", "unix:/tmp/x.sock"],
        b"",
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("HOST:PORT"), "{}", out.stderr);
}

/// A Prometheus process, killed and reaped on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The loopback TCP port process `pid` listens on, from /proc (Prometheus
/// is started on port 0 and does not print the port it got).
fn listening_port(pid: u32) -> Option<u16> {
    let mut inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            if let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
            {
                inodes.push(inode.to_owned());
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address, st == 0A (LISTEN), inode
        let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
        if *state != "0A" || !inodes.iter().any(|i| i == inode) {
            return None;
        }
        let (ip, port) = local.split_once(':')?;
        (ip == "0100007F").then(|| u16::from_str_radix(port, 16).ok())?
    })
}

#[test]
fn a_real_prometheus_scrapes_a_demo_server_and_answers_the_accepted_count() {
    if !have("prometheus", "prometheus scrape") {
        return;
    }
    let (_server, tcp, [tcp_label, _], metrics) = start_echo();
    for _ in 0..3 {
        echo_once(tcp);
    }
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy/prometheus.yml"),
    )
    .unwrap();
    assert!(shipped.contains("127.0.0.1:9464") && shipped.contains("scrape_interval: 15s"));
    // docs/deploy.md shows this same configuration.
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy.md"))
            .unwrap();
    let body = &shipped[shipped.find("global:").unwrap()..];
    assert!(
        guide.contains(body),
        "docs/deploy.md does not show docs/deploy/prometheus.yml"
    );
    let config = shipped
        .replace("127.0.0.1:9464", &metrics.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("scrape_timeout: 5s", "scrape_timeout: 1s");
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let limit = Duration::from_secs(60);
    let end = Instant::now() + limit;
    let log_text =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    let port = loop {
        if let Some(p) = listening_port(prometheus.0.id()) {
            break p;
        }
        assert!(
            Instant::now() < end,
            "prometheus did not listen within {limit:?}:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let query = format!(
        "/api/v1/query?query=socketserver_accepted_total%7Bserver%3D%22{}%22%7D",
        tcp_label.replace(':', "%3A").replace('/', "%2F")
    );
    loop {
        if let Ok((status, body)) = http_get(api, &query) {
            if status.contains(" 200 ") {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let value = v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_owned);
                if let Some(value) = value {
                    assert_eq!(value, "3", "{body}");
                    let labels = &v["data"]["result"][0]["metric"];
                    assert_eq!(labels["job"], "demos", "{body}");
                    assert_eq!(labels["server"], tcp_label.as_str(), "{body}");
                    return;
                }
            }
        }
        assert!(
            Instant::now() < end,
            "prometheus did not answer the accepted count within {limit:?}:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_upgrade_hands_the_metrics_socket_over_with_the_others() {
    let server = ServerProcess::start(&["echo", "serve", "--metrics", "127.0.0.1:0"], &[]);
    let Address::Inet(tcp) = server.next_listening() else {
        panic!("not TCP")
    };
    let metrics = parse_metrics_line(&server.next_line()).expect("a metrics line");
    let first = server.child.id();
    ServerProcess::signal(first, "USR2");
    // The new process serves the same sockets and says so.
    assert_eq!(server.next_listening(), Address::Inet(tcp));
    assert_eq!(parse_metrics_line(&server.next_line()), Some(metrics));
    // Once the old one is gone, the endpoint is the new process's: it
    // counts the connections made from now on.
    common::wait_until(DEADLINE, "the first process exits", || {
        !common::process_alive(first)
    });
    echo_once(tcp);
    let label = format!("tcp://{tcp}");
    common::wait_until(DEADLINE, "the new process counts the connection", || {
        let (status, body) = http_get(metrics, "/metrics").unwrap();
        status == "HTTP/1.1 200 OK"
            && sample(
                &body,
                &format!("socketserver_accepted_total{{server=\"{label}\"}}"),
            ) == 1.0
    });
}

/// What forked children (`forking`: one per connection; `prefork`: a few
/// that accept) count is in the parent's metrics: the counters live in
/// memory shared with them.
fn forked_children_count_in_the_parents_metrics(strategy: &str) {
    let server = ServerProcess::start(
        &[
            "echo",
            "serve",
            "--strategy",
            strategy,
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let Address::Inet(tcp) = server.next_listening() else {
        panic!("not TCP")
    };
    let metrics = parse_metrics_line(&server.next_line()).expect("a metrics line");
    for _ in 0..4 {
        echo_once(tcp);
    }
    let label = format!("tcp://{tcp}");
    let s = |text: &str, name: &str| sample(text, &format!("{name}{{server=\"{label}\"}}"));
    let mut text = String::new();
    common::wait_until(DEADLINE, "four requests counted as finished", || {
        let (status, body) = http_get(metrics, "/metrics").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        text = body;
        s(&text, "socketserver_requests_finished_total") == 4.0
    });
    assert_eq!(s(&text, "socketserver_accepted_total"), 4.0, "{text}");
    assert_eq!(
        s(&text, "socketserver_received_bytes_total"),
        24.0,
        "{text}"
    );
    assert_eq!(s(&text, "socketserver_sent_bytes_total"), 24.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("socketserver_request_duration_seconds_count{{server=\"{label}\"}}")
        ),
        4.0,
        "{text}"
    );
}

#[test]
fn forking_children_count_in_the_parents_metrics() {
    forked_children_count_in_the_parents_metrics("forking");
}

#[test]
fn prefork_children_count_in_the_parents_metrics() {
    forked_children_count_in_the_parents_metrics("prefork");
}
