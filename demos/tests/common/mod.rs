//! Helpers for the demos tests: a deadline on every wait, and the built
//! `demos` binary run as a child process with a deadline.

#![allow(dead_code, unused_imports)] // each test file uses a different part

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use socketserver_tests::{wait_until, within, DEADLINE};

/// The `demos` binary built for these tests.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_demos"))
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `demos args...` with `stdin` as its input; kills it and panics if
/// it runs longer than `limit`.
pub fn run_demos(args: &[&str], stdin: &[u8], limit: Duration) -> Output {
    let (status, stdout, stderr) = run_demos_bytes(args, stdin, limit);
    Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr,
    }
}

/// [`run_demos`] with stdout as bytes.
pub fn run_demos_bytes(
    args: &[&str],
    stdin: &[u8],
    limit: Duration,
) -> (ExitStatus, Vec<u8>, String) {
    let mut child = Command::new(exe())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demos");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = r.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let Some(status) = demos::showcase::drive::wait_child(&mut child, limit).unwrap() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("demos {args:?} still running after {limit:?}");
    };
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    (status, out.join().unwrap(), stderr)
}
