//! A demo server run as a child process (the `demos` binary), read back
//! through its `listening on` lines, signalled and waited for with a
//! deadline.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socketserver::Address;

use super::{fail, STEP};
use crate::listening::parse_listening_line;

/// Waits at most `limit` for `child` to exit (polling every millisecond);
/// `None` if it still runs then (it is left running: kill it or wait
/// again). The one wait-with-a-deadline for child processes of the demos
/// and their tests.
pub fn wait_child(child: &mut Child, limit: Duration) -> io::Result<Option<ExitStatus>> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= end {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// A demo server running as a child process (the `demos` binary), killed
/// if still running when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    listening: Vec<(String, Address)>,
}

impl ServerProcess {
    /// Starts `exe args...` (stdin closed, stderr discarded, `RUST_LOG`
    /// as inherited or `error`) and reads its first `count` stdout lines,
    /// which must be `listening on` lines, within [`STEP`].
    pub fn start(exe: &Path, args: &[&str], count: usize) -> io::Result<ServerProcess> {
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "error");
        }
        let mut server = ServerProcess {
            child: command.spawn()?,
            listening: Vec::new(),
        };
        let stdout = server.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..count {
                let _ = tx.send(lines.next());
            }
            // Keep reading, so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let end = Instant::now() + STEP;
        for _ in 0..count {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(Some(Ok(line))) => match parse_listening_line(&line) {
                    Some(l) => server.listening.push(l),
                    None => return Err(fail(format!("not a `listening on` line: {line:?}"))),
                },
                _ => {
                    return Err(fail(format!(
                        "no `listening on` line from {args:?} within {STEP:?}"
                    )))
                }
            }
        }
        Ok(server)
    }

    /// The `i`-th `listening on` line: scheme and address.
    pub fn listening(&self, i: usize) -> (&str, &Address) {
        let (scheme, addr) = &self.listening[i];
        (scheme, addr)
    }

    /// The address of the `i`-th `listening on` line.
    pub fn address(&self, i: usize) -> &Address {
        &self.listening[i].1
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits at most `limit` for
    /// the process to exit; returns how long that took and the status.
    pub fn signal(&mut self, signal: i32, limit: Duration) -> io::Result<(Duration, ExitStatus)> {
        let t = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| fail("pid out of range"))?;
        // SAFETY: kill(2) on our own child, which has not been waited for
        // (so its pid cannot have been reused); no memory is involved.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        match wait_child(&mut self.child, limit)? {
            Some(status) => Ok((t.elapsed(), status)),
            None => Err(fail(format!(
                "still running {limit:?} after signal {signal}"
            ))),
        }
    }

    /// [`signal`](Self::signal) with SIGTERM.
    pub fn terminate(&mut self, limit: Duration) -> io::Result<(Duration, ExitStatus)> {
        self.signal(libc::SIGTERM, limit)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
