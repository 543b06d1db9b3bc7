//! Processes and threads: `fork`, `_exit`, `waitpid`, `kill`, the parent's
//! death signal, thread names and counts, and spawning a program that
//! inherits descriptors (the upgrade).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Renames the calling thread as `top -H`, `ps -L` and /proc show it
/// (`prctl(PR_SET_NAME)`; the kernel keeps the first 15 bytes). Used when a
/// `Threading` thread kept alive takes another request. Best effort.
pub(crate) fn set_thread_name(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
    // from the pointer; `buf` is 16 bytes and its last byte is always 0.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0);
    }
}

/// The result of [`fork`].
pub(crate) enum Fork {
    /// We are the parent; the child has this pid.
    Parent(libc::pid_t),
    /// We are the child.
    Child,
}

/// `fork(2)`.
///
/// The child is a copy of this process with only the calling thread. It must
/// confine itself to what is safe after fork in a multi-threaded program and
/// leave through [`exit_immediately`]; see the `Forking` strategy docs.
pub(crate) fn fork() -> io::Result<Fork> {
    // SAFETY: fork has no memory-safety preconditions of its own. The hazards
    // of forking a multi-threaded process (locks held by threads that do not
    // exist in the child) are documented on `Forking`, detected by
    // `thread_count`, and the child never returns into the caller's stack
    // frames beyond the request it runs: it ends in `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `_exit(2)`: ends the process at once, without running destructors, atexit
/// handlers or flushing stdio buffers inherited from the parent.
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    /// It called exit with this status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// `waitpid(pid, WNOHANG)` (or blocking when `block`): `Ok(None)` while the
/// child is still running.
pub(crate) fn waitpid(pid: libc::pid_t, block: bool) -> io::Result<Option<ChildExit>> {
    let mut status: libc::c_int = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == 0 {
            return Ok(None);
        }
        if r > 0 {
            let exit = if libc::WIFSIGNALED(status) {
                ChildExit::Signal(libc::WTERMSIG(status))
            } else {
                ChildExit::Code(libc::WEXITSTATUS(status))
            };
            return Ok(Some(exit));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Number of threads in this process (from /proc/self/task), if known.
pub(crate) fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Sends `signal` to process `pid`.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill only reads its integer arguments; `pid` is a child of
    // ours that has not been reaped yet, so it cannot have been reused.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// In a forked child: asks the kernel to send `signal` to this process when
/// its parent (precisely: the parent's thread that forked it) ends, so a
/// killed supervisor leaves no child serving on. Returns `false` if the
/// parent is already gone (the child should leave).
pub(crate) fn die_with_parent(signal: i32, parent: libc::pid_t) -> bool {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and reads no memory;
    // getppid has no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0);
        libc::getppid() == parent
    }
}

/// The pid of this process.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// What [`spawn_with_fds`] runs: a program, its arguments and environment,
/// and the descriptors it inherits.
pub(crate) struct Spawn<'a> {
    /// The program's path (execve does not search `PATH`).
    pub(crate) program: &'a std::ffi::CStr,
    /// The arguments, `argv[0]` included.
    pub(crate) argv: &'a [std::ffi::CString],
    /// The environment, `NAME=value` each.
    pub(crate) env: &'a [std::ffi::CString],
    /// Variables set to the child's own pid, which only the child knows
    /// (`LISTEN_PID`).
    pub(crate) pid_vars: &'a [&'a str],
    /// Descriptors the child gets as `first_fd`, `first_fd + 1`, ... in
    /// this order.
    pub(crate) fds: &'a [BorrowedFd<'a>],
    /// Where the inherited descriptors start (socket activation: 3).
    pub(crate) first_fd: RawFd,
}

/// Room for a pid in decimal (`pid_t` is 32 bits: 10 digits at most).
const PID_DIGITS: usize = 20;

/// Starts `spawn.program` as a child process that inherits `spawn.fds` as
/// descriptors `first_fd`, ... (every other descriptor of ours is close-on-exec,
/// as the standard library and this crate open them) and sees
/// `spawn.pid_vars` set to its own pid, as socket activation wants
/// `LISTEN_PID`. Returns the child's pid; the caller reaps it.
///
/// `std::process::Command` cannot do the second part: its environment is
/// fixed before `fork`, and setting a variable after `fork` (in `pre_exec`)
/// would allocate, which a child of a multi-threaded process must not. So
/// every buffer is prepared here first and the child only writes digits
/// into one of them, moves descriptors and calls `execve`, all
/// async-signal-safe. Signals are blocked across `fork`, so that none runs
/// this process's handlers in the child (they write to pipes it shares with
/// us); the child resets caught signals to their default action and
/// unblocks everything just before `execve`.
pub(crate) fn spawn_with_fds(spawn: &Spawn<'_>) -> io::Result<libc::pid_t> {
    use std::os::fd::{FromRawFd, OwnedFd};

    let n = spawn.fds.len() as RawFd;
    let first = spawn.first_fd;
    // Copies above the target range, so that moving one into place never
    // overwrites another's source. Close-on-exec: the child's `dup2` makes
    // the target inheritable.
    let mut sources = Vec::with_capacity(spawn.fds.len());
    for fd in spawn.fds {
        // SAFETY: F_DUPFD_CLOEXEC only reads its integer arguments and
        // returns a new descriptor, which we own from here on.
        let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, first + n) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` was just returned by fcntl: open and owned by no one
        // else.
        sources.push(unsafe { OwnedFd::from_raw_fd(new) });
    }
    let raw_sources: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();

    // Every string the child needs, NUL-terminated, allocated now.
    let mut env: Vec<Vec<u8>> = spawn
        .env
        .iter()
        .filter(|e| {
            let bytes = e.to_bytes();
            !spawn
                .pid_vars
                .iter()
                .any(|v| bytes.starts_with(v.as_bytes()) && bytes.get(v.len()) == Some(&b'='))
        })
        .map(|e| e.as_bytes_with_nul().to_vec())
        .collect();
    let mut pid_slots = Vec::with_capacity(spawn.pid_vars.len());
    for var in spawn.pid_vars {
        let mut entry = format!("{var}=").into_bytes();
        pid_slots.push((env.len(), entry.len()));
        entry.resize(entry.len() + PID_DIGITS + 1, 0);
        env.push(entry);
    }
    let mut env_ptrs: Vec<*mut libc::c_char> =
        env.iter_mut().map(|e| e.as_mut_ptr().cast()).collect();
    // Where each pid goes, as raw pointers into `env`'s buffers (which do
    // not move from here on).
    let slots: Vec<*mut u8> = pid_slots
        .iter()
        // SAFETY: `at` is the length of `NAME=`, within the buffer, which
        // has PID_DIGITS + 1 bytes after it.
        .map(|&(i, at)| unsafe { env_ptrs[i].cast::<u8>().add(at) })
        .collect();
    env_ptrs.push(std::ptr::null_mut());
    let mut argv_ptrs: Vec<*const libc::c_char> = spawn.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    // SAFETY: an all-zero sigset_t is a valid value to fill (plain data).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigfillset and pthread_sigmask write only to the sigset_t
    // values passed, which live on this stack frame for the whole function.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // SAFETY: see the function's docs: between fork and execve the child
    // calls only async-signal-safe functions (getpid, sigaction,
    // sigprocmask, fcntl, dup2, execve, _exit) and writes only into
    // buffers prepared above (its own copies of them), so no lock another
    // thread held at fork time is ever taken and nothing allocates.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only, on values prepared before
        // the fork; every pointer points into this process's copy of the
        // buffers above, valid until execve replaces the image or _exit ends
        // it.
        unsafe {
            child_exec(
                spawn.program.as_ptr(),
                &argv_ptrs,
                &env_ptrs,
                &slots,
                &raw_sources,
                first,
            )
        }
    }
    let fork_error = (pid < 0).then(io::Error::last_os_error);
    // SAFETY: restores the mask saved above; `previous` is initialised.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
    }
    drop(sources);
    match fork_error {
        Some(e) => Err(e),
        None => Ok(pid),
    }
}

/// The child's half of [`spawn_with_fds`]: never returns.
///
/// # Safety
///
/// Called only in the child right after `fork`, with pointers into buffers
/// that stay valid (null-terminated pointer arrays, `slots` pointing at
/// `PID_DIGITS + 1` writable bytes each).
unsafe fn child_exec(
    program: *const libc::c_char,
    argv: &[*const libc::c_char],
    env: &[*mut libc::c_char],
    slots: &[*mut u8],
    sources: &[RawFd],
    first: RawFd,
) -> ! {
    // SAFETY: (the whole body) every call is async-signal-safe; see the
    // function's contract for the pointers.
    unsafe {
        // Caught signals get their default action back (execve would do
        // it, but a signal delivered before execve would run our handler);
        // ignored ones stay ignored, as execve keeps them.
        // 64 signals on Linux (fewer elsewhere: sigaction then fails with
        // EINVAL, harmlessly).
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        // The pid, in decimal, NUL-terminated, into each slot.
        let mut digits = [0u8; PID_DIGITS];
        let mut pid = libc::getpid() as u64;
        let mut len = 0;
        loop {
            digits[PID_DIGITS - 1 - len] = b'0' + (pid % 10) as u8;
            len += 1;
            pid /= 10;
            if pid == 0 || len == PID_DIGITS {
                break;
            }
        }
        for &slot in slots {
            std::ptr::copy_nonoverlapping(digits.as_ptr().add(PID_DIGITS - len), slot, len);
            *slot.add(len) = 0;
        }
        // The inherited descriptors, into place: dup2 clears close-on-exec
        // on the copy. The sources are all above the targets.
        for (i, &src) in sources.iter().enumerate() {
            if libc::dup2(src, first + i as RawFd) < 0 {
                libc::_exit(127);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(program, argv.as_ptr(), env.as_ptr().cast());
        libc::_exit(127)
    }
}
