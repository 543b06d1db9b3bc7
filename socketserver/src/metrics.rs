//! Prometheus metrics of servers (feature `metrics`): [`Metrics`] collects
//! any number of servers, each under its own `server` label, and renders
//! their counters in the Prometheus text exposition format
//! ([`Metrics::render`]); [`Endpoint`] is a stream handler answering
//! `GET /metrics` with them, so a socketserver server serves its own
//! metrics ([`Metrics::serve`]).
//!
//! Nothing is computed on the hot path for this: the servers count with
//! relaxed atomic increments where events happen (see
//! [`counters`](crate::counters)), and a scrape reads them.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `socketserver_accepted_total` | counter | `server` |
//! | `socketserver_connections_active` (open connections) | gauge | `server` |
//! | `socketserver_connections_idle` (waiting for a new message) | gauge | `server` |
//! | `socketserver_requests_running` | gauge | `server` |
//! | `socketserver_refused_total` | counter | `server`, `reason` (`limit`, `per_ip`, `denied`, `draining`, `pre_handler_budget`, `verify`) |
//! | `socketserver_requests_finished_total` | counter | `server` |
//! | `socketserver_requests_errored_total` | counter | `server` |
//! | `socketserver_requests_panicked_total` | counter | `server` |
//! | `socketserver_requests_cut_total` | counter | `server` |
//! | `socketserver_handshake_failures_total` | counter | `server`, `stage` (`proxy`, `tls`, `auth`) |
//! | `socketserver_received_bytes_total`, `socketserver_sent_bytes_total` | counter | `server` |
//! | `socketserver_datagrams_oversized_total` | counter | `server` |
//! | `socketserver_request_duration_seconds` | histogram | `server` |
//! | `socketserver_draining` (1 once a graceful close began) | gauge | `server` |
//!
//! Under `Forking`, what happens in the children (outcomes, bytes,
//! durations) is not counted in the parent.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! use socketserver::metrics::Metrics;
//! use socketserver::{StreamRequest, Threading, ThreadingTcpServer};
//!
//! let echo = Arc::new(ThreadingTcpServer::bind("127.0.0.1:0", |r: &mut StreamRequest| {
//!     r.echo().map(drop)
//! })?);
//! let metrics = Arc::new(Metrics::new());
//! metrics.register("echo", echo.clone());
//! assert!(metrics.render().contains("socketserver_accepted_total{server=\"echo\"} 0\n"));
//!
//! // Served over HTTP by a server of its own.
//! let endpoint = metrics.serve("127.0.0.1:0", Threading::new())?;
//! let serving = Arc::new(endpoint);
//! let s = Arc::clone(&serving);
//! let thread = std::thread::spawn(move || s.serve_forever());
//! let mut c = std::net::TcpStream::connect(serving.local_addr().unwrap())?;
//! c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
//! let mut reply = String::new();
//! c.read_to_string(&mut reply)?;
//! assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(reply.contains("socketserver_draining{server=\"echo\"} 0"));
//! serving.shutdown();
//! thread.join().unwrap()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::counters::{Snapshot, DURATION_BUCKETS};
use crate::transport::Tcp;
use crate::{Handler, Server, Stats, Strategy, StreamHandler, StreamRequest, Transport};

/// What [`Metrics`] reads of a server: implemented by every [`Server`].
pub trait Source: Send + Sync {
    /// The counters of [`Server::stats`].
    fn stats(&self) -> Stats;
    /// The counters of [`Server::counters`].
    fn counters(&self) -> Snapshot;
    /// [`Server::idle_connections`].
    fn idle_connections(&self) -> usize;
    /// [`Server::is_draining`].
    fn is_draining(&self) -> bool;
}

impl<T, S, H> Source for Server<T, S, H>
where
    T: Transport,
    S: Strategy,
    H: Handler<T::Request>,
{
    fn stats(&self) -> Stats {
        Server::stats(self)
    }
    fn counters(&self) -> Snapshot {
        Server::counters(self)
    }
    fn idle_connections(&self) -> usize {
        Server::idle_connections(self)
    }
    fn is_draining(&self) -> bool {
        Server::is_draining(self)
    }
}

/// The servers whose metrics are rendered, each with its `server` label.
#[derive(Default)]
pub struct Metrics {
    servers: Mutex<Vec<(String, Arc<dyn Source>)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.servers.lock().iter().map(|(n, _)| n.clone()).collect();
        f.debug_struct("Metrics").field("servers", &names).finish()
    }
}

/// One metric family: name, type, help, and its samples.
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
}

impl Metrics {
    /// No servers yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds `server` under the label `server="NAME"` (e.g. its URL). Two
    /// servers should not share a name.
    pub fn register(&self, name: impl Into<String>, server: Arc<dyn Source>) {
        self.servers.lock().push((name.into(), server));
    }

    /// The Prometheus text exposition (format 0.0.4) of every registered
    /// server's counters.
    pub fn render(&self) -> String {
        let servers: Vec<(String, Arc<dyn Source>)> = self.servers.lock().clone();
        let read: Vec<(String, Stats, Snapshot, usize, bool)> = servers
            .iter()
            .map(|(name, s)| {
                (
                    escape_label(name),
                    s.stats(),
                    s.counters(),
                    s.idle_connections(),
                    s.is_draining(),
                )
            })
            .collect();
        let mut out = String::with_capacity(4096);
        let simple = |out: &mut String,
                      f: &Family<'_>,
                      value: &dyn Fn(&Stats, &Snapshot, usize, bool) -> u64| {
            header(out, f);
            for (name, stats, snap, idle, draining) in &read {
                let _ = writeln!(
                    out,
                    "{}{{server=\"{name}\"}} {}",
                    f.name,
                    value(stats, snap, *idle, *draining)
                );
            }
        };
        simple(
            &mut out,
            &Family {
                name: "socketserver_accepted_total",
                kind: "counter",
                help: "Requests taken off the socket (connections accepted, datagrams received).",
            },
            &|st, _, _, _| st.accepted,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_connections_active",
                kind: "gauge",
                help: "Stream connections open now.",
            },
            &|st, _, _, _| st.connections as u64,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_connections_idle",
                kind: "gauge",
                help: "Open connections waiting for a new message now.",
            },
            &|_, _, idle, _| idle as u64,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_requests_running",
                kind: "gauge",
                help: "Requests running now.",
            },
            &|st, _, _, _| st.active as u64,
        );
        header(
            &mut out,
            &Family {
                name: "socketserver_refused_total",
                kind: "counter",
                help: "Connections or datagrams refused before their handler ran, by reason.",
            },
        );
        for (name, _, snap, _, _) in &read {
            for (reason, n) in snap.refused {
                let _ = writeln!(
                    out,
                    "socketserver_refused_total{{server=\"{name}\",reason=\"{}\"}} {n}",
                    reason.as_str()
                );
            }
        }
        simple(
            &mut out,
            &Family {
                name: "socketserver_requests_finished_total",
                kind: "counter",
                help: "Requests whose handler finished without error.",
            },
            &|_, sn, _, _| sn.finished,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_requests_errored_total",
                kind: "counter",
                help: "Requests whose handler returned an error.",
            },
            &|_, sn, _, _| sn.errored,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_requests_panicked_total",
                kind: "counter",
                help: "Requests whose handler panicked.",
            },
            &|_, sn, _, _| sn.panicked,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_requests_cut_total",
                kind: "counter",
                help: "Requests cut at a graceful close's deadline or at max_lifetime.",
            },
            &|_, sn, _, _| sn.cut,
        );
        header(
            &mut out,
            &Family {
                name: "socketserver_handshake_failures_total",
                kind: "counter",
                help: "Failed connection set-ups, by stage.",
            },
        );
        for (name, _, snap, _, _) in &read {
            for (stage, n) in snap.handshake_failures {
                let _ = writeln!(
                    out,
                    "socketserver_handshake_failures_total{{server=\"{name}\",stage=\"{}\"}} {n}",
                    stage.as_str()
                );
            }
        }
        simple(
            &mut out,
            &Family {
                name: "socketserver_received_bytes_total",
                kind: "counter",
                help: "Bytes read by the handlers (plaintext under TLS).",
            },
            &|_, sn, _, _| sn.bytes_in,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_sent_bytes_total",
                kind: "counter",
                help: "Bytes sent by the handlers (plaintext under TLS).",
            },
            &|_, sn, _, _| sn.bytes_out,
        );
        simple(
            &mut out,
            &Family {
                name: "socketserver_datagrams_oversized_total",
                kind: "counter",
                help: "Datagrams dropped unread for being larger than max_datagram_size.",
            },
            &|st, _, _, _| st.oversized,
        );
        let duration = Family {
            name: "socketserver_request_duration_seconds",
            kind: "histogram",
            help: "How long request handlers ran.",
        };
        header(&mut out, &duration);
        for (name, _, snap, _, _) in &read {
            let mut cumulative = 0u64;
            for (i, n) in snap.duration_buckets.iter().enumerate() {
                cumulative += n;
                let le = DURATION_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| format!("{b}"));
                let _ = writeln!(
                    out,
                    "{}_bucket{{server=\"{name}\",le=\"{le}\"}} {cumulative}",
                    duration.name
                );
            }
            let _ = writeln!(
                out,
                "{}_sum{{server=\"{name}\"}} {}",
                duration.name,
                snap.duration_sum.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "{}_count{{server=\"{name}\"}} {cumulative}",
                duration.name
            );
        }
        simple(
            &mut out,
            &Family {
                name: "socketserver_draining",
                kind: "gauge",
                help: "1 once a graceful close has begun.",
            },
            &|_, _, _, draining| u64::from(draining),
        );
        out
    }

    /// A TCP server on `addr` answering `GET /metrics` with
    /// [`render`](Self::render) ([`Endpoint`]), under `strategy`; the
    /// caller runs it (`serve_forever`).
    pub fn serve<S: Strategy>(
        self: &Arc<Self>,
        addr: impl ToSocketAddrs,
        strategy: S,
    ) -> io::Result<Server<Tcp, S, Endpoint>> {
        Server::builder()
            .strategy(strategy)
            .max_connections(Some(64))
            .read_timeout(Some(Duration::from_secs(10)))
            .tcp(addr, Endpoint::new(Arc::clone(self)))
    }
}

fn header(out: &mut String, f: &Family<'_>) {
    let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
    let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
}

/// A label value with `\`, `"` and newlines escaped.
fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The longest request head (request line and headers) the endpoint reads.
const MAX_HEAD: u64 = 8 * 1024;

/// A stream handler serving [`Metrics`] over HTTP/1.x: `GET /metrics`
/// (also `HEAD`) gets the exposition, any other path 404, any other method
/// 405, a request head over 8 KiB 431; one request per connection
/// (`Connection: close`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Serves `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Endpoint {
        Endpoint { metrics }
    }
}

impl StreamHandler for Endpoint {
    fn handle(&self, req: &mut StreamRequest) -> io::Result<()> {
        let mut head = Vec::new();
        let mut lines = 0;
        let complete = {
            let mut limited = Read::take(&mut *req, MAX_HEAD);
            loop {
                let start = head.len();
                if limited.read_until(b'\n', &mut head)? == 0 {
                    break false;
                }
                lines += 1;
                let line = &head[start..];
                if line == b"\r\n" || line == b"\n" {
                    break true;
                }
                if lines > 100 {
                    break false;
                }
            }
        };
        if !complete {
            if head.len() as u64 >= MAX_HEAD {
                respond(req, "431 Request Header Fields Too Large", "", false)?;
                // Read (a bounded amount of) what the client still sends,
                // so that closing does not reset the connection before it
                // read the answer.
                req.stream().shutdown(std::net::Shutdown::Write)?;
                let _ = io::copy(&mut Read::take(&mut *req, 64 * 1024), &mut io::sink());
                return Ok(());
            }
            return Ok(());
        }
        let request_line =
            String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[]))
                .trim_end()
                .to_owned();
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET" | "HEAD", "/metrics") => {
                let body = self.metrics.render();
                respond(req, "200 OK", &body, method == "HEAD")
            }
            ("GET" | "HEAD", _) => {
                respond(req, "404 Not Found", "not found: try /metrics\n", false)
            }
            _ => respond(req, "405 Method Not Allowed", "only GET /metrics\n", false),
        }
    }
}

fn respond(req: &mut StreamRequest, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    write!(
        req,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head_only {
        req.write_all(body.as_bytes())?;
    }
    req.flush()
}
