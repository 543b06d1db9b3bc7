//! What the tests that run the `echo_server` example as a process share.
//! The test files (modules of `all/main.rs`) use part of it each.
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

/// The example run as the leader of a process group of its own, with its
/// stdout and stderr read on threads (its successors, after an upgrade,
/// write to the same pipes). Dropped: the whole group is killed (SIGKILL),
/// successors included, and the first process reaped.
pub struct Group {
    pub child: std::process::Child,
    /// The port of its `listening on` line.
    pub port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Group {
    /// Starts `echo_server args` (`RUST_LOG=info`: the upgrade and drain
    /// lines are what the tests read).
    pub fn start(args: &[&str]) -> Group {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut child = Command::new(example())
            .args(args)
            .env("RUST_LOG", "info")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let text = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = text
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                text.push_str(&line);
                text.push('\n');
            }
        });
        let url = listening_url(&stdout_lines(&mut child));
        let port = url.rsplit(':').next().unwrap().parse().unwrap();
        Group {
            child,
            port,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -SIGNAL PID` (a process group: `-PGID`), through the `kill`
    /// command, keeping the tests free of unsafe.
    pub fn kill(target: &str, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), "--", target])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{signal} {target}");
    }

    /// Sends `signal` (`TERM`, `USR2`...) to the first process.
    pub fn signal(&self, signal: &str) {
        Group::kill(&self.pid().to_string(), signal);
    }

    /// Sends `signal` to the whole group.
    pub fn signal_group(&self, signal: &str) {
        Group::kill(&format!("-{}", self.pid()), signal);
    }

    /// Its exit status, if it exits within `limit`.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Whether the group writes `needle` to stderr within `limit` (its
    /// lines are read on a thread: one written just before a process exits
    /// may come a moment later).
    pub fn stderr_shows(&self, needle: &str, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while !self.stderr().contains(needle) {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }

    /// What the group wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The children of `pid` (zombies included).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` exists (a zombie counts: it was not reaped).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A connection to a `--tell-pid` server on 127.0.0.1:`port`: the pid
/// that serves it, after one echoed line (the server's question answered).
pub struct Client {
    pub stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
    pub pid: u32,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        use std::io::BufRead;
        let timeout = std::time::Duration::from_secs(5);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let pid = line
            .trim()
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("greeting {line:?}"),
                )
            })?;
        let mut client = Client {
            stream,
            reader,
            pid,
        };
        client.exchange("hello\n")?;
        Ok(client)
    }

    /// Sends `msg`, reads it back.
    pub fn exchange(&mut self, msg: &str) -> std::io::Result<()> {
        use std::io::{Read, Write};
        self.stream.write_all(msg.as_bytes())?;
        let mut back = vec![0; msg.len()];
        self.reader.read_exact(&mut back)?;
        if back != msg.as_bytes() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("sent {msg:?}, got {:?}", String::from_utf8_lossy(&back)),
            ));
        }
        Ok(())
    }

    /// Whether the server closed the connection within `limit` (a read
    /// returns end-of-file or fails with a reset).
    pub fn closed_within(&mut self, limit: std::time::Duration) -> bool {
        use std::io::Read;
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        let closed = match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        closed
    }
}

/// The parent of `pid`, if it runs.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The successor the first process of `group` started on SIGUSR2: its
/// child that inherited a socket (`LISTEN_FDS` in its environment).
pub fn successor_of(group: &Group) -> Option<u32> {
    children_of(group.pid()).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|v| v.starts_with(b"LISTEN_FDS="))
        })
    })
}

/// After SIGUSR2 to the first process of `group` (or its whole group):
/// waits (at most 10 s) until a new connection is served by its successor
/// or one of the successor's children; returns that connection.
pub fn wait_for_successor(group: &Group) -> Client {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(successor) = successor_of(group) {
            if let Ok(c) = Client::connect(group.port) {
                if c.pid == successor || parent_of(c.pid) == Some(successor) {
                    return c;
                }
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "no successor serving 10 s after SIGUSR2; stderr: {}",
            group.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The processes of process group `pgid`, zombies included.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(2)?
                        .parse()
                        .ok()
                })
                == Some(pgid)
        })
        .collect()
}
