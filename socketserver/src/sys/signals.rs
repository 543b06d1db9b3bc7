//! Signal dispositions, and a forked child's SIGTERM: a flag, a byte on a
//! socket pair the server loop watches, and the idle read it ends.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

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

/// Makes SIGINT ignored in this process (a `PreFork` child: ^C reaches the
/// whole foreground process group, and the parent drains its children).
pub(crate) fn ignore_sigint() {
    // SAFETY: SIG_IGN is a valid disposition for SIGINT; `signal` only
    // changes process state and touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
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

/// SIGTERM (and [`child_leave_signal`]) blocked in the calling thread
/// while this lives; dropping it restores the mask it replaced. Held across
/// `fork`: the child starts with both blocked, so one sent before it
/// installs its own handlers ([`install_child_stop`],
/// [`install_child_leave`]) waits for them instead of running the parent's
/// (which would take a SIGTERM for the parent's and leave the child serving
/// on) or the default action (the leave signal's ends the process).
pub(crate) struct TermBlocked {
    previous: libc::sigset_t,
}

/// Blocks SIGTERM in the calling thread until the guard drops.
pub(crate) fn block_term() -> TermBlocked {
    // SAFETY: an all-zero sigset_t is a valid value to fill (plain data).
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset, sigaddset and pthread_sigmask write only to the
    // sigset_t values passed, which live on this stack frame during the
    // calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, child_leave_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
    }
    TermBlocked { previous }
}

impl Drop for TermBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `block_term`; `previous` is
        // initialised. A SIGTERM that came meanwhile is delivered now, to
        // the handler in place now.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// Makes `signal` ignored in this process (a `PreFork` child and the
/// parent's upgrade signal: sent to the whole process group, it is the
/// parent's business).
pub(crate) fn ignore_signal(signal: i32) {
    // SAFETY: SIG_IGN is a valid disposition for any catchable signal (the
    // callers pass SIGUSR2 or another user signal); `signal` only changes
    // process state.
    unsafe {
        libc::signal(signal, libc::SIG_IGN);
    }
}

/// The signal a `PreFork` parent sends a child to make it leave quietly:
/// stop accepting, let its connections end on their own, exit (see
/// [`install_child_leave`]). A real-time signal, which nothing sends by
/// accident (the first one past those the C library keeps).
pub(crate) fn child_leave_signal() -> i32 {
    libc::SIGRTMIN() + 1
}

/// The quiet leave was asked of this forked child.
static CHILD_LEAVE: AtomicBool = AtomicBool::new(false);
/// The byte the leave signal writes to the stop pipe: one that wakes the
/// server loop without stopping it (its poke).
static CHILD_LEAVE_BYTE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

extern "C" fn on_child_leave(_signal: libc::c_int) {
    CHILD_LEAVE.store(true, Ordering::SeqCst);
    let fd = CHILD_STOP_WRITE.load(Ordering::SeqCst);
    let byte = [CHILD_LEAVE_BYTE.load(Ordering::SeqCst)];
    // SAFETY: write is async-signal-safe; the buffer is on this frame;
    // errno is saved and restored around it.
    unsafe {
        let errno = *libc::__errno_location();
        if fd >= 0 {
            libc::write(fd, byte.as_ptr().cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

/// In a forked child, after [`install_child_stop`]: the signal
/// [`child_leave_signal`] sets the flag [`child_leave_requested`] reads and
/// writes `wake_byte` to the child's stop pipe, which wakes the server loop
/// (the byte must be one the loop takes for a mere wake-up). Installed
/// without allocating or locking.
pub(crate) fn install_child_leave(wake_byte: u8) -> io::Result<()> {
    CHILD_LEAVE_BYTE.store(wake_byte, Ordering::SeqCst);
    // SAFETY: as in `install_child_stop`: a zeroed sigaction filled with an
    // `extern "C" fn(c_int)` handler that touches atomics and calls write.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_child_leave as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(child_leave_signal(), &action, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether this forked child was asked to leave quietly.
pub(crate) fn child_leave_requested() -> bool {
    CHILD_LEAVE.load(Ordering::SeqCst)
}

/// On `signal`: sets `flag`, then writes `byte` to `writer` without waiting
/// (a full socket means a wake-up is pending already). The writer is kept
/// open by the registration. Returns it, to unregister.
pub(crate) fn on_signal_flag_and_byte(
    signal: i32,
    flag: std::sync::Arc<AtomicBool>,
    writer: std::os::unix::net::UnixStream,
    byte: u8,
) -> io::Result<signal_hook::SigId> {
    let action = move || {
        flag.store(true, Ordering::SeqCst);
        let fd = writer.as_raw_fd();
        // SAFETY: send with MSG_DONTWAIT on a descriptor this closure owns
        // (open while registered), from a byte on this frame; errno is
        // saved and restored around it.
        unsafe {
            let errno = *libc::__errno_location();
            libc::send(
                fd,
                std::ptr::from_ref(&byte).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
            *libc::__errno_location() = errno;
        }
    };
    // SAFETY: the action is async-signal-safe: it stores to an atomic and
    // calls send(2) (see above); it allocates nothing and takes no lock.
    unsafe { signal_hook::low_level::register(signal, action) }
}
