//! A `bench` run end to end, as CI's smoke test: `--smoke` (every cell and
//! every server once, two or three servers per cell, 0.4 s windows) must
//! give numbers in every cell, zero errors, JSON that parses, the markdown
//! report and the charts. No timing is asserted: the machine is shared and
//! noisy; the run's wall time is printed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `bench` binary built for this test.
fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bench"))
}

/// The whole run must end within this: a generous bound (about a minute on
/// 2 saturated cores), to catch a hang.
const LIMIT: Duration = Duration::from_secs(300);

#[test]
#[ignore = "a whole bench run (every cell, every server) that loads the machine: CI runs it \
            as a step of its own (`cargo test -p bench --test compare -- --ignored`)"]
fn smoke_run_fills_every_cell_without_errors() {
    let dir = std::env::temp_dir().join(format!("bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let markdown = dir.join("results.md");
    let mut child = Command::new(exe())
        .args(["--smoke", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .arg("--svg")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let progress = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bench --smoke still running after {LIMIT:?}; progress so far:\n{}",
                progress.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = progress.join().unwrap();
    eprintln!("bench --smoke took {:.1} s", start.elapsed().as_secs_f64());
    assert!(status.success(), "exit status {status}; progress:\n{log}");

    let text = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("the JSON parses");
    let rows = v["rows"].as_array().expect("rows");
    let cells: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["cell"].as_str()).collect();
    for cell in [
        "pp64-c1",
        "pp64-c50",
        "pp64-c500",
        "pp16k-c50",
        "connect-c8",
        "udp64-c8",
        "tls-pp64-c50",
        "tls-handshake-c8",
        "idle-1k",
        "exit-idle-1k",
        "shutdown-idle",
        "shutdown-busy",
    ] {
        assert!(cells.contains(cell), "no row for {cell}: {cells:?}");
    }
    for r in rows {
        let name = format!("{}/{}", r["server"], r["cell"]);
        assert!(
            r.get("failure").is_none(),
            "{name} failed: {}",
            r["failure"]
        );
        assert_eq!(r["errors"].as_u64(), Some(0), "{name}: errors\n{log}");
        match r["kind"].as_str() {
            Some("load") => {
                assert!(r["req_per_s"].as_f64().unwrap() > 0.0, "{name}: no req/s");
                assert!(r["p50_us"].as_f64().unwrap() > 0.0, "{name}: no latency");
            }
            Some("idle") => {
                assert!(
                    r["idle"]["held"].as_u64().unwrap() > 0,
                    "{name}: nothing held"
                );
                assert!(
                    r["idle"]["rss_held_kib"].as_u64().unwrap() > 0,
                    "{name}: no RSS"
                );
            }
            Some("exit") => {
                assert!(
                    r["exit"]["held"].as_u64().unwrap() > 0,
                    "{name}: nothing held"
                );
                assert!(
                    r["exit"]["exit_ms"].as_f64().unwrap() > 0.0,
                    "{name}: no exit time"
                );
                if r["server"] == "green" {
                    assert!(
                        r["exit"]["returned_ms"].as_f64().is_some(),
                        "{name}: no serve_forever time"
                    );
                }
            }
            Some("shutdown") => {
                assert!(
                    r["shutdown"]["median_ms"].as_f64().unwrap() > 0.0,
                    "{name}: no latency"
                );
            }
            other => panic!("{name}: unexpected kind {other:?}"),
        }
    }
    // Our strategies and the baselines are always there.
    for s in [
        "synchronous",
        "threading",
        "pool",
        "forking",
        "prefork",
        "green",
        "std",
        "tokio",
        "tls-threading",
        "tls-green",
        "tls-tokio",
    ] {
        assert!(
            rows.iter().any(|r| r["server"] == s),
            "no row for server {s}"
        );
    }
    assert!(v["targets"].as_array().is_some_and(|t| !t.is_empty()));
    let md = std::fs::read_to_string(&markdown).unwrap();
    assert!(md.contains("| server | req/s |"), "{md}");
    // TLS cells are divided by tokio-rustls, round by round.
    assert!(md.contains("| vs tls-tokio |"), "{md}");
    let tls = rows
        .iter()
        .find(|r| r["server"] == "tls-green" && r["cell"] == "tls-handshake-c8")
        .expect("a tls-green handshake row");
    assert_eq!(tls["vs"], "tls-tokio");
    assert!(tls["ratio"].as_f64().is_some_and(|x| x > 0.0), "{tls}");
    assert!(dir.join("throughput.svg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
