//! Running one command: `/bin/sh -c COMMAND` in a process group of its
//! own, stdout and stderr captured separately and concurrently, a deadline
//! that kills the whole group, and an output cap.
//!
//! One thread does everything with `poll(2)`: it waits on both pipes, on a
//! pidfd that becomes readable when the shell exits (Linux 5.3 and later;
//! elsewhere it checks every 10 ms), and on the client's socket, which
//! reports the client going away: a reset, a normal close or a half-close
//! (the peer's FIN, `POLLRDHUP`), or a cut by the server's shutdown. A command that writes megabytes to both streams never blocks
//! on a full pipe, because both are always being read.
//!
//! The policies:
//!
//! * **Output cap**: each stream keeps its first `max_output` bytes; the
//!   rest is read and discarded, so the command runs to its end (or its
//!   deadline) and its exit code stays meaningful. Reading past the cap is
//!   what keeps a noisy command from blocking on a full pipe.
//! * **Deadline**: at `timeout`, SIGKILL goes to the whole process group
//!   (`kill(-pgid)`), so children and grandchildren die with the shell;
//!   the outcome is [`Exit::TimedOut`].
//! * **Leftovers**: when the shell exits, whatever it left running in its
//!   group (`sleep 100 &`) is killed too. A command's processes do not
//!   outlive it, unless they leave the group on purpose (`setsid`).
//! * **Client gone**: a hang-up, an error or the end of the client's
//!   sending side (it closed or half-closed the connection, or its process
//!   died) on the watched socket kills the group and returns a
//!   `ConnectionAborted` error. A client must therefore keep its sending
//!   side open until the reply has come: the protocol has no "no more
//!   commands" signal that would let a command outlive its client.
//!
//! The group is always killed before the shell is reaped, so the group id
//! (the shell's pid) cannot have been reused by then.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The shell every command runs through.
pub const SHELL: &str = "/bin/sh";

/// How long to keep reading the pipes after the group was killed (or the
/// shell exited): they close at once unless a process that left the group
/// still holds them.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How often to look for the shell's exit when no pidfd is available.
const TICK: Duration = Duration::from_millis(10);

/// Size of one read from a pipe.
const CHUNK: usize = 64 * 1024;

/// The process group of the command running now, for [`on_fatal_signal`]
/// (0: none). Only meaningful in a process that runs one command at a
/// time: a session process of the `Forking` strategy.
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

/// Makes SIGTERM, SIGINT and SIGHUP kill the running command's process
/// group before they end this process. For a session process forked by the
/// `Forking` strategy: the server's shutdown ends it with SIGTERM, a ^C in
/// the server's terminal with SIGINT, and without this the command, alone
/// in its own group, would live on. Never call it in a process that serves
/// several sessions at once (the server's own signal handling would be
/// replaced).
pub fn kill_group_on_fatal_signals() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only calls
        // async-signal-safe functions (kill, raise) and reads an atomic.
        // SA_RESETHAND restores the default action on delivery, so the
        // re-raised signal then ends the process as it would have.
        let r = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    let pgid = RUNNING_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill(2) and raise(3) are async-signal-safe; the group is the
    // running command's, not yet reaped (see Group::reap).
    unsafe {
        if pgid > 0 {
            libc::kill(-pgid, libc::SIGKILL);
        }
        libc::raise(sig);
    }
}

/// Limits for one command.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time before the process group is killed.
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr.
    pub max_output: usize,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shell exited with this status.
    Code(i32),
    /// The shell was killed by this signal (not by us).
    Signal(i32),
    /// The deadline passed; the process group was killed.
    TimedOut,
}

/// What a finished command produced.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub exit: Exit,
    /// The first `max_output` bytes of stdout.
    pub stdout: Vec<u8>,
    /// The first `max_output` bytes of stderr.
    pub stderr: Vec<u8>,
    /// Whether either stream had more than `max_output` bytes.
    pub truncated: bool,
    /// The process group id (the shell's pid).
    pub pgid: i32,
    /// Whether a pipe was still open half a second after the shell
    /// exited (a process that left the group holds it); reading stopped.
    pub pipes_left_open: bool,
}

/// Runs `command` with `/bin/sh -c` in `dir`, stdin from `/dev/null`, in a
/// new process group, within `limits`. If `watch` (the client's socket)
/// hangs up, fails or receives the client's FIN meanwhile, the group is
/// killed and the error kind is `ConnectionAborted`.
///
/// # Errors
///
/// The spawn error (e.g. `dir` does not exist), `ConnectionAborted`, or a
/// failing `poll`/`read`; in every case nothing of the command is left
/// running.
pub fn run(
    command: &str,
    dir: &Path,
    limits: &Limits,
    watch: Option<BorrowedFd<'_>>,
) -> io::Result<Outcome> {
    let mut child = Command::new(SHELL)
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PWD", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let pipes = [
        child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
        child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
    ];
    let mut group = Group::new(child);
    let pgid = group.pgid;
    RUNNING_GROUP.store(pgid, Ordering::SeqCst);
    let deadline = Instant::now() + limits.timeout;
    let pidfd = pidfd_open(pgid);
    let mut streams = pipes.map(|pipe| Capture {
        pipe,
        data: Vec::new(),
        truncated: false,
    });
    let mut exit: Option<Exit> = None;
    let mut drain_until = deadline;
    let mut pipes_left_open = false;

    loop {
        let open = streams.iter().any(|s| s.pipe.is_some());
        let now = Instant::now();
        match exit {
            Some(_) if !open => break,
            Some(_) if now >= drain_until => {
                pipes_left_open = true;
                break;
            }
            None if now >= deadline => {
                group.kill();
                group.reap()?;
                exit = Some(Exit::TimedOut);
                drain_until = now + DRAIN_AFTER_EXIT;
                continue;
            }
            _ => {}
        }

        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let mut slots = [None; 2];
        for (i, s) in streams.iter().enumerate() {
            if let Some(p) = &s.pipe {
                slots[i] = Some(fds.len());
                fds.push(pollfd(p.as_raw_fd(), libc::POLLIN));
            }
        }
        let pid_slot = match (&pidfd, exit) {
            (Some(fd), None) => {
                fds.push(pollfd(fd.as_raw_fd(), libc::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let watch_slot = watch.map(|fd| {
            // Only the end of the client's sending side (POLLRDHUP: its
            // FIN, from a close or a half-close); hang-ups and errors are
            // reported regardless. A pipelined next command (POLLIN) must
            // not count.
            fds.push(pollfd(fd.as_raw_fd(), libc::POLLRDHUP));
            fds.len() - 1
        });
        let mut wait = match exit {
            Some(_) => drain_until - now,
            None => deadline - now,
        };
        if exit.is_none() && pidfd.is_none() {
            wait = wait.min(TICK);
        }
        poll(&mut fds, wait)?;

        if let Some(i) = watch_slot {
            let gone = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
            if fds[i].revents & gone != 0 {
                group.kill();
                group.reap()?;
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the connection was closed while the command ran; its process group was killed",
                ));
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if let Some(slot) = slots[i] {
                if fds[slot].revents != 0 {
                    s.read_once(limits.max_output)?;
                }
            }
        }
        let maybe_exited = match pid_slot {
            Some(i) => fds[i].revents != 0,
            None => exit.is_none(),
        };
        if maybe_exited && group.has_exited()? {
            // Leftovers in the group die with the shell; killed before the
            // reap, while the group id is still ours.
            group.kill();
            let status = group.reap()?;
            exit = Some(match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            });
            drain_until = Instant::now() + DRAIN_AFTER_EXIT;
        }
    }
    let [out, err] = streams;
    Ok(Outcome {
        exit: exit.unwrap_or(Exit::TimedOut),
        truncated: out.truncated || err.truncated,
        stdout: out.data,
        stderr: err.data,
        pgid,
        pipes_left_open,
    })
}

/// One captured stream.
struct Capture {
    pipe: Option<File>,
    data: Vec<u8>,
    truncated: bool,
}

impl Capture {
    /// One `read` (poll said it will not block): keeps what fits under
    /// `cap`, discards the rest, closes the pipe at end of file.
    fn read_once(&mut self, cap: usize) -> io::Result<()> {
        let Some(pipe) = &mut self.pipe else {
            return Ok(());
        };
        let mut buf = [0u8; CHUNK];
        match pipe.read(&mut buf) {
            Ok(0) => self.pipe = None,
            Ok(n) => {
                let room = cap.saturating_sub(self.data.len());
                self.data.extend_from_slice(&buf[..n.min(room)]);
                self.truncated |= n > room;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// The shell process and its group. Dropping it before the shell was
/// reaped kills the group and reaps the shell, so no early return (an
/// error, a panic) leaves anything running.
struct Group {
    child: Child,
    pgid: libc::pid_t,
    reaped: Option<ExitStatus>,
}

impl Group {
    fn new(child: Child) -> Group {
        let pgid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
        Group {
            child,
            pgid,
            reaped: None,
        }
    }

    /// SIGKILL to every process of the group. Only called before the
    /// shell is reaped: its pid (the group id) is still allocated to it,
    /// as a zombie at worst, so the id cannot belong to anyone else.
    fn kill(&self) {
        if self.reaped.is_none() {
            // SAFETY: kill(2) takes no pointers; the group id is ours (see
            // above). ESRCH (every member already gone) is fine.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
    }

    /// Whether the shell has exited, without reaping it (`waitid` with
    /// `WNOWAIT`), so that the group can still be killed safely.
    fn has_exited(&self) -> io::Result<bool> {
        if self.reaped.is_some() {
            return Ok(true);
        }
        loop {
            // SAFETY: siginfo_t is plain data; all-zero is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid, writable siginfo_t; the pid is our
            // own unreaped child.
            let r = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pgid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if r == 0 {
                // SAFETY: waitid filled `info` (si_pid stays 0 when the
                // child has not exited: WNOHANG).
                return Ok(unsafe { info.si_pid() } != 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Waits for the shell (it has exited or was killed).
    fn reap(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        // From here on the group id may be recycled: no signal handler
        // may use it any more.
        let _ = RUNNING_GROUP.compare_exchange(self.pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
        let status = self.child.wait()?;
        self.reaped = Some(status);
        Ok(status)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            self.kill();
            let _ = self.reap();
        }
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` for at most `timeout` (rounded up to whole milliseconds).
fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
    let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: `fds` is a valid, writable slice of pollfd of that length.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A pidfd for our child `pid` (readable once it exits), or `None` where
/// the kernel has no `pidfd_open` (before Linux 5.3, or filtered).
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or
    // -1; no memory is involved.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the syscall just returned this fd to us; nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, max_output: usize) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            max_output,
        }
    }

    #[test]
    fn exit_codes_and_separate_streams() {
        let o = run(
            "echo out; echo err >&2; exit 7",
            Path::new("/"),
            &limits(5000, 1024),
            None,
        )
        .unwrap();
        assert_eq!(o.exit, Exit::Code(7));
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr, b"err\n");
        assert!(!o.truncated);
    }

    #[test]
    fn large_output_on_both_streams_does_not_deadlock() {
        // 4 MiB on each stream, far more than a pipe buffer holds.
        let o = run(
            "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2",
            Path::new("/"),
            &limits(20_000, 8 << 20),
            None,
        )
        .unwrap();
        assert_eq!(o.exit, Exit::Code(0));
        assert_eq!((o.stdout.len(), o.stderr.len()), (4 << 20, 4 << 20));
    }

    #[test]
    fn signals_and_leftovers() {
        let o = run("kill -TERM $$", Path::new("/"), &limits(5000, 1024), None).unwrap();
        assert_eq!(o.exit, Exit::Signal(libc::SIGTERM));
        // A background job holding stdout does not keep the command alive.
        let t = Instant::now();
        let o = run(
            "sleep 30 & echo started",
            Path::new("/"),
            &limits(10_000, 1024),
            None,
        )
        .unwrap();
        assert_eq!(o.exit, Exit::Code(0));
        assert_eq!(o.stdout, b"started\n");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
