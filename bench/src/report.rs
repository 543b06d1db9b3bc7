//! What a `bench` run produces: one [`Row`] per server and cell, the
//! project's performance targets checked against them, and the markdown
//! report.

use std::fmt::Write as _;

use serde::Serialize;

use super::shutdown::ShutdownResult;

/// One server in one cell.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    /// Short id of the server, e.g. `threading`, `std`, `py-threading`.
    pub server: String,
    /// What the server is, in words.
    pub label: String,
    /// Short id of the cell, e.g. `pp64-c50`.
    pub cell: String,
    /// What the cell measures, in words.
    pub cell_title: String,
    /// `load`, `idle`, `exit` or `shutdown`.
    pub kind: String,
    /// Load cells: the loadgen mode (`pingpong`, `connect`, `udp`).
    pub mode: String,
    /// Connections (or UDP sockets, or idle connections asked for).
    pub conns: usize,
    /// Bytes per request.
    pub size: usize,
    /// Requests per second in the measured window (median over repeats).
    pub req_per_s: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Largest latency, microseconds.
    pub max_us: f64,
    /// CPU used by the server's whole process group during the window,
    /// in cores (1.0 = one core busy all the time).
    pub server_cpu: f64,
    /// CPU of the load generator's threads, in cores.
    pub loadgen_cpu: f64,
    /// Mismatched echoes + I/O errors + failed connects (whole run).
    pub errors: u64,
    /// UDP datagrams not echoed within 500 ms (not counted as errors).
    pub lost: u64,
    /// Connections (sockets) that completed at least one request in the
    /// window.
    pub active_conns: u64,
    /// Load cells: the median over the rounds of this server's req/s divided
    /// by the cell's reference server's in the same round (`vs`); idle
    /// cells: KiB per connection divided by the plain std echo's.
    pub ratio: Option<f64>,
    /// The server `ratio` is against (`std`, or `tls-tokio` in TLS cells).
    pub vs: String,
    /// req/s of every repetition, in the order run.
    pub repeats: Vec<f64>,
    /// Idle cells: what holding the connections cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleResult>,
    /// Exit cells: SIGTERM while holding idle connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitResult>,
    /// Shutdown cells: the probe's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<ShutdownResult>,
    /// Why the cell has no numbers (the server failed to start, nothing was
    /// served, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Server memory while holding idle connections.
#[derive(Debug, Clone, Serialize, Default)]
pub struct IdleResult {
    /// Connections asked for.
    pub requested: usize,
    /// Connections opened, echoed once and held.
    pub held: usize,
    /// Of those, still open when the memory was read.
    pub alive: usize,
    /// Seconds to open them one after another (each with one echo); with
    /// `--repeat`, the median round's.
    pub open_secs: f64,
    /// Connections opened per second (`held / open_secs`).
    #[serde(default)]
    pub open_per_s: f64,
    /// `open_secs` of every round, in the order run (0: the round failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_secs_rounds: Vec<f64>,
    /// `open_per_s` divided by tokio's in the same cell (medians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_vs_tokio: Option<f64>,
    /// Server RSS (whole process group) before, KiB.
    pub rss_before_kib: u64,
    /// Server RSS while holding them, KiB.
    pub rss_held_kib: u64,
    /// `(rss_held - rss_before) / held`.
    pub kib_per_conn: f64,
    /// Threads of the server process while holding them.
    pub server_threads: u64,
    /// The connection limit that applied, if the run was capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capped: Option<String>,
}

/// SIGTERM to a server holding idle connections: times from the signal,
/// milliseconds, medians over the rounds that ended in time (each round's
/// kept).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ExitResult {
    /// Connections asked for.
    pub requested: usize,
    /// Connections open when the signal was sent (the fewest of the rounds).
    pub held: usize,
    /// Rounds that ended in time.
    pub rounds: usize,
    /// Signal to the process reaped (waitpid returned), ms.
    pub exit_ms: f64,
    /// Signal to `serve_forever` returning (ours, from its stderr), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned_ms: Option<f64>,
    /// Signal to the `exiting at` line, just before `main` returns (ours), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exiting_ms: Option<f64>,
    /// `exit_ms` of every round that ended in time.
    #[serde(default)]
    pub exit_ms_rounds: Vec<f64>,
    /// `returned_ms` of every round that reported it.
    #[serde(default)]
    pub returned_ms_rounds: Vec<f64>,
    /// `exiting_ms` of every round that reported it.
    #[serde(default)]
    pub exiting_ms_rounds: Vec<f64>,
    /// Seconds it took to open the connections, every round.
    #[serde(default)]
    pub open_secs_rounds: Vec<f64>,
    /// How the process ended: `exit status 0`, `killed by SIGTERM`.
    pub ended: String,
}

/// One performance target checked against the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The target, in words.
    pub bar: String,
    /// The measured value, in words (ratio and the numbers behind it).
    pub measured: String,
    /// The measured ratio (or milliseconds, or KiB), if the cells ran.
    pub value: Option<f64>,
    /// Met, missed, or `None` when the cells needed did not run.
    pub met: Option<bool>,
}

/// Everything one `bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// When it ran (UTC, `date -u`).
    pub date: String,
    /// CPU model, cores, memory, kernel, Python version.
    pub machine: Vec<(String, String)>,
    /// Cores this process may run on (`available_parallelism`), shared by
    /// the load generator and the server.
    pub cores: usize,
    /// `uptime` load averages before and after.
    pub load_before: String,
    /// Load averages after the run.
    pub load_after: String,
    /// Measured window of each load run, seconds.
    pub duration_s: f64,
    /// Warmup before each window, seconds.
    pub warmup_s: f64,
    /// Repetitions of each load, idle and exit cell (the median is
    /// reported).
    pub repeat: usize,
    /// Total wall time of the run, seconds.
    pub wall_s: f64,
    /// Every row.
    pub rows: Vec<Row>,
    /// The performance targets, checked.
    pub targets: Vec<Target>,
    /// Notes printed with the tables.
    pub notes: Vec<String>,
}

fn find<'a>(rows: &'a [Row], server: &str, cell: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.server == server && r.cell == cell && r.failure.is_none())
}

fn rate(rows: &[Row], server: &str, cell: &str) -> Option<f64> {
    find(rows, server, cell)
        .map(|r| r.req_per_s)
        .filter(|&v| v > 0.0)
}

/// The ratio of `a`'s req/s to `b`'s: when both ran in the same cell for
/// the same rounds, the median of the per-round ratios (each round runs
/// every server once, back to back, so both saw the same machine); else
/// the ratio of the reported medians. Also the number of rounds paired.
pub fn paired_ratio(a: &Row, b: &Row) -> Option<(f64, usize)> {
    if a.cell == b.cell && a.repeats.len() == b.repeats.len() && a.repeats.len() > 1 {
        let mut per: Vec<f64> = a
            .repeats
            .iter()
            .zip(&b.repeats)
            .filter(|(x, y)| **x > 0.0 && **y > 0.0)
            .map(|(x, y)| x / y)
            .collect();
        if per.is_empty() {
            return None;
        }
        per.sort_by(f64::total_cmp);
        let n = per.len();
        let median = if n % 2 == 1 {
            per[n / 2]
        } else {
            (per[n / 2 - 1] + per[n / 2]) / 2.0
        };
        return Some((median, n));
    }
    (a.req_per_s > 0.0 && b.req_per_s > 0.0).then(|| (a.req_per_s / b.req_per_s, 1))
}

/// Sets `ratio` and `vs` of every row: load rows against their cell's
/// reference server (`references`: cell id, server id; `std` when the cell
/// is not listed), idle rows against std (and their open rate against
/// tokio's, `idle.open_vs_tokio`).
pub fn fill_ratios(rows: &mut [Row], references: &[(String, String)]) {
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        if r.kind == "idle" && r.failure.is_none() {
            let tokio = find(&snapshot, "tokio", &r.cell)
                .and_then(|t| t.idle.as_ref())
                .map(|t| t.open_per_s)
                .filter(|&t| t > 0.0);
            if let (Some(i), Some(t)) = (r.idle.as_mut(), tokio) {
                i.open_vs_tokio = (i.open_per_s > 0.0).then(|| round(i.open_per_s / t, 2));
            }
        }
        let reference = references
            .iter()
            .find(|(c, _)| *c == r.cell)
            .map_or("std", |(_, s)| s.as_str());
        r.vs = if r.kind == "load" { reference } else { "std" }.to_owned();
        r.ratio = match r.kind.as_str() {
            "load" if r.failure.is_none() => find(&snapshot, reference, &r.cell)
                .and_then(|b| paired_ratio(r, b))
                .map(|(v, _)| round(v, 2)),
            "idle" => {
                let mine = r.idle.as_ref().map(|i| i.kib_per_conn);
                let base = find(&snapshot, "std", &r.cell)
                    .and_then(|b| b.idle.as_ref())
                    .map(|i| i.kib_per_conn)
                    .filter(|&b| b > 0.0);
                mine.zip(base).map(|(m, b)| round(m / b, 2))
            }
            _ => None,
        };
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// Checks every performance target that the rows can answer.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let mut out = Vec::new();
    let mut ratio_bar = |bar: &str, a: (&str, &str), b: (&str, &str), min: f64| {
        let (ra, rb) = (find(rows, a.0, a.1), find(rows, b.0, b.1));
        let paired = ra
            .zip(rb)
            .and_then(|(x, y)| Some((x, y, paired_ratio(x, y)?)));
        let (measured, value, met) = match paired {
            Some((x, y, (v, n))) => {
                let v = round(v, 2);
                let how = if n > 1 {
                    format!("median of {n} per-round ratios; ")
                } else {
                    String::new()
                };
                (
                    format!(
                        "{v:.2}x ({how}{} {} vs {} {} req/s)",
                        a.0,
                        fmt_rate(x.req_per_s),
                        b.0,
                        fmt_rate(y.req_per_s)
                    ),
                    Some(v),
                    Some(v >= min),
                )
            }
            None => ("not measured in this run".to_owned(), None, None),
        };
        out.push(Target {
            bar: bar.to_owned(),
            measured,
            value,
            met,
        });
    };
    ratio_bar(
        "Threading >= 0.95x plain std echo, 64 B ping-pong, 50 connections",
        ("threading", "pp64-c50"),
        ("std", "pp64-c50"),
        0.95,
    );
    ratio_bar(
        "Threading >= 0.95x plain std echo, 64 B ping-pong, 500 connections",
        ("threading", "pp64-c500"),
        ("std", "pp64-c500"),
        0.95,
    );
    ratio_bar(
        "Threading >= 3x Python ThreadingTCPServer, 500 connections",
        ("threading", "pp64-c500"),
        ("py-threading", "pp64-c500"),
        3.0,
    );
    ratio_bar(
        "connect-echo-close: Threading >= 1.5x plain std",
        ("threading", "connect-c8"),
        ("std", "connect-c8"),
        1.5,
    );
    ratio_bar(
        "connect-echo-close: Pool >= 1.0x plain std",
        ("pool", "connect-c8"),
        ("std", "connect-c8"),
        1.0,
    );
    ratio_bar(
        "connect-echo-close: Forking >= 3x Python ForkingTCPServer",
        ("forking", "connect-c8"),
        ("py-forking", "connect-c8"),
        3.0,
    );
    // UDP: the best of our strategies.
    let best = ["synchronous", "threading", "pool", "forking", "green"]
        .iter()
        .filter_map(|s| rate(rows, s, "udp64-c8").map(|r| (*s, r)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match best {
        Some((s, _)) => ratio_bar(
            "UDP echo: best strategy >= 0.9x a plain std recv_from/send_to loop",
            (s, "udp64-c8"),
            ("std", "udp64-c8"),
            0.9,
        ),
        None => ratio_bar(
            "UDP echo: best strategy >= 0.9x a plain std recv_from/send_to loop",
            ("-", "-"),
            ("-", "-"),
            0.9,
        ),
    }
    ratio_bar(
        "UDP echo: Threading >= 5x Python ThreadingUDPServer",
        ("threading", "udp64-c8"),
        ("py-threading", "udp64-c8"),
        5.0,
    );
    ratio_bar(
        "(not a target) UDP echo: Threading with keep_alive(0), a thread per datagram, vs Python ThreadingUDPServer",
        ("threading-new", "udp64-c8"),
        ("py-threading", "udp64-c8"),
        5.0,
    );
    ratio_bar(
        "(not a target) connect-echo-close: Threading with keep_alive(0) vs plain std",
        ("threading-new", "connect-c8"),
        ("std", "connect-c8"),
        0.9,
    );
    ratio_bar(
        "stretch: Threading within 0.8x of tokio, 50 connections",
        ("threading", "pp64-c50"),
        ("tokio", "pp64-c50"),
        0.8,
    );
    // Green against tokio: rates, CPU per request, idle memory.
    for (what, cell) in [
        ("64 B ping-pong, 50 connections", "pp64-c50"),
        ("64 B ping-pong, 500 connections", "pp64-c500"),
        ("16 KiB ping-pong, 50 connections", "pp16k-c50"),
        ("connect-echo-close", "connect-c8"),
    ] {
        ratio_bar(
            &format!("Green >= 1.0x tokio, {what}"),
            ("green", cell),
            ("tokio", cell),
            1.0,
        );
    }
    // PreFork: a pool of processes against a fork per connection, and
    // against threads.
    ratio_bar(
        "connect-echo-close: PreFork >= 3x Forking",
        ("prefork", "connect-c8"),
        ("forking", "connect-c8"),
        3.0,
    );
    ratio_bar(
        "PreFork >= 0.9x Threading, 64 B ping-pong, 50 connections",
        ("prefork", "pp64-c50"),
        ("threading", "pp64-c50"),
        0.9,
    );
    // TLS against tokio-rustls on the same rustls ServerConfig.
    ratio_bar(
        "TLS: Threading >= 0.9x tokio-rustls, 64 B ping-pong, 50 connections",
        ("tls-threading", "tls-pp64-c50"),
        ("tls-tokio", "tls-pp64-c50"),
        0.9,
    );
    ratio_bar(
        "TLS: Green >= 1.0x tokio-rustls, 64 B ping-pong, 50 connections",
        ("tls-green", "tls-pp64-c50"),
        ("tls-tokio", "tls-pp64-c50"),
        1.0,
    );
    ratio_bar(
        "TLS full handshakes per second: Threading >= 0.9x tokio-rustls",
        ("tls-threading", "tls-handshake-c8"),
        ("tls-tokio", "tls-handshake-c8"),
        0.9,
    );
    ratio_bar(
        "TLS full handshakes per second: Green >= 0.9x tokio-rustls",
        ("tls-green", "tls-handshake-c8"),
        ("tls-tokio", "tls-handshake-c8"),
        0.9,
    );
    out.extend(green_cpu_targets(rows));
    out.extend(green_idle_target(rows));
    out.push(green_exit_target(rows));
    // Shutdown: every strategy, idle and busy, p99 < 5 ms.
    for cell in ["shutdown-idle", "shutdown-busy"] {
        let ours: Vec<&Row> = rows
            .iter()
            .filter(|r| r.cell == cell && !r.server.starts_with("py-"))
            .collect();
        let worst = ours
            .iter()
            .filter_map(|r| r.shutdown.as_ref().map(|s| (r.server.as_str(), s)))
            .max_by(|a, b| a.1.p99_ms.total_cmp(&b.1.p99_ms));
        let py = find(rows, "py-threading", cell).and_then(|r| r.shutdown.as_ref());
        let (measured, value, met) = match worst {
            Some((s, w)) if ours.iter().all(|r| r.shutdown.is_some()) => (
                format!(
                    "worst p99 {:.3} ms ({s}; median {:.3} ms){}",
                    w.p99_ms,
                    w.median_ms,
                    py.map(|p| format!(
                        "; Python ThreadingTCPServer median {:.1} ms, max {:.1} ms",
                        p.median_ms, p.max_ms
                    ))
                    .unwrap_or_default()
                ),
                Some(w.p99_ms),
                Some(w.p99_ms < 5.0),
            ),
            _ => ("not measured in this run".to_owned(), None, None),
        };
        out.push(Target {
            bar: format!(
                "shutdown() -> serve_forever returns < 5 ms, every strategy, {}",
                if cell == "shutdown-idle" {
                    "idle"
                } else {
                    "busy (20 clients)"
                }
            ),
            measured,
            value,
            met,
        });
    }
    // Idle memory: Threading with a small stack.
    for cell in ["idle-10k", "idle-1k"] {
        if let Some(i) = find(rows, "threading-64k", cell).and_then(|r| r.idle.as_ref()) {
            let std = find(rows, "std", cell).and_then(|r| r.idle.as_ref());
            out.push(Target {
                bar: format!(
                    "idle connections: <= 16 KiB RSS per connection, Threading with a small (64 KiB) stack ({cell})"
                ),
                measured: format!(
                    "{:.1} KiB/conn over {} connections{}",
                    i.kib_per_conn,
                    i.held,
                    std.map(|s| format!(
                        " (plain std {:.1} KiB/conn); opened in {:.1} s (std {:.1} s)",
                        s.kib_per_conn, i.open_secs, s.open_secs
                    ))
                    .unwrap_or_default()
                ),
                value: Some(i.kib_per_conn),
                met: Some(i.kib_per_conn <= 16.0 && i.held == i.requested),
            });
            break;
        }
    }
    out
}

/// Server CPU time per request in a load cell, microseconds.
pub fn cpu_us_per_request(row: &Row) -> Option<f64> {
    (row.kind == "load" && row.req_per_s > 0.0 && row.server_cpu > 0.0)
        .then(|| row.server_cpu / row.req_per_s * 1e6)
}

/// Green's server CPU per request <= 1.05x tokio's, in every ping-pong cell
/// both ran (the worst cell is the one judged).
fn green_cpu_targets(rows: &[Row]) -> Vec<Target> {
    let cpu = |server: &str, cell: &str| find(rows, server, cell).and_then(cpu_us_per_request);
    let cells: Vec<(&str, f64, f64)> = ["pp64-c50", "pp64-c500", "pp16k-c50"]
        .into_iter()
        .filter_map(|c| Some((c, cpu("green", c)?, cpu("tokio", c)?)))
        .collect();
    let bar = "Green server CPU per request <= 1.05x tokio's (ping-pong cells, worst)".to_owned();
    let worst = cells
        .iter()
        .map(|(c, g, t)| (*c, g / t))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((_, worst)) = worst else {
        return vec![Target {
            bar,
            measured: "not measured in this run".to_owned(),
            value: None,
            met: None,
        }];
    };
    let measured = cells
        .iter()
        .map(|(c, g, t)| format!("{c} {:.2}x ({g:.1} vs {t:.1} us)", g / t))
        .collect::<Vec<_>>()
        .join("; ");
    vec![Target {
        bar,
        measured,
        value: Some(round(worst, 2)),
        met: Some(worst <= 1.05),
    }]
}

/// Green holding idle connections: RSS per connection <= tokio's, threads
/// <= cores + 4, all of them held, and opened no slower than tokio (median
/// open time over the rounds <= tokio's).
fn green_idle_target(rows: &[Row]) -> Option<Target> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for cell in ["idle-10k", "idle-1k"] {
        let Some(g) = find(rows, "green", cell).and_then(|r| r.idle.as_ref()) else {
            continue;
        };
        let tokio = find(rows, "tokio", cell).and_then(|r| r.idle.as_ref());
        let rounds = |i: &IdleResult| {
            if i.open_secs_rounds.len() > 1 {
                format!(
                    " (rounds {})",
                    i.open_secs_rounds
                        .iter()
                        .map(|x| format!("{x:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        };
        let n = g.open_secs_rounds.len().max(1);
        let mut measured = format!(
            "{:.1} KiB/conn, {} threads, {} of {} held, opened in {:.2} s{} ({}/s{})",
            g.kib_per_conn,
            g.server_threads,
            g.held,
            g.requested,
            g.open_secs,
            rounds(g),
            fmt_rate(g.open_per_s),
            if n > 1 {
                format!("; median of {n} rounds")
            } else {
                String::new()
            },
        );
        if let Some(t) = tokio {
            let _ = write!(
                measured,
                "; tokio {:.1} KiB/conn, {} threads, opened in {:.2} s{} ({}/s); open rate {:.2}x tokio's",
                t.kib_per_conn,
                t.server_threads,
                t.open_secs,
                rounds(t),
                fmt_rate(t.open_per_s),
                g.open_vs_tokio.unwrap_or(0.0),
            );
            // Round by round (each round opened both, back to back).
            let (a, b) = (&g.open_secs_rounds, &t.open_secs_rounds);
            if a.len() > 1 && a.len() == b.len() && a.iter().chain(b).all(|&x| x > 0.0) {
                let per: Vec<String> = a
                    .iter()
                    .zip(b)
                    .map(|(g, t)| format!("{:.2}", t / g))
                    .collect();
                let _ = write!(measured, " (per round {}x)", per.join(", "));
            }
        }
        let parts = tokio.map(|t| {
            [
                (g.kib_per_conn <= t.kib_per_conn, "RSS"),
                (g.server_threads <= cores as u64 + 4, "threads"),
                (g.held == g.requested, "held"),
                (g.open_secs <= t.open_secs * 1.0, "open time"),
            ]
        });
        if let Some(missed) = parts.map(|p| {
            p.iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, what)| *what)
                .collect::<Vec<_>>()
        }) && !missed.is_empty()
        {
            let _ = write!(measured, "; missed: {}", missed.join(", "));
        }
        let met = parts.map(|p| p.iter().all(|(ok, _)| *ok));
        return Some(Target {
            bar: format!(
                "Green idle connections: RSS per connection <= tokio's, threads <= cores + 4, all accepted no slower than tokio (median open time) ({cell})"
            ),
            measured,
            value: Some(g.kib_per_conn),
            met,
        });
    }
    None
}

/// Green stopped by SIGTERM while holding idle connections: serve_forever
/// returns < 5 ms and the process is reaped < 100 ms after the signal
/// (medians over the rounds), every connection held; tokio's and
/// threading's exits for comparison.
fn green_exit_target(rows: &[Row]) -> Target {
    for (cell, n) in [("exit-idle-10k", "10,000"), ("exit-idle-1k", "1,000")] {
        let any = rows.iter().find(|r| r.server == "green" && r.cell == cell);
        let Some(any) = any else {
            continue;
        };
        let bar = format!(
            "Green shutdown with {n} idle connections (SIGTERM, `{cell}`): serve_forever returns < 5 ms, the process exits < 100 ms"
        );
        let (Some(g), None) = (any.exit.as_ref(), &any.failure) else {
            return Target {
                bar,
                measured: format!("failed: {}", any.failure.as_deref().unwrap_or("no numbers")),
                value: None,
                met: Some(false),
            };
        };
        let others: Vec<String> = ["tokio", "threading", "std"]
            .iter()
            .filter_map(|s| {
                let x = find(rows, s, cell)?.exit.as_ref()?;
                Some(format!("{s} exits in {:.1} ms ({})", x.exit_ms, x.ended))
            })
            .collect();
        let returned = g.returned_ms.unwrap_or(f64::INFINITY);
        let measured = format!(
            "serve_forever returned in {:.2} ms, `exiting at` line {}, process reaped {:.1} ms after the signal (medians of {} rounds: exits {}); {} of {} held{}",
            returned,
            g.exiting_ms
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms")),
            g.exit_ms,
            g.rounds,
            g.exit_ms_rounds
                .iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            g.held,
            g.requested,
            if others.is_empty() {
                String::new()
            } else {
                format!("; {}", others.join("; "))
            }
        );
        return Target {
            bar,
            measured,
            value: Some(g.exit_ms),
            met: Some(returned < 5.0 && g.exit_ms < 100.0 && g.held == g.requested),
        };
    }
    Target {
        bar: "Green shutdown with 10,000 idle connections (SIGTERM): serve_forever returns < 5 ms, the process exits < 100 ms".to_owned(),
        measured: "not measured in this run".to_owned(),
        value: None,
        met: None,
    }
}

/// 123456.7 -> `123,457`.
pub fn fmt_rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds, readable: `87 us`, `1.25 ms`, `1.02 s`.
pub fn fmt_us(us: f64) -> String {
    if us <= 0.0 {
        "-".into()
    } else if us < 1000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The whole report as markdown.
pub fn markdown(res: &Results, legend: &[(String, String)], svgs: &[(String, String)]) -> String {
    let mut m = String::new();
    let w = &mut m;
    let _ = writeln!(w, "# `bench`: measured results\n");
    let _ = writeln!(
        w,
        "Every number below comes from one run of one command on one machine; rerun it to get \
         yours (about {:.0} s here):\n\n```text\n{}\n```\n",
        res.wall_s, res.command
    );
    let _ = writeln!(w, "## Machine and run\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| date (UTC) | {} |", res.date);
    for (k, v) in &res.machine {
        let _ = writeln!(w, "| {k} | {v} |");
    }
    let _ = writeln!(w, "| load average before | {} |", res.load_before);
    let _ = writeln!(w, "| load average after | {} |", res.load_after);
    let _ = writeln!(
        w,
        "| each load run | {:.1} s warmup (not counted), then {:.1} s measured |",
        res.warmup_s, res.duration_s
    );
    let _ = writeln!(
        w,
        "| repetitions | {} per load, idle and exit cell, servers interleaved; the median is shown (by req/s, by open time; of each exit time) |",
        res.repeat
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Load comes from `loadgen` (this workspace) running inside the `bench` \
         process: 2 event-loop threads, closed loop (each connection has exactly one request \
         outstanding), every echoed byte checked. Each server runs as a child process in a \
         process group of its own, started fresh for every cell and stopped with SIGTERM to \
         the group. The load generator and the server share the same {}, so a server \
         that needs less CPU per request leaves more for the load and shows a higher rate.\n",
        match res.cores {
            1 => "core".to_owned(),
            n => format!("{n} cores"),
        }
    );

    let _ = writeln!(w, "## Servers\n");
    let _ = writeln!(w, "| id | what it is |\n|---|---|");
    for (id, what) in legend {
        let _ = writeln!(w, "| `{id}` | {what} |");
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "## Throughput and latency\n");
    let _ = writeln!(
        w,
        "Columns: **req/s** requests completed per second in the measured window; **p50 / p99** \
         latency of one request (ping-pong: write to last echoed byte; connect: `connect()` to \
         last echoed byte; UDP: send to reply); **server CPU** cores used by the server's \
         process group (its threads, live children, and reaped children) during the window; \
         **CPU us/req** server CPU time per request, in microseconds (steadier from run to \
         run than req/s); **runs** the lowest and highest req/s of the repetitions; \
         **errors** wrong echoes, resets, failed connects; **active** connections that \
         completed at least one request in the window (fewer than asked = the server left \
         some waiting); **vs std** (**vs tls-tokio** in the TLS cells) the median over the \
         rounds of req/s divided by the reference server's in the same round (each round runs \
         every server of the cell once, back to back, so a ratio compares runs that saw the \
         same machine; with one round, the ratio of the two rates).\n"
    );
    let mut cells: Vec<(&str, &str)> = Vec::new();
    for r in res.rows.iter().filter(|r| r.kind == "load") {
        if !cells.iter().any(|c| c.0 == r.cell) {
            cells.push((&r.cell, &r.cell_title));
        }
    }
    for (cell, title) in &cells {
        let _ = writeln!(w, "### `{cell}`: {title}\n");
        let vs = res
            .rows
            .iter()
            .find(|r| r.cell == *cell)
            .map_or("std", |r| r.vs.as_str());
        let _ = writeln!(
            w,
            "| server | req/s | runs (min-max) | p50 | p99 | p99.9 | server CPU | CPU us/req | errors | active | vs {vs} |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in res.rows.iter().filter(|r| r.cell == *cell) {
            if let Some(f) = &r.failure {
                let _ = writeln!(w, "| `{}` | failed: {} | | | | | | | | | |", r.server, f);
                continue;
            }
            let lost = if r.lost > 0 {
                format!(" ({} lost)", r.lost)
            } else {
                String::new()
            };
            let spread = if r.repeats.len() > 1 {
                let lo = r.repeats.iter().copied().fold(f64::MAX, f64::min);
                let hi = r.repeats.iter().copied().fold(0.0, f64::max);
                format!("{}-{}", fmt_rate(lo), fmt_rate(hi))
            } else {
                "-".into()
            };
            let per_req = if r.req_per_s > 0.0 {
                format!("{:.1}", r.server_cpu / r.req_per_s * 1e6)
            } else {
                "-".into()
            };
            let _ = writeln!(
                w,
                "| `{}` | {} | {} | {} | {} | {} | {:.2} | {} | {}{} | {}/{} | {} |",
                r.server,
                fmt_rate(r.req_per_s),
                spread,
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.p999_us),
                r.server_cpu,
                per_req,
                r.errors,
                lost,
                r.active_conns,
                r.conns,
                fmt_ratio(r.ratio),
            );
        }
        let _ = writeln!(w);
    }

    let idle: Vec<&Row> = res.rows.iter().filter(|r| r.kind == "idle").collect();
    if !idle.is_empty() {
        let _ = writeln!(w, "## Idle connections: memory\n");
        let _ = writeln!(
            w,
            "Connections opened one after another (each echoes 64 bytes once, proving it is \
             served), then held open doing nothing. **open time** is how long opening them \
             all took (connect and echo, one at a time), the median of the rounds (each \
             round runs every server of the cell once, back to back), with the fastest and \
             slowest round in **rounds**; **conn/s** is connections held per second of it, \
             and **vs tokio** that rate divided by tokio's. The row's memory figures are from \
             the median round. RSS is VmRSS summed over the server's process group, read \
             before the first connection and while all are held; kernel socket buffers are \
             not part of it. **vs std**: KiB per connection divided by the plain std echo's.\n"
        );
        let _ = writeln!(
            w,
            "| server | cell | held | open time | rounds (min-max) | conn/s | vs tokio | RSS before | RSS held | KiB/conn | threads | vs std |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in idle {
            match (&r.idle, &r.failure) {
                (Some(i), f) => {
                    let spread = if i.open_secs_rounds.len() > 1 {
                        let lo = i.open_secs_rounds.iter().copied().fold(f64::MAX, f64::min);
                        let hi = i.open_secs_rounds.iter().copied().fold(0.0, f64::max);
                        format!("{lo:.2}-{hi:.2} s")
                    } else {
                        "-".into()
                    };
                    let _ = writeln!(
                        w,
                        "| `{}` | `{}` | {}/{}{}{} | {:.2} s | {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} | {} | {} |",
                        r.server,
                        r.cell,
                        i.held,
                        i.requested,
                        i.capped
                            .as_ref()
                            .map(|c| format!(" ({c})"))
                            .unwrap_or_default(),
                        f.as_ref()
                            .map(|f| format!(" (a round failed: {f})"))
                            .unwrap_or_default(),
                        i.open_secs,
                        spread,
                        fmt_rate(i.open_per_s),
                        fmt_ratio(i.open_vs_tokio),
                        i.rss_before_kib as f64 / 1024.0,
                        i.rss_held_kib as f64 / 1024.0,
                        i.kib_per_conn,
                        i.server_threads,
                        fmt_ratio(r.ratio)
                    );
                }
                (None, f) => {
                    let _ = writeln!(
                        w,
                        "| `{}` | `{}` | failed: {} | | | | | | | | | |",
                        r.server,
                        r.cell,
                        f.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        let _ = writeln!(w);
    }

    let exits: Vec<&Row> = res.rows.iter().filter(|r| r.kind == "exit").collect();
    if !exits.is_empty() {
        let _ = writeln!(w, "## Exit with idle connections: SIGTERM\n");
        let _ = writeln!(
            w,
            "The server is started, holds the cell's idle connections (opened as in the idle \
             cells), and gets SIGTERM (to its process group); the connections stay open on \
             the client side until the process is gone. Times are from the signal, medians \
             over the rounds: **serve_forever returned** and **`exiting at`** are read from \
             our server's stderr (`CLOCK_MONOTONIC` in nanoseconds, printed right after \
             `serve_forever` returns and just before `main` returns; `bench baseline echo \
             --report-times`, which stops like `echo_server ADDR STRATEGY --report-times`: \
             `shutdown_on_signals`, then `server_close`); **reaped** is when waitpid \
             returned in `bench` (a helper thread blocked in it), with the fastest and \
             slowest round in **rounds**. std and tokio install no handler: the signal's \
             default action ends them. A round fails if the process is still there 10 s \
             after the signal (it is then killed).\n"
        );
        let _ = writeln!(
            w,
            "| server | cell | held | rounds | serve_forever returned | `exiting at` | reaped | rounds (min-max) | ended |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|--:|---|");
        for r in exits {
            let Some(x) = &r.exit else {
                let _ = writeln!(
                    w,
                    "| `{}` | `{}` | failed: {} | | | | | | |",
                    r.server,
                    r.cell,
                    r.failure.as_deref().unwrap_or("?")
                );
                continue;
            };
            let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
            let spread = if x.exit_ms_rounds.len() > 1 {
                let lo = x.exit_ms_rounds.iter().copied().fold(f64::MAX, f64::min);
                let hi = x.exit_ms_rounds.iter().copied().fold(0.0, f64::max);
                format!("{lo:.1}-{hi:.1} ms")
            } else {
                "-".into()
            };
            let _ = writeln!(
                w,
                "| `{}` | `{}` | {}/{}{} | {} | {} | {} | {:.1} ms | {} | {} |",
                r.server,
                r.cell,
                x.held,
                x.requested,
                r.failure
                    .as_ref()
                    .map(|f| format!(" (a round failed: {f})"))
                    .unwrap_or_default(),
                x.rounds,
                ms(x.returned_ms),
                ms(x.exiting_ms),
                x.exit_ms,
                spread,
                x.ended
            );
        }
        let _ = writeln!(w);
    }

    let sd: Vec<&Row> = res.rows.iter().filter(|r| r.kind == "shutdown").collect();
    if !sd.is_empty() {
        let _ = writeln!(w, "## Shutdown latency\n");
        let _ = writeln!(
            w,
            "Time from `shutdown()` to `serve_forever` returning, on a fresh TCP echo server per \
             run. Idle: one request served, then quiet. Busy: 20 clients connecting, doing 10 \
             round trips of 64 bytes and closing, over and over. Closing the server afterwards \
             (waiting for running requests) is not included. Python's `serve_forever` checks \
             its shutdown flag every `poll_interval` (0.5 s).\n"
        );
        let _ = writeln!(
            w,
            "| server | cell | runs | median | p99 | max | load during runs | how |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|---|");
        for r in sd {
            match (&r.shutdown, &r.failure) {
                (Some(s), _) => {
                    let _ = writeln!(
                        w,
                        "| `{}` | `{}` | {} | {:.3} ms | {:.3} ms | {:.3} ms | {} | {} |",
                        r.server,
                        r.cell,
                        s.runs,
                        s.median_ms,
                        s.p99_ms,
                        s.max_ms,
                        s.load_requests,
                        s.method
                    );
                }
                (None, f) => {
                    let _ = writeln!(
                        w,
                        "| `{}` | `{}` | failed: {} | | | | | |",
                        r.server,
                        r.cell,
                        f.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## Performance targets\n");
    let _ = writeln!(w, "| target | measured | met |\n|---|---|---|");
    for t in &res.targets {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not run",
        };
        let _ = writeln!(w, "| {} | {} | {met} |", t.bar, t.measured);
    }
    let _ = writeln!(w);

    if !svgs.is_empty() {
        let _ = writeln!(w, "## Charts\n");
        for (file, caption) in svgs {
            let _ = writeln!(w, "![{caption}]({file})\n");
        }
    }

    if !res.notes.is_empty() {
        let _ = writeln!(w, "## Notes\n");
        for n in &res.notes {
            let _ = writeln!(w, "- {n}");
        }
        let _ = writeln!(w);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(fmt_rate(1_234_567.4), "1,234,567");
        assert_eq!(fmt_rate(999.0), "999");
        assert_eq!(fmt_us(87.2), "87 us");
        assert_eq!(fmt_us(1250.0), "1.25 ms");
        assert_eq!(fmt_us(0.0), "-");
    }

    #[test]
    fn ratios_and_targets() {
        let row = |server: &str, rate: f64| Row {
            server: server.into(),
            cell: "pp64-c50".into(),
            kind: "load".into(),
            req_per_s: rate,
            ..Row::default()
        };
        let mut rows = vec![row("std", 100.0), row("threading", 96.0)];
        fill_ratios(&mut rows, &[]);
        assert_eq!(rows[1].ratio, Some(0.96));
        assert_eq!(rows[1].vs, "std");
        let t = targets(&rows);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].met, None);
    }

    #[test]
    fn green_idle_and_exit_targets() {
        let idle = |server: &str, open_secs: f64, rounds: &[f64]| Row {
            server: server.into(),
            cell: "idle-10k".into(),
            kind: "idle".into(),
            idle: Some(IdleResult {
                requested: 10_000,
                held: 10_000,
                alive: 10_000,
                open_secs,
                open_per_s: 10_000.0 / open_secs,
                open_secs_rounds: rounds.to_vec(),
                kib_per_conn: if server == "green" { 4.8 } else { 8.9 },
                server_threads: 3,
                ..IdleResult::default()
            }),
            ..Row::default()
        };
        let exit = |server: &str, returned: Option<f64>, exit_ms: f64| Row {
            server: server.into(),
            cell: "exit-idle-10k".into(),
            kind: "exit".into(),
            exit: Some(ExitResult {
                requested: 10_000,
                held: 10_000,
                rounds: 3,
                exit_ms,
                returned_ms: returned,
                exit_ms_rounds: vec![exit_ms; 3],
                ended: "exit status 0".into(),
                ..ExitResult::default()
            }),
            ..Row::default()
        };
        // Green opens slower than tokio: the idle bar is missed for that
        // alone, and says so.
        let mut rows = vec![
            idle("green", 1.3, &[1.3, 1.6, 1.2]),
            idle("tokio", 1.1, &[1.1, 1.2, 1.0]),
            exit("green", Some(0.1), 365.0),
            exit("tokio", None, 160.0),
        ];
        fill_ratios(&mut rows, &[]);
        assert_eq!(rows[0].idle.as_ref().unwrap().open_vs_tokio, Some(0.85));
        let t = targets(&rows);
        let idle_bar = t
            .iter()
            .find(|t| t.bar.starts_with("Green idle"))
            .expect("the idle bar");
        assert_eq!(idle_bar.met, Some(false));
        assert!(
            idle_bar.measured.contains("missed: open time"),
            "{}",
            idle_bar.measured
        );
        assert!(
            idle_bar.measured.contains("0.85x tokio's"),
            "{}",
            idle_bar.measured
        );
        let exit_bar = t
            .iter()
            .find(|t| t.bar.starts_with("Green shutdown with 10,000"))
            .expect("the exit bar");
        assert_eq!(exit_bar.met, Some(false));
        assert_eq!(exit_bar.value, Some(365.0));
        assert!(
            exit_bar.measured.contains("tokio exits in 160.0 ms"),
            "{}",
            exit_bar.measured
        );
        // Within both limits: met.
        rows[2] = exit("green", Some(0.1), 40.0);
        let t = targets(&rows);
        assert!(t
            .iter()
            .any(|t| t.bar.starts_with("Green shutdown") && t.met == Some(true)));
    }

    #[test]
    fn ratios_pair_rounds_and_take_the_median() {
        let row = |server: &str, repeats: &[f64]| Row {
            server: server.into(),
            cell: "tls-pp64-c50".into(),
            kind: "load".into(),
            req_per_s: repeats[repeats.len() / 2],
            repeats: repeats.to_vec(),
            ..Row::default()
        };
        // Round 2 was slow for both: its ratio is still 1.0; the medians of
        // the rates alone would say 100/100 too, but round by round the
        // ratios are 0.5, 1.0, 2.0 -> median 1.0, and a failed round (0)
        // is left out.
        let mut rows = vec![
            row("tls-tokio", &[100.0, 50.0, 100.0, 80.0]),
            row("tls-green", &[50.0, 50.0, 200.0, 0.0]),
        ];
        let refs = [("tls-pp64-c50".to_owned(), "tls-tokio".to_owned())];
        fill_ratios(&mut rows, &refs);
        assert_eq!(rows[1].vs, "tls-tokio");
        assert_eq!(rows[1].ratio, Some(1.0));
        assert_eq!(paired_ratio(&rows[1], &rows[0]), Some((1.0, 3)));
        let t = targets(&rows);
        let green = t
            .iter()
            .find(|t| t.bar.starts_with("TLS: Green"))
            .expect("the TLS Green bar");
        assert_eq!(green.value, Some(1.0));
        assert_eq!(green.met, Some(true));
        assert!(
            green.measured.contains("median of 3 per-round ratios"),
            "{}",
            green.measured
        );
    }
}
