//! The only module with `unsafe`: thin wrappers over the OS calls the standard
//! library does not offer (poll, fork, waitpid, _exit, signal dispositions,
//! resource limits). Each wrapper is safe to call; each `unsafe` block says why
//! it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// Which of the descriptors passed to [`poll`] are ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The first descriptor (the socket) is readable or has an error.
    pub(crate) socket: bool,
    /// The second descriptor (the wake-up socket) is readable.
    pub(crate) wake: bool,
}

fn poll_timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        // Round up so that a 0.4 ms timeout does not become a busy loop.
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

/// Waits until `socket` is readable or `wake` is readable, or `timeout` passes
/// (`None` = no timeout). `EINTR` is reported as an empty [`Ready`]. `wake`
/// is a raw number: polling a closed descriptor is harmless (`POLLNVAL`,
/// reported as readable).
pub(crate) fn poll_read(
    socket: Option<BorrowedFd<'_>>,
    wake: RawFd,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            // A negative fd is ignored by poll(2).
            fd: socket.map_or(-1, |s| s.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid, initialised array of two pollfd structs that
    // lives for the whole call; the length passed matches the array.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            poll_timeout_ms(timeout),
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(Ready::default());
        }
        return Err(err);
    }
    let hit = |p: &libc::pollfd| {
        p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    };
    Ok(Ready {
        wake: hit(&fds[0]),
        socket: hit(&fds[1]),
    })
}

/// Waits until `fd` is writable (or has an error), at most `timeout`.
/// Returns `false` on timeout.
pub(crate) fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, poll_timeout_ms(Some(timeout))) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

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

/// Restores the default disposition of SIGINT (used in forked children of a
/// server whose parent installed shutdown-on-signal handlers, so that ^C
/// still ends a child; SIGTERM gets [`install_child_stop`]).
pub(crate) fn reset_signal_dispositions() {
    for sig in [libc::SIGINT] {
        // SAFETY: SIG_DFL is a valid disposition for these catchable signals;
        // `signal` only changes process state and touches no memory of ours.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Number of threads in this process (from /proc/self/task), if known.
pub(crate) fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// `shutdown(2)` on a descriptor the caller guarantees is an open socket
/// (the connection registry holds its lock while the socket is alive).
pub(crate) fn shutdown_socket(fd: std::os::fd::RawFd, how: std::net::Shutdown) {
    let how = match how {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: shutdown only reads its integer arguments. The caller keeps
    // `fd` open for the duration of the call (see `Registry::cut_all`), so it
    // cannot name an unrelated, reused descriptor. Errors (ENOTCONN for a
    // peer that already left) are of no interest.
    unsafe {
        libc::shutdown(fd, how);
    }
}

/// Sends `signal` to process `pid`.
pub(crate) fn kill(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill only reads its integer arguments; `pid` is a child of
    // ours that has not been reaped yet, so it cannot have been reused.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Takes ownership of an inherited descriptor (socket activation), after
/// checking that it is open; marks it close-on-exec.
pub(crate) fn adopt_fd(fd: std::os::fd::RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; setting FD_CLOEXEC changes only the descriptor flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and, by the socket
    // activation protocol, handed to this process to own; the caller adopts
    // each number once (`activation::listeners` clears the environment).
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Closes `fd` in a forked child (the server's listening and wake-up
/// sockets, which the child must not keep open).
pub(crate) fn close_in_child(fd: RawFd) {
    // SAFETY: only called in a forked child on the server's own descriptors,
    // whose owners (the server's copy in the child's memory) are never
    // dropped: the child leaves through `_exit`. So nothing uses or closes
    // the number again. close only reads its integer argument.
    unsafe {
        libc::close(fd);
    }
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
    /// Descriptors the child gets as 3, 4, ... in this order.
    pub(crate) fds: &'a [BorrowedFd<'a>],
}

/// Room for a pid in decimal (`pid_t` is 32 bits: 10 digits at most).
const PID_DIGITS: usize = 20;

/// Starts `spawn.program` as a child process that inherits `spawn.fds` as
/// descriptors 3, 4, ... (every other descriptor of ours is close-on-exec,
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
    let first = crate::activation::LISTEN_FDS_START;
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

/// The read end of a forked child's SIGTERM pipe (-1: not a child).
static CHILD_STOP_READ: AtomicI32 = AtomicI32::new(-1);
/// The write end, for the signal handler.
static CHILD_STOP_WRITE: AtomicI32 = AtomicI32::new(-1);
/// SIGTERM arrived in this forked child.
static CHILD_STOP: AtomicBool = AtomicBool::new(false);
/// The connection this forked child waits on for a new message (-1: none);
/// SIGTERM shuts its reading half down, which ends the wait with
/// end-of-file (see [`IdleRead`]).
static IDLE_READ_FD: AtomicI32 = AtomicI32::new(-1);
/// This forked child runs the server loop (`PreFork`), which drains the
/// connections of requests on other threads itself once SIGTERM ends it.
static CHILD_RUNS_LOOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_child_sigterm(_signal: libc::c_int) {
    if CHILD_STOP.swap(true, Ordering::SeqCst) && SECOND_TERM_EXITS.load(Ordering::SeqCst) {
        // A second SIGTERM: stop now, as the default disposition would.
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(128 + libc::SIGTERM) }
    }
    let fd = CHILD_STOP_WRITE.load(Ordering::SeqCst);
    let idle = IDLE_READ_FD.load(Ordering::SeqCst);
    // SAFETY: write and shutdown are async-signal-safe; the buffer is a
    // static byte; `idle` is open while it is stored (`IdleRead` clears it
    // before the request can close the connection), and shutting down its
    // reading half only ends reads with end-of-file. errno is saved and
    // restored around them, so the interrupted code does not see it change.
    unsafe {
        let errno = *libc::__errno_location();
        if fd >= 0 {
            libc::write(fd, b"T".as_ptr().cast(), 1);
        }
        if idle >= 0 {
            libc::shutdown(idle, libc::SHUT_RD);
        }
        *libc::__errno_location() = errno;
    }
}

/// While alive: this forked child waits in a plain blocking read of `fd`
/// for a new message, and SIGTERM ends that read (end-of-file) by shutting
/// down the reading half of `fd`. No `poll` of the socket and the stop pipe
/// before every read: one system call per message instead of two. Only for
/// a child serving one request at a time (one slot).
#[derive(Debug)]
pub(crate) struct IdleRead(());

impl IdleRead {
    pub(crate) fn enter(fd: BorrowedFd<'_>) -> IdleRead {
        IDLE_READ_FD.store(fd.as_raw_fd(), Ordering::SeqCst);
        IdleRead(())
    }
}

impl Drop for IdleRead {
    fn drop(&mut self) {
        IDLE_READ_FD.store(-1, Ordering::SeqCst);
    }
}

/// Whether this forked child runs the server loop (`PreFork`).
pub(crate) fn child_runs_loop() -> bool {
    CHILD_RUNS_LOOP.load(Ordering::Relaxed)
}

/// In a forked child: the first SIGTERM asks the request to stop at its
/// next message boundary (a wait for a new message ends with end-of-file),
/// a second one ends the child at once. Installed without allocating or
/// locking, so it is safe whatever other threads the parent had.
pub(crate) fn install_child_stop() -> io::Result<()> {
    let mut fds = [-1 as libc::c_int; 2];
    // A socket pair rather than a pipe: a `PreFork` child puts its read end
    // where the server's wake-up socket was, which is read with recv.
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    CHILD_STOP_READ.store(fds[0], Ordering::SeqCst);
    CHILD_STOP_WRITE.store(fds[1], Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid starting value; the handler is
    // an `extern "C" fn(c_int)` that only touches atomics and calls
    // async-signal-safe functions; SA_RESTART keeps interrupted system
    // calls going.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_child_sigterm as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The read end of this child's SIGTERM pipe, if this is a forked child.
pub(crate) fn child_stop_fd() -> Option<BorrowedFd<'static>> {
    let fd = CHILD_STOP_READ.load(Ordering::Relaxed);
    // SAFETY: the pipe is created once in the child and never closed until
    // the process ends, so the descriptor is valid for 'static.
    (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Whether SIGTERM arrived in this forked child.
pub(crate) fn child_stop_requested() -> bool {
    CHILD_STOP.load(Ordering::SeqCst)
}

/// Empties the SIGTERM pipe (non-blocking).
pub(crate) fn drain_child_stop() {
    let fd = CHILD_STOP_READ.load(Ordering::Relaxed);
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is valid for writes of its length; the pipe is
    // non-blocking, so this ends when it is empty.
    while fd >= 0 && unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Sends `data` on a connected socket without waiting (`MSG_DONTWAIT`):
/// what does not fit in the socket buffer now is not sent.
pub(crate) fn send_nowait(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is valid for reads of its length for the whole call;
    // the caller owns the open socket `fd`. MSG_NOSIGNAL: a closed peer is
    // an error, not SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether `fd` is readable right now (data, end-of-file or an error
/// waiting), without blocking.
pub(crate) fn readable_now(fd: BorrowedFd<'_>) -> bool {
    poll_read(Some(fd), -1, Some(Duration::ZERO)).is_ok_and(|r| r.socket)
}

/// Receives from a connected socket without waiting (`MSG_DONTWAIT`):
/// `WouldBlock` when nothing is there yet. The socket itself stays as it is
/// (blocking, for other users of it). Used by the `Green` strategy.
#[cfg(feature = "green")]
pub(crate) fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length for the whole call;
    // the caller holds the socket open (it borrows the connection).
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The coroutine running on this thread under the `Green` strategy, as
/// far as blocking calls need it: a way to suspend it.
///
/// Only a pointer to its `Yielder` can be kept in a thread-local (the
/// yielder lives on the coroutine's own stack, borrowed by its body), hence
/// this one `unsafe` dereference.
#[cfg(feature = "green")]
pub(crate) mod green_current {
    use std::cell::Cell;

    use crate::green::runtime::{Resume, Suspend, Yielder};

    thread_local! {
        static CURRENT: Cell<*const Yielder> = const { Cell::new(std::ptr::null()) };
    }

    /// Marks `yielder` as the coroutine running on this thread, until the
    /// returned guard drops. Called by the coroutine's body, first thing, with
    /// the yielder corosensei hands it; the guard lives until the body ends.
    pub(crate) fn enter(yielder: &Yielder) -> Entered {
        CURRENT.with(|c| c.set(std::ptr::from_ref(yielder)));
        Entered
    }

    /// Clears the mark when the coroutine's body ends (also in a panic).
    pub(crate) struct Entered;

    impl Drop for Entered {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(std::ptr::null()));
        }
    }

    /// Whether code runs in a green coroutine on this thread.
    pub(crate) fn active() -> bool {
        CURRENT.with(|c| !c.get().is_null())
    }

    /// Suspends the coroutine running on this thread with `why`; `None`
    /// outside a coroutine (nothing to suspend).
    pub(crate) fn suspend(why: Suspend) -> Option<Resume> {
        let ptr = CURRENT.with(Cell::get);
        if ptr.is_null() {
            return None;
        }
        // While suspended, this thread runs the scheduler and other
        // coroutines, which must not see this one as current.
        CURRENT.with(|c| c.set(std::ptr::null()));
        // SAFETY: `ptr` is non-null only between `enter` and the drop of its
        // guard, i.e. while the body of the coroutine that owns the yielder
        // runs, on this thread (coroutines never move between threads: the
        // `Coroutine` is not `Send`). It is cleared before every suspension
        // (just above) and set again only when that same coroutine is
        // resumed (just below, on its own stack), so whenever it is read
        // here it points at the yielder of the coroutine executing this
        // very code, which outlives the call.
        let resumed = unsafe { (*ptr).suspend(why) };
        CURRENT.with(|c| c.set(ptr));
        Some(resumed)
    }
}

/// Whether a second SIGTERM in a forked child ends it at once (`Forking`);
/// `PreFork` children turn this off, since a SIGTERM sent to the whole
/// process group reaches them once from the sender and once from their
/// parent's drain.
static SECOND_TERM_EXITS: AtomicBool = AtomicBool::new(true);

/// In a forked child, before [`install_child_stop`]: whether a second
/// SIGTERM ends the child at once (default `true`).
pub(crate) fn set_second_term_exits(on: bool) {
    SECOND_TERM_EXITS.store(on, Ordering::SeqCst);
}

/// Makes SIGINT ignored in this process (a `PreFork` child: ^C reaches the
/// whole foreground process group, and the parent drains its children).
pub(crate) fn ignore_sigint() {
    // SAFETY: SIG_IGN is a valid disposition for SIGINT; `signal` only
    // changes process state and touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
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

/// In a forked child: makes the child's SIGTERM pipe (see
/// [`install_child_stop`]) readable under the descriptor number `target`
/// too (`dup2`), replacing what `target` was. The server loop then watches
/// its usual wake-up descriptor and sees the child's SIGTERM there.
pub(crate) fn child_stop_onto(target: RawFd) -> io::Result<()> {
    let fd = CHILD_STOP_READ.load(Ordering::SeqCst);
    if fd < 0 {
        return Err(io::Error::other("not a forked child with a stop pipe"));
    }
    // SAFETY: dup2 only manipulates the descriptor table. `target` is the
    // server's own wake-up descriptor, whose owner (the server's copy in this
    // child's memory) is never dropped: the child leaves through `_exit`.
    // So after the swap every user of that number reads the stop pipe, and
    // nothing closes it twice.
    if unsafe { libc::dup2(fd, target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    CHILD_RUNS_LOOP.store(true, Ordering::SeqCst);
    Ok(())
}

/// One child's entry in `PreFork`'s status table, shared by the parent and
/// every child (all-zero: a free slot).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The child's pid (0: free). Written by the parent only.
    pub(crate) pid: AtomicI32,
    /// Requests the child is serving now (0: idle). Written by the child.
    pub(crate) active: std::sync::atomic::AtomicU32,
    /// Set by the parent: leave when idle. Read by the child.
    pub(crate) retire: std::sync::atomic::AtomicU32,
    /// Requests the child has started in all. Written by the child.
    pub(crate) served: std::sync::atomic::AtomicU64,
}

/// A table of [`Slot`]s in anonymous shared memory (`mmap(MAP_SHARED |
/// MAP_ANONYMOUS)`): children forked after it was made see the parent's
/// table and the parent sees theirs, with no system call per update.
#[derive(Debug)]
pub(crate) struct SharedSlots {
    ptr: std::ptr::NonNull<Slot>,
    len: usize,
}

// SAFETY: the table holds only atomics, which may be used from any thread;
// the pointer is owned by the value and unmapped once, on drop.
unsafe impl Send for SharedSlots {}
// SAFETY: as above: shared references give access to atomics only.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    /// A table of `len` free slots (at least 1).
    pub(crate) fn new(len: usize) -> io::Result<SharedSlots> {
        let len = len.max(1);
        let bytes = len
            .checked_mul(std::mem::size_of::<Slot>())
            .ok_or_else(|| io::Error::other("status table too large"))?;
        // SAFETY: a fresh anonymous mapping: no address hint, no file
        // descriptor; the kernel picks a page-aligned address or fails.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<Slot>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedSlots { ptr, len })
    }

    /// The slots.
    pub(crate) fn slots(&self) -> &[Slot] {
        // SAFETY: the mapping is `len * size_of::<Slot>()` bytes, page
        // aligned (so aligned for `Slot`), zero-filled by the kernel (all
        // zeros is a valid `Slot`: atomics of 0), readable and writable,
        // and lives until `self` drops, which the borrow outlives. Other
        // processes write it only through atomics, as this one does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no borrow of
        // the slots outlives `self`. Children keep their own mapping.
        unsafe {
            libc::munmap(
                self.ptr.as_ptr().cast(),
                self.len * std::mem::size_of::<Slot>(),
            );
        }
    }
}

/// Coroutine stacks for the green workers, carved out of shared mappings
/// ("slabs") of [`PER_SLAB`](green_stacks::PER_SLAB) stacks each, every
/// stack with its own guard page below it.
///
/// One mapping per stack (corosensei's `DefaultStack`) costs an `mmap`, an
/// `mprotect` and a `munmap` per stack; tearing down 10,000 connections
/// then spends a third of its time unmapping (each `munmap` also flushes
/// the other cores' TLBs). Here a slab is mapped once, a slot made usable
/// the first time it is handed out, and a slab unmapped when none of its
/// stacks is in use and enough others are spare: tens of syscalls for
/// 10,000 stacks.
#[cfg(feature = "green")]
pub(crate) mod green_stacks {
    use std::collections::BTreeSet;
    use std::io;
    use std::num::NonZeroUsize;

    use corosensei::stack::{Stack, StackPointer};

    /// Stacks per slab (the width of the slot bit masks).
    pub(crate) const PER_SLAB: usize = 64;

    /// Pages of the guard below each stack. The stack below is the next
    /// slot's: a frame that skips a one-page guard (code without stack
    /// probes, such as C called through FFI, with a large local array) would
    /// land in it, so the guard is four pages. Address space only, never
    /// memory.
    const GUARD_PAGES: usize = 4;

    /// A coroutine stack: one slot of a slab, with a guard below it.
    /// Plain data; it must go back to the [`Slabs`] it came from.
    #[derive(Debug)]
    pub(crate) struct SlabStack {
        base: StackPointer,
        limit: StackPointer,
        slab: usize,
        slot: usize,
    }

    // SAFETY: `limit..base` is one slot: its guard (`PROT_NONE` pages at
    // `limit`: the stack grows down into them) and above it the readable and
    // writable stack (made so by `Slabs::take` before it hands the stack
    // out), at least `MIN_STACK_SIZE` bytes. Corosensei wants the guard
    // counted in `limit`. Both are page aligned, so 16-byte aligned.
    // The range stays mapped as long as the stack is in use: a slab is only
    // unmapped once every slot of it was given back, or when the `Slabs`
    // drops, which its owner (the green worker) orders after every
    // coroutine (see `Worker`'s fields).
    unsafe impl Stack for SlabStack {
        fn base(&self) -> StackPointer {
            self.base
        }

        fn limit(&self) -> StackPointer {
            self.limit
        }
    }

    struct Slab {
        addr: usize,
        /// Slots not handed out (bit i: slot i).
        free: u64,
        /// Slots made readable and writable once already.
        usable: u64,
    }

    /// A worker's stacks. Slots go out lowest slab first, so that the
    /// stacks in use pack into few slabs and the spare ones can go back to
    /// the system whole.
    pub(crate) struct Slabs {
        /// Usable bytes of a stack (whole pages).
        size: usize,
        /// Bytes of the guard below each stack (whole pages).
        guard: usize,
        slabs: Vec<Option<Slab>>,
        /// Slabs with a free slot.
        open: BTreeSet<usize>,
        /// Free slots in all slabs.
        spare: usize,
        /// Spare stacks to keep mapped (with their touched pages).
        keep: usize,
    }

    impl std::fmt::Debug for Slabs {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Slabs")
                .field("size", &self.size)
                .field("slabs", &self.slabs.iter().flatten().count())
                .field("spare", &self.spare)
                .finish_non_exhaustive()
        }
    }

    fn page_size() -> usize {
        // SAFETY: sysconf with a valid name has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(page)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    }

    impl Slabs {
        /// Stacks of at least `size` usable bytes; about `keep` spare ones
        /// stay mapped for reuse.
        pub(crate) fn new(size: usize, keep: usize) -> Slabs {
            let page = page_size();
            Slabs {
                // Too large to round up: no slab can be mapped (`slab_len`).
                size: size
                    .max(corosensei::stack::MIN_STACK_SIZE)
                    .checked_next_multiple_of(page)
                    .unwrap_or(usize::MAX),
                guard: page * GUARD_PAGES,
                slabs: Vec::new(),
                open: BTreeSet::new(),
                spare: 0,
                keep,
            }
        }

        fn slot_len(&self) -> usize {
            self.size + self.guard
        }

        /// The bytes of a slab; `None` if the stack size is too large for
        /// one (a slab is never mapped then: every `take` fails).
        fn slab_len(&self) -> Option<usize> {
            self.size
                .checked_add(self.guard)?
                .checked_mul(PER_SLAB)
                .filter(|len| isize::try_from(*len).is_ok())
        }

        /// A stack: a free slot of the lowest slab that has one, or of a
        /// new slab.
        pub(crate) fn take(&mut self) -> io::Result<SlabStack> {
            let index = match self.open.first() {
                Some(&i) => i,
                None => self.map_slab()?,
            };
            let (slot_len, size, guard) = (self.slot_len(), self.size, self.guard);
            let slab = self.slabs[index]
                .as_mut()
                .ok_or_else(|| io::Error::other("green stacks: an open slab is not mapped"))?;
            let slot = slab.free.trailing_zeros() as usize;
            let start = slab.addr + slot * slot_len;
            if slab.usable & (1 << slot) == 0 {
                // SAFETY: `start + guard .. start + guard + size` lies inside
                // this slab's mapping (slot < PER_SLAB, each slot_len long),
                // which no stack uses yet: the slot is free and was never
                // made usable, so nothing can alias it.
                let r = unsafe {
                    libc::mprotect(
                        (start + guard) as *mut libc::c_void,
                        size,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
                slab.usable |= 1 << slot;
            }
            slab.free &= !(1 << slot);
            if slab.free == 0 {
                self.open.remove(&index);
            }
            self.spare -= 1;
            let pointer = |a: usize| {
                NonZeroUsize::new(a).ok_or_else(|| io::Error::other("green stacks: null stack"))
            };
            Ok(SlabStack {
                base: pointer(start + guard + size)?,
                limit: pointer(start)?,
                slab: index,
                slot,
            })
        }

        /// Maps a new slab (all guard pages until a slot is first used).
        fn map_slab(&mut self) -> io::Result<usize> {
            let len = self.slab_len().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("green stacks: a stack of {} bytes is too large", self.size),
                )
            })?;
            // SAFETY: a fresh anonymous private mapping at an address of the
            // kernel's choosing: it cannot overlap anything of ours.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let slab = Slab {
                addr: addr as usize,
                free: u64::MAX,
                usable: 0,
            };
            let index = match self.slabs.iter().position(Option::is_none) {
                Some(i) => {
                    self.slabs[i] = Some(slab);
                    i
                }
                None => {
                    self.slabs.push(Some(slab));
                    self.slabs.len() - 1
                }
            };
            self.open.insert(index);
            self.spare += PER_SLAB;
            Ok(index)
        }

        /// Takes `stack` back. Its slab is unmapped when none of its stacks
        /// is in use any more and more than `keep` others are spare. With
        /// `trim`, a stack kept mapped beyond those `keep` gives its touched
        /// pages back to the system (one `madvise`); a worker that is closing
        /// skips that, as its slabs are all about to go.
        pub(crate) fn give(&mut self, stack: SlabStack, trim: bool) {
            let (slot_len, size, guard, keep) = (self.slot_len(), self.size, self.guard, self.keep);
            let Some(slab) = self.slabs.get_mut(stack.slab).and_then(Option::as_mut) else {
                return;
            };
            slab.free |= 1 << stack.slot;
            self.spare += 1;
            self.open.insert(stack.slab);
            if slab.free == u64::MAX && self.spare >= keep + PER_SLAB {
                let addr = slab.addr;
                self.slabs[stack.slab] = None;
                self.open.remove(&stack.slab);
                self.spare -= PER_SLAB;
                unmap(addr, slot_len * PER_SLAB);
            } else if trim && self.spare > keep {
                let start = slab.addr + stack.slot * slot_len + guard;
                // SAFETY: the slot's usable range, inside the slab's mapping,
                // given back just now: no coroutine runs on it. Its pages read
                // as zeros afterwards, which a fresh stack needs no better.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, size, libc::MADV_DONTNEED);
                }
            }
        }
    }

    fn unmap(addr: usize, len: usize) {
        // SAFETY: `addr, len` is exactly one slab mapping, none of whose
        // stacks is in use (every slot given back, or the owner gone).
        let r = unsafe { libc::munmap(addr as *mut libc::c_void, len) };
        debug_assert_eq!(r, 0, "munmap of a green stack slab failed");
    }

    impl Drop for Slabs {
        fn drop(&mut self) {
            // Some whenever a slab was mapped.
            let Some(len) = self.slab_len() else {
                return;
            };
            for slab in self.slabs.drain(..).flatten() {
                unmap(slab.addr, len);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        impl Slabs {
            fn mapped(&self) -> usize {
                self.slabs.iter().flatten().count()
            }
        }

        /// Writes the whole usable range of `stack` (above its guard) and
        /// reads it back.
        fn fill(stack: &SlabStack, byte: u8) {
            let guard = page_size() * GUARD_PAGES;
            let (lo, hi) = (stack.limit().get() + guard, stack.base().get());
            let range = lo as *mut u8;
            // SAFETY: `lo..hi` is the stack's usable range, readable and
            // writable while it is out, and no coroutine runs on it.
            let bytes = unsafe { std::slice::from_raw_parts_mut(range, hi - lo) };
            bytes.fill(byte);
            assert!(bytes.iter().all(|b| *b == byte));
        }

        #[test]
        fn stacks_are_usable_distinct_and_come_from_shared_slabs() {
            let mut slabs = Slabs::new(16 * 1024, 0);
            let stacks: Vec<SlabStack> = (0..PER_SLAB * 2 + 3)
                .map(|_| slabs.take().expect("a stack"))
                .collect();
            assert_eq!(slabs.mapped(), 3);
            for (i, s) in stacks.iter().enumerate() {
                assert_eq!(s.base().get() - s.limit().get(), 16 * 1024 + slabs.guard);
                assert_eq!(s.limit().get() % page_size(), 0);
                fill(s, i as u8);
            }
            let mut bases: Vec<usize> = stacks.iter().map(|s| s.base().get()).collect();
            bases.sort_unstable();
            bases.dedup();
            assert_eq!(bases.len(), stacks.len(), "every stack is its own range");
            for s in stacks {
                slabs.give(s, true);
            }
            assert_eq!(slabs.mapped(), 0, "with nothing to keep, empty slabs go");
        }

        /// Corosensei's `Stack` contract: `limit` counts the guard page, so
        /// that the stack's bounds (`limit..base`) are the whole slot, and the
        /// slots of a slab follow each other without gaps or overlap.
        #[test]
        fn a_stack_limit_includes_its_guard_page() {
            let mut slabs = Slabs::new(16 * 1024, 0);
            let a = slabs.take().expect("a stack");
            let b = slabs.take().expect("a stack");
            let slot = 16 * 1024 + slabs.guard;
            assert_eq!(a.base().get() - a.limit().get(), slot);
            assert_eq!(
                b.limit().get(),
                a.base().get(),
                "b's guard page is just above a"
            );
            // The guard page is not accessible (its mapping's protections).
            let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
            let guard = a.limit().get();
            let line = maps
                .lines()
                .find(|l| {
                    let range = l.split(' ').next().unwrap_or("");
                    let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
                    let lo = usize::from_str_radix(lo, 16).unwrap_or(0);
                    let hi = usize::from_str_radix(hi, 16).unwrap_or(0);
                    lo <= guard && guard < hi
                })
                .expect("the guard page is mapped");
            assert!(line.contains(" ---p "), "guard page not PROT_NONE: {line}");
            slabs.give(a, true);
            slabs.give(b, true);
        }

        /// A stack size too large for a slab makes `take` fail, not panic
        /// or wrap around.
        #[test]
        fn a_stack_too_large_is_an_error() {
            for size in [usize::MAX, usize::MAX / 2, usize::MAX / PER_SLAB] {
                let mut slabs = Slabs::new(size, 0);
                let err = slabs.take().expect_err("no such stack");
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{size}: {err}");
            }
        }

        #[test]
        fn a_given_back_stack_is_reused_lowest_slab_first() {
            let mut slabs = Slabs::new(16 * 1024, 1000);
            let stacks: Vec<SlabStack> = (0..=PER_SLAB)
                .map(|_| slabs.take().expect("a stack"))
                .collect();
            let first = stacks[0].base();
            let mut rest = stacks.into_iter();
            slabs.give(rest.next().expect("one"), true);
            let again = slabs.take().expect("a stack");
            assert_eq!(again.base(), first, "the free slot of the first slab");
            fill(&again, 7);
            slabs.give(again, false);
            for s in rest {
                slabs.give(s, false);
            }
            assert_eq!(slabs.mapped(), 2, "spare stacks up to `keep` stay mapped");
        }
    }
}
