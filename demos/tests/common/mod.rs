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

/// A `demos ... serve` running as a child process in a process group of
/// its own (so that an upgrade's successors are in it too): its stdout
/// lines arrive on `lines`; every process of the group is killed on drop,
/// whatever the test's outcome.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts `demos args...` with `envs` added to its environment.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> ServerProcess {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe())
            .args(args)
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn demos");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&stderr);
        thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.push_str(&line);
                s.push('\n');
            }
        });
        ServerProcess {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line (panics after `DEADLINE`).
    pub fn next_line(&self) -> String {
        self.lines.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "no line from the server within {DEADLINE:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// The address of the next `listening on` line.
    pub fn next_listening(&self) -> socketserver::Address {
        let line = self.next_line();
        demos::listening::parse_listening_line(&line)
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
            .1
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sends `signal` (a name for kill(1): TERM, USR2) to `pid`.
    pub fn signal(pid: u32, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot send SIG{signal} to {pid}");
    }

    /// Waits for the first process (our child) to exit; its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        demos::showcase::drive::wait_child(&mut self.child, DEADLINE)
            .unwrap()
            .unwrap_or_else(|| panic!("the server did not exit within {DEADLINE:?}"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}
