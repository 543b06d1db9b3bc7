//! Where each request of a timeline goes in its picture: one lane per
//! thread, process or green worker that ran requests, rows inside a lane
//! for connections whose lives overlap there, and per request a wait bar
//! (sent, not yet started) and a service bar (started to answered).
//!
//! Pure functions of the records, so that the shapes can be tested without
//! running a server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request as the client and the server saw it. Times are
/// microseconds of `CLOCK_MONOTONIC` (the same clock in every process),
/// relative to the start of the scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Which client (connection), 0-based.
    pub client: usize,
    /// Which request of that client, 0-based.
    pub seq: usize,
    /// When the client sent the request.
    pub sent_us: u64,
    /// When the server accepted the connection (`verify_request`).
    pub accept_us: u64,
    /// When the handler had read the request.
    pub start_us: u64,
    /// When the handler was about to write its answer.
    pub end_us: u64,
    /// What ran it: `PID|THREAD`, where THREAD is a green worker's name
    /// (`green 0`) or a thread id (`ThreadId(7)`).
    pub worker: String,
}

/// One bar pair of the picture, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Index into [`Layout::lanes`].
    pub lane: usize,
    /// Row inside the lane, 0-based.
    pub row: usize,
    /// The client and request it shows.
    pub client: usize,
    /// Which request of the client.
    pub seq: usize,
    /// From sent to started (may be empty).
    pub wait: (f64, f64),
    /// From started to answered.
    pub service: (f64, f64),
    /// When the connection was accepted, on the client's first request.
    pub accept: Option<f64>,
}

/// One lane: a thread, process or green worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// What the picture calls it (`thread 2`, `process 3`, `green 0`,
    /// `process 1, green 1`, `server loop`).
    pub label: String,
    /// The worker id it stands for (`PID|THREAD`).
    pub worker: String,
    /// How many rows it needs.
    pub rows: usize,
}

/// A picture's content, ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Lanes in order of their first request's start.
    pub lanes: Vec<Lane>,
    /// One per record.
    pub bars: Vec<Bar>,
    /// The end of the last request, in milliseconds.
    pub end_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Lays `records` out. Lanes are ordered by when they first started a
/// request; inside a lane each connection gets the first row free at its
/// first request's send (so connections served one after another share a
/// row, and those that overlap, waiting or served, get a row each).
pub fn layout(records: &[Record]) -> Layout {
    // Lanes in order of first start.
    let mut first_start: BTreeMap<&str, u64> = BTreeMap::new();
    for r in records {
        let e = first_start.entry(r.worker.as_str()).or_insert(r.start_us);
        *e = (*e).min(r.start_us);
    }
    let mut workers: Vec<(&str, u64)> = first_start.into_iter().collect();
    workers.sort_by_key(|&(w, t)| (t, w));
    let labels = labels(&workers.iter().map(|w| w.0).collect::<Vec<_>>());
    let lane_of: BTreeMap<&str, usize> =
        workers.iter().enumerate().map(|(i, w)| (w.0, i)).collect();

    // Connections per lane: (first sent, last end), in order of first start.
    // A connection served by two workers (possible with kept-alive threads
    // only across connections, never inside one) counts in each.
    let mut spans: BTreeMap<(usize, usize), (u64, u64, u64)> = BTreeMap::new();
    for r in records {
        let key = (lane_of[r.worker.as_str()], r.client);
        let e = spans
            .entry(key)
            .or_insert((r.sent_us, r.end_us, r.start_us));
        e.0 = e.0.min(r.sent_us);
        e.1 = e.1.max(r.end_us);
        e.2 = e.2.min(r.start_us);
    }
    let mut by_lane: BTreeMap<usize, Vec<(usize, u64, u64, u64)>> = BTreeMap::new();
    for (&(lane, client), &(from, to, start)) in &spans {
        by_lane
            .entry(lane)
            .or_default()
            .push((client, from, to, start));
    }
    let mut row_of: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut rows = vec![0usize; workers.len()];
    for (lane, mut conns) in by_lane {
        conns.sort_by_key(|c| (c.3, c.0));
        let mut row_ends: Vec<u64> = Vec::new();
        for (client, from, to, _) in conns {
            let row = match row_ends.iter().position(|&end| end <= from) {
                Some(r) => r,
                None => {
                    row_ends.push(0);
                    row_ends.len() - 1
                }
            };
            row_ends[row] = to;
            row_of.insert((lane, client), row);
        }
        rows[lane] = row_ends.len();
    }

    let mut bars: Vec<Bar> = records
        .iter()
        .map(|r| {
            let lane = lane_of[r.worker.as_str()];
            Bar {
                lane,
                row: row_of[&(lane, r.client)],
                client: r.client,
                seq: r.seq,
                wait: (ms(r.sent_us), ms(r.start_us.max(r.sent_us))),
                service: (ms(r.start_us), ms(r.end_us.max(r.start_us))),
                accept: (r.seq == 0).then(|| ms(r.accept_us)),
            }
        })
        .collect();
    bars.sort_by_key(|a| (a.lane, a.row, a.client, a.seq));
    let end_ms = records.iter().map(|r| ms(r.end_us)).fold(0.0, f64::max);
    Layout {
        lanes: workers
            .iter()
            .zip(labels)
            .zip(rows)
            .map(|((w, label), rows)| Lane {
                label,
                worker: w.0.to_owned(),
                rows,
            })
            .collect(),
        bars,
        end_ms,
    }
}

/// Names for workers `PID|THREAD`, in the order given: green workers by
/// their thread name, other threads and processes numbered from 1 in order,
/// `process k, ...` when there are several processes, and `server loop`
/// when one thread of one process ran everything.
fn labels(workers: &[&str]) -> Vec<String> {
    let split = |w: &str| -> (String, String) {
        match w.split_once('|') {
            Some((p, t)) => (p.to_owned(), t.to_owned()),
            None => (String::new(), w.to_owned()),
        }
    };
    let mut pids: Vec<String> = Vec::new();
    let mut threads_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in workers {
        let (p, t) = split(w);
        if !pids.contains(&p) {
            pids.push(p.clone());
        }
        let ts = threads_of.entry(p).or_default();
        if !ts.contains(&t) {
            ts.push(t);
        }
    }
    let mut thread_no = 0;
    workers
        .iter()
        .map(|w| {
            let (p, t) = split(w);
            let threads = &threads_of[&p];
            let thread_part = if t.starts_with("green") {
                Some(t.clone())
            } else if threads.len() > 1 || pids.len() == 1 {
                thread_no += 1;
                Some(format!("thread {thread_no}"))
            } else {
                None
            };
            let process_part = (pids.len() > 1).then(|| {
                let k = pids.iter().position(|x| *x == p).unwrap_or(0) + 1;
                format!("process {k}")
            });
            match (process_part, thread_part) {
                (Some(p), Some(t)) => format!("{p}, {t}"),
                (Some(p), None) => p,
                (None, Some(t)) if workers.len() == 1 && !t.starts_with("green") => {
                    "server loop".to_owned()
                }
                (None, Some(t)) => t,
                (None, None) => "server loop".to_owned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of `client` (`seq`), sent at `sent` ms, served by
    /// `worker` from `start` for 20 ms, its connection accepted at
    /// `accept` ms.
    fn rec(client: usize, seq: usize, sent: u64, accept: u64, start: u64, worker: &str) -> Record {
        Record {
            client,
            seq,
            sent_us: sent * 1000,
            accept_us: accept * 1000,
            start_us: start * 1000,
            end_us: (start + 20) * 1000,
            worker: worker.to_owned(),
        }
    }

    /// `clients` clients of `n` requests each, served one request after
    /// another on the worker `worker(client)` from `begin(client)` ms.
    fn closed_loop(
        clients: usize,
        n: usize,
        worker: impl Fn(usize) -> String,
        begin: impl Fn(usize) -> u64,
    ) -> Vec<Record> {
        let mut v = Vec::new();
        for c in 0..clients {
            for s in 0..n {
                let start = begin(c) + 20 * s as u64;
                let sent = if s == 0 { 0 } else { start };
                v.push(rec(c, s, sent, begin(c), start, &worker(c)));
            }
        }
        v
    }

    #[test]
    fn synchronous_is_one_lane_with_a_row_per_waiting_connection() {
        // Four clients all sent at 0; the single thread serves them in turn.
        let recs = closed_loop(4, 2, |_| "100|ThreadId(1)".into(), |c| 40 * c as u64);
        let l = layout(&recs);
        assert_eq!(l.lanes.len(), 1);
        assert_eq!(l.lanes[0].label, "server loop");
        assert_eq!(
            l.lanes[0].rows, 4,
            "every connection waits from 0: a row each"
        );
        assert_eq!(l.end_ms, 160.0);
        let last = l.bars.iter().find(|b| b.client == 3 && b.seq == 0).unwrap();
        assert_eq!(last.row, 3);
        assert_eq!(last.wait, (0.0, 120.0));
        assert_eq!(last.service, (120.0, 140.0));
        assert_eq!(last.accept, Some(120.0));
        let second = l.bars.iter().find(|b| b.client == 3 && b.seq == 1).unwrap();
        assert_eq!(second.accept, None);
        assert_eq!(
            second.wait,
            (140.0, 140.0),
            "a closed loop waits for nothing"
        );
    }

    #[test]
    fn a_pool_shows_a_lane_per_worker_and_queued_connections_below_the_first() {
        // Two workers, four clients: clients 0 and 1 at once, 2 and 3 after.
        let recs = closed_loop(
            4,
            2,
            |c| format!("100|ThreadId({})", 2 + c % 2),
            |c| if c < 2 { 0 } else { 40 },
        );
        let l = layout(&recs);
        let labels: Vec<&str> = l.lanes.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(labels, ["thread 1", "thread 2"]);
        assert!(l.lanes.iter().all(|x| x.rows == 2), "{:?}", l.lanes);
        let queued = l.bars.iter().find(|b| b.client == 2 && b.seq == 0).unwrap();
        assert_eq!((queued.lane, queued.row), (0, 1));
        assert_eq!(queued.wait, (0.0, 40.0));
    }

    #[test]
    fn connections_served_one_after_another_share_a_row() {
        // One worker; client 1 connects only after client 0 is done.
        let mut recs = closed_loop(1, 2, |_| "7|ThreadId(3)".into(), |_| 0);
        recs.push(rec(1, 0, 45, 45, 45, "7|ThreadId(3)"));
        let l = layout(&recs);
        assert_eq!(l.lanes[0].rows, 1);
        assert!(l.bars.iter().all(|b| b.row == 0));
    }

    #[test]
    fn processes_and_green_workers_are_named_and_ordered_by_first_start() {
        let recs = vec![
            rec(0, 0, 0, 0, 5, "300|ThreadId(1)"),
            rec(1, 0, 0, 0, 1, "200|ThreadId(1)"),
        ];
        let l = layout(&recs);
        let labels: Vec<&str> = l.lanes.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(labels, ["process 1", "process 2"]);
        assert_eq!(l.lanes[0].worker, "200|ThreadId(1)");

        let recs = vec![
            rec(0, 0, 0, 0, 0, "9|green 1"),
            rec(1, 0, 0, 0, 0, "9|green 0"),
            rec(2, 0, 0, 0, 3, "9|green 0"),
        ];
        let l = layout(&recs);
        let labels: Vec<&str> = l.lanes.iter().map(|x| x.label.as_str()).collect();
        assert_eq!(labels, ["green 0", "green 1"]);
        assert_eq!(l.lanes[0].rows, 2, "two overlapping coroutines on green 0");

        let recs = vec![
            rec(0, 0, 0, 0, 0, "9|green 0"),
            rec(1, 0, 0, 0, 1, "8|green 1"),
        ];
        let labels: Vec<String> = layout(&recs).lanes.into_iter().map(|x| x.label).collect();
        assert_eq!(labels, ["process 1, green 0", "process 2, green 1"]);
    }

    #[test]
    fn no_records_is_an_empty_layout() {
        let l = layout(&[]);
        assert!(l.lanes.is_empty() && l.bars.is_empty());
        assert_eq!(l.end_ms, 0.0);
    }
}
