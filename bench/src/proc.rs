//! Server child processes of a `bench` run: each in a process group of
//! its own, its `listening on` lines read back, its CPU time and memory read
//! from /proc for the whole group, and stopped with SIGTERM to the group
//! (SIGKILL after a deadline).

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait for a server's `listening on` lines.
const START_LIMIT: Duration = Duration::from_secs(10);

/// `listening on tcp://127.0.0.1:4000` (or `udp://`): the scheme and the
/// address.
fn parse_listening_line(line: &str) -> Option<(String, SocketAddr)> {
    let url = line.trim_end().strip_prefix("listening on ")?;
    let (scheme, addr) = url.split_once("://")?;
    Some((scheme.to_owned(), addr.parse().ok()?))
}

/// Clock ticks per second of /proc/PID/stat times.
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A server running as a child process in its own process group.
pub struct ServerChild {
    child: Child,
    /// The addresses of its `listening on` lines, in order.
    pub addrs: Vec<(String, SocketAddr)>,
    stderr_path: PathBuf,
    stopped: bool,
}

impl ServerChild {
    /// Starts `program args...` in a new process group with `env` set,
    /// stdin closed, stdout read for `lines` `listening on` lines, stderr to
    /// a temporary file (shown if the server fails).
    pub fn start(
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        lines: usize,
    ) -> io::Result<ServerChild> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_path =
            std::env::temp_dir().join(format!("bench-compare-{}-{n}.log", std::process::id()));
        let stderr = fs::File::create(&stderr_path)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut it = BufReader::new(stdout).lines();
            for _ in 0..lines {
                let _ = tx.send(it.next());
            }
            for _ in it {} // never let the server block on a full pipe
        });
        let mut server = ServerChild {
            child,
            addrs: Vec::new(),
            stderr_path,
            stopped: false,
        };
        let end = Instant::now() + START_LIMIT;
        for _ in 0..lines {
            let line = rx.recv_timeout(end.saturating_duration_since(Instant::now()));
            let parsed = match &line {
                Ok(Some(Ok(l))) => parse_listening_line(l)
                    .ok_or_else(|| format!("not a `listening on` line: {l:?}")),
                _ => Err(format!("no `listening on` line within {START_LIMIT:?}")),
            };
            match parsed {
                Ok(l) => server.addrs.push(l),
                Err(msg) => {
                    let tail = server.stderr_tail();
                    server.stop(Duration::from_secs(1));
                    return Err(io::Error::other(format!(
                        "{program} {}: {msg}{tail}",
                        args.join(" ")
                    )));
                }
            }
        }
        Ok(server)
    }

    /// Starts `program args...` as [`start`](Self::start) does, for a
    /// server that prints nothing: it was told to listen on TCP `addr`, and
    /// is ready once a connection to it succeeds (at most `START_LIMIT`).
    pub fn start_at(program: &str, args: &[String], addr: SocketAddr) -> io::Result<ServerChild> {
        let mut server = ServerChild::start(program, args, &[], 0)?;
        let end = Instant::now() + START_LIMIT;
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                server.addrs.push(("tcp".to_owned(), addr));
                return Ok(server);
            }
            if server.exited() || Instant::now() >= end {
                let tail = server.stderr_tail();
                server.stop(Duration::from_secs(1));
                return Err(io::Error::other(format!(
                    "{program} {}: not accepting connections on {addr} within \
                     {START_LIMIT:?}{tail}",
                    args.join(" ")
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first address of scheme `scheme`.
    pub fn addr(&self, scheme: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(s, _)| s == scheme)
            .map(|(_, a)| *a)
    }

    /// The process id (and process group id).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the server process has exited already.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines the server wrote to stderr, as `: ...` (empty if none).
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        if lines.is_empty() {
            String::new()
        } else {
            let mut l = lines;
            l.reverse();
            format!(" (stderr: {})", l.join(" | "))
        }
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `sig` to the group, reading `CLOCK_MONOTONIC` just before,
    /// and waits (blocked in waitpid on a helper thread, so the reaping is
    /// noticed at once) up to `deadline` for the leader to be reaped; past
    /// it, SIGKILL to the group. Returns the clock read before the signal,
    /// and, if it ended in time, the clock read right after it was reaped
    /// with its exit status. Whatever else is left in the group is killed
    /// afterwards either way.
    pub fn signal_and_reap(
        &mut self,
        sig: i32,
        deadline: Duration,
    ) -> (u64, Option<(u64, std::process::ExitStatus)>) {
        let pgid = self.pid();
        if self.stopped {
            return (crate::clock::mono_ns(), None);
        }
        self.stopped = true;
        let child = &mut self.child;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let (sent, reaped) = thread::scope(|scope| {
            scope.spawn(move || {
                let _ = ready_tx.send(());
                let st = child.wait();
                let _ = tx.send((crate::clock::mono_ns(), st));
            });
            // Let the helper get into waitpid before the signal goes.
            let _ = ready.recv_timeout(Duration::from_secs(1));
            thread::sleep(Duration::from_millis(2));
            let sent = crate::clock::mono_ns();
            kill_group(pgid, sig);
            let reaped = match rx.recv_timeout(deadline) {
                Ok((at, Ok(st))) => Some((at, st)),
                Ok((_, Err(_))) => None,
                Err(_) => {
                    kill_group(pgid, libc::SIGKILL);
                    None
                }
            };
            (sent, reaped)
        });
        kill_group(pgid, libc::SIGKILL);
        (sent, reaped)
    }

    /// CPU time of the whole group so far.
    pub fn cpu(&self) -> Duration {
        group_cpu(self.pid())
    }

    /// Resident memory of the whole group, KiB.
    pub fn rss_kib(&self) -> u64 {
        group_rss_kib(self.pid())
    }

    /// SIGTERM to the group, then SIGKILL to the group if the leader has not
    /// exited within `deadline`. Returns how long it took.
    pub fn stop(&mut self, deadline: Duration) -> Duration {
        let start = Instant::now();
        if self.stopped {
            return Duration::ZERO;
        }
        self.stopped = true;
        let pgid = self.pid();
        kill_group(pgid, libc::SIGTERM);
        let end = start + deadline;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= end => {
                    kill_group(pgid, libc::SIGKILL);
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(2)),
            }
        }
        // Whatever is left in the group (forked children) goes too.
        kill_group(pgid, libc::SIGKILL);
        start.elapsed()
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        let _ = fs::remove_file(&self.stderr_path);
    }
}

fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group; the
        // group is one we created (process_group(0) on our own child).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The fields of /proc/PID/stat after the command name.
fn stat_fields(pid: i32) -> Option<Vec<u64>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .skip(1) // state
            .map(|f| f.parse::<i64>().unwrap_or(0) as u64)
            .collect(),
    )
}

/// Processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            // After the state: ppid, pgrp.
            stat_fields(pid).is_some_and(|f| f.get(1).copied() == Some(pgid as u64))
        })
        .collect()
}

/// utime + stime + cutime + cstime of every process in group `pgid`: the
/// live ones' own time plus what their reaped children used.
pub fn group_cpu(pgid: i32) -> Duration {
    let mut ticks = 0u64;
    for pid in group_members(pgid) {
        if let Some(f) = stat_fields(pid) {
            // Fields after the state, from 0 (stat(5) numbers them from 1
            // with the pid, so subtract 4): 10 utime, 11 stime, 12 cutime,
            // 13 cstime.
            ticks += f.get(10..14).map_or(0, |t| t.iter().sum());
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec())
}

/// `VmRSS` (KiB) of `pid`.
pub fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// `VmRSS` of every process in group `pgid`, summed (KiB).
pub fn group_rss_kib(pgid: i32) -> u64 {
    group_members(pgid).into_iter().map(rss_kib).sum()
}

/// Threads of `pid` (from /proc/PID/status).
pub fn threads(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_group_is_found_and_costs_cpu() {
        // SAFETY: getpgrp has no preconditions.
        let pgid = unsafe { libc::getpgrp() };
        assert!(group_members(pgid).contains(&(std::process::id() as i32)));
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(rss_kib(std::process::id() as i32) > 0);
        assert!(threads(std::process::id() as i32) >= 1);
        let _ = group_cpu(pgid);
    }

    #[test]
    fn listening_lines_parse() {
        let (s, a) = parse_listening_line("listening on tcp://127.0.0.1:4000\n").unwrap();
        assert_eq!(
            (s.as_str(), a.to_string().as_str()),
            ("tcp", "127.0.0.1:4000")
        );
        let (s, a) = parse_listening_line("listening on udp://[::1]:53").unwrap();
        assert_eq!((s.as_str(), a.port()), ("udp", 53));
        assert!(parse_listening_line("serving on tcp://127.0.0.1:1").is_none());
        assert!(parse_listening_line("listening on tcp://nowhere").is_none());
    }
}
