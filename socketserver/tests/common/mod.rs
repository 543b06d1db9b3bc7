//! What the tests that run the `echo_server` example as a process share.
//! Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;

/// The built `echo_server` example, next to this test binary's directory
/// (`target/<profile>/deps/<test>` -> `target/<profile>/examples/echo_server`;
/// Cargo builds examples before integration tests).
pub fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/echo_server");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --example echo_server`",
        path.display()
    );
    path
}

/// Every line `child` prints on its (piped) stdout, read on a thread of
/// their own, so that a child never blocks on a full pipe.
pub fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The URL of the first line, `listening on URL`, waited for 10 s at most.
pub fn listening_url(lines: &std::sync::mpsc::Receiver<String>) -> String {
    let line = lines
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("no `listening on` line within 10 s");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("bad first line {line:?}"))
        .to_owned()
}
