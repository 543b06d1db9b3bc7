//! `socketserver::metrics`: the Prometheus exposition of a server's
//! counters counts what happened (requests finished, errored, panicked;
//! refusals by reason; bytes both ways; request durations), tells servers
//! apart by their `server` label, passes `promtool check metrics` (skipped
//! when promtool is absent), and is served over HTTP by a socketserver
//! server of its own (`GET /metrics`, 404 and 405 otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use socketserver::metrics::Metrics;
use socketserver::{Server, StreamRequest, Threading};
use socketserver_tests::{wait_until, DEADLINE};

/// Each line: `ok` answers `ok`, `err` ends the request with an error,
/// `panic` panics.
fn handler(req: &mut StreamRequest) -> std::io::Result<()> {
    let mut line = String::new();
    while req.read_line(&mut line)? > 0 {
        match line.trim_end() {
            "err" => return Err(std::io::Error::other("asked to fail")),
            "panic" => panic!("asked to panic"),
            _ => req.write_all(b"ok\n")?,
        }
        line.clear();
    }
    Ok(())
}

type TestServer =
    Server<socketserver::transport::Tcp, Threading, fn(&mut StreamRequest) -> std::io::Result<()>>;

fn start(max_connections: Option<usize>) -> (Arc<TestServer>, JoinHandle<std::io::Result<()>>) {
    let server: TestServer = Server::builder()
        .strategy(Threading::new())
        .max_connections(max_connections)
        .tcp(
            "127.0.0.1:0",
            handler as fn(&mut StreamRequest) -> std::io::Result<()>,
        )
        .unwrap();
    let server = Arc::new(server);
    let s = Arc::clone(&server);
    let t = thread::spawn(move || s.serve_forever());
    (server, t)
}

fn addr(server: &TestServer) -> SocketAddr {
    server.local_addr().unwrap()
}

/// Sends `line` on a new connection and reads until the server closes
/// (a refused connection may be reset: what was read until then).
fn one_request(at: SocketAddr, line: &str) -> String {
    let mut c = TcpStream::connect(at).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = c.write_all(line.as_bytes());
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut back = String::new();
    let _ = c.read_to_string(&mut back);
    back
}

/// The value of the sample `name{labels}` in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn the_exposition_counts_outcomes_bytes_and_durations_and_promtool_accepts_it() {
    let (server, t) = start(None);
    let metrics = Metrics::new();
    metrics.register("main", server.clone());
    let at = addr(&server);
    assert_eq!(one_request(at, "ok\nok\n"), "ok\nok\n");
    assert_eq!(one_request(at, "err\n"), "");
    assert_eq!(one_request(at, "panic\n"), "");
    wait_until(DEADLINE, "three requests counted", || {
        let c = server.counters();
        c.finished + c.errored + c.panicked == 3
    });
    let text = metrics.render();
    let s = |name: &str| sample(&text, &format!("{name}{{server=\"main\"}}"));
    assert_eq!(s("socketserver_accepted_total"), 3.0);
    assert_eq!(s("socketserver_requests_finished_total"), 1.0);
    assert_eq!(s("socketserver_requests_errored_total"), 1.0);
    assert_eq!(s("socketserver_requests_panicked_total"), 1.0);
    assert_eq!(s("socketserver_requests_cut_total"), 0.0);
    // "ok\nok\n" + "err\n" + "panic\n" read, "ok\n" twice sent.
    assert_eq!(s("socketserver_received_bytes_total"), 16.0);
    assert_eq!(s("socketserver_sent_bytes_total"), 6.0);
    assert_eq!(s("socketserver_request_duration_seconds_count"), 3.0);
    assert_eq!(
        sample(
            &text,
            "socketserver_request_duration_seconds_bucket{server=\"main\",le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(s("socketserver_request_duration_seconds_sum") > 0.0);
    assert_eq!(s("socketserver_draining"), 0.0);
    socketserver_tests::promtool_accepts(&text);
    server.close_gracefully(DEADLINE);
    assert_eq!(
        sample(&metrics.render(), "socketserver_draining{server=\"main\"}"),
        1.0
    );
    t.join().unwrap().unwrap();
}

#[test]
fn refusals_are_counted_by_reason_and_servers_apart_by_label() {
    let (full, t1) = start(Some(1));
    let (other, t2) = start(None);
    let metrics = Metrics::new();
    metrics.register("full", full.clone());
    metrics.register("other \"quoted\"", other.clone());
    // One connection holds the only slot (answered once, so it is in).
    let mut held = TcpStream::connect(addr(&full)).unwrap();
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    held.write_all(b"ok\n").unwrap();
    let mut line = String::new();
    BufReader::new(&held).read_line(&mut line).unwrap();
    assert_eq!(line, "ok\n");
    wait_until(DEADLINE, "the held connection is idle", || {
        full.idle_connections() == 1
    });
    // The next one is refused for the limit.
    assert_eq!(one_request(addr(&full), "ok\n"), "");
    wait_until(DEADLINE, "the refusal is counted", || {
        full.stats().refused == 1
    });
    let text = metrics.render();
    assert_eq!(
        sample(
            &text,
            "socketserver_refused_total{server=\"full\",reason=\"limit\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "socketserver_refused_total{server=\"full\",reason=\"per_ip\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(&text, "socketserver_connections_active{server=\"full\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "socketserver_connections_idle{server=\"full\"}"),
        1.0
    );
    // The other server, its label escaped, counted nothing.
    assert_eq!(
        sample(
            &text,
            "socketserver_accepted_total{server=\"other \\\"quoted\\\"\"}"
        ),
        0.0
    );
    socketserver_tests::promtool_accepts(&text);
    drop(held);
    full.shutdown();
    other.shutdown();
    t1.join().unwrap().unwrap();
    t2.join().unwrap().unwrap();
}

fn http(at: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(at).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn the_endpoint_answers_get_metrics_and_refuses_the_rest() {
    let (server, t) = start(None);
    let metrics = Arc::new(Metrics::new());
    metrics.register("main", server.clone());
    let endpoint = Arc::new(metrics.serve("127.0.0.1:0", Threading::new()).unwrap());
    let e = Arc::clone(&endpoint);
    let te = thread::spawn(move || e.serve_forever());
    let at = endpoint.local_addr().unwrap();

    let reply = http(
        at,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n",
    );
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(
        body.contains("socketserver_accepted_total{server=\"main\"} 0\n"),
        "{body}"
    );
    socketserver_tests::promtool_accepts(body);

    let head_only = http(at, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(head_only.starts_with("HTTP/1.1 200 OK"), "{head_only}");
    assert!(
        head_only.ends_with("\r\n\r\n"),
        "no body for HEAD: {head_only}"
    );
    assert!(http(at, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(http(at, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert!(http(at, &huge).starts_with("HTTP/1.1 431 "));

    endpoint.shutdown();
    server.shutdown();
    te.join().unwrap().unwrap();
    t.join().unwrap().unwrap();
}
