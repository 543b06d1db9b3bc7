//! One green worker: an OS thread with its own epoll reactor (mio), run
//! queue, timers and coroutines. A coroutine runs on the worker that started
//! it until it ends.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corosensei::{Coroutine, CoroutineResult};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use super::current as green_current;
use super::stacks::{SlabStack, Slabs};
use crate::strategy::{ActiveCount, Job};
use crate::Address;

/// Why a coroutine suspends itself.
pub(crate) enum Suspend {
    /// Until `fd` is readable (or writable, `write`), `also` (if any) is
    /// readable, or `deadline` passes.
    Io {
        fd: RawFd,
        write: bool,
        also: Option<RawFd>,
        deadline: Option<Instant>,
    },
    /// Until `Instant`.
    Sleep(Instant),
    /// Until this closure has run on a helper thread.
    Blocking(Box<dyn FnOnce() + Send>),
}

/// Why a coroutine was resumed.
#[derive(Debug)]
pub(crate) enum Resume {
    /// What it waited for may have happened (wake-ups can be spurious: retry).
    Ready,
    /// Its deadline passed.
    TimedOut,
}

/// The yielder of a worker's coroutines.
pub(crate) type Yielder = corosensei::Yielder<Resume, Suspend>;
type Co = Coroutine<Resume, Suspend, (), SlabStack>;

/// A coroutine that runs longer than this without suspending is reported:
/// it held up every other connection on its thread meanwhile.
pub(crate) const SLOW_RESUME: Duration = Duration::from_millis(100);

/// How often a wait on a descriptor that another coroutine of the same
/// worker is registered for is retried (see `Worker::wait_io`).
const SHARED_FD_POLL: Duration = Duration::from_millis(1);

/// Spare stacks kept for reuse per worker with their touched pages (more
/// are kept mapped while their slab is in use, but their pages go back).
const STACK_CACHE: usize = 256;

const WAKER: Token = Token(usize::MAX);

/// No coroutine (the owner of an unregistered descriptor, the current
/// coroutine while the scheduler runs).
const NOBODY: Token = Token(usize::MAX - 1);

/// Bumped whenever a connection's read or write timeout is set (see
/// [`timeouts_changed`]): the timeouts cached per descriptor are only good
/// for the epoch they were read in.
static TIMEOUT_EPOCH: AtomicU64 = AtomicU64::new(0);

/// What a worker knows of a descriptor registered in its epoll: the
/// coroutine it wakes, whether it may be readable or writable (edge
/// triggered: set by an event, cleared when a read or write finds the
/// socket drained or full), whether its read or write side was reported
/// closed or failed (final: never cleared, as end-of-file or the error
/// stays to be read), and the socket's timeouts as last read.
#[derive(Debug, Clone, Copy)]
struct FdState {
    owner: Token,
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
    /// `(epoch, SO_RCVTIMEO)`, `(epoch, SO_SNDTIMEO)`.
    read_timeout: Option<(u64, Option<Duration>)>,
    write_timeout: Option<(u64, Option<Duration>)>,
}

const UNOWNED: FdState = FdState {
    owner: NOBODY,
    readable: false,
    writable: false,
    read_closed: false,
    write_closed: false,
    read_timeout: None,
    write_timeout: None,
};

thread_local! {
    /// This worker's descriptors, indexed by number (descriptor numbers are
    /// small and dense). Shared by the scheduler and its coroutines, which
    /// run on this thread one at a time; never borrowed across a switch.
    static FDS: RefCell<Vec<FdState>> = const { RefCell::new(Vec::new()) };
    /// The coroutine running now on this thread (`NOBODY` in the scheduler).
    static RUNNING: Cell<Token> = const { Cell::new(NOBODY) };
    /// The address of this thread's worker's [`Shared`] (0: not a worker).
    static CURRENT_WORKER: Cell<usize> = const { Cell::new(0) };
}

fn with_fd<R>(fd: RawFd, f: impl FnOnce(&mut FdState) -> R) -> Option<R> {
    let index = usize::try_from(fd).ok()?;
    FDS.with(|fds| fds.borrow_mut().get_mut(index).map(f))
}

/// The state of `fd` if the running coroutine owns its registration.
fn with_own_fd<R>(fd: RawFd, f: impl FnOnce(&mut FdState) -> R) -> Option<R> {
    let me = RUNNING.with(Cell::get);
    if me == NOBODY {
        return None;
    }
    with_fd(fd, |s| (s.owner == me).then(|| f(s))).flatten()
}

/// Whether the running coroutine knows that `fd` has nothing to read (or no
/// room to write) since its last read (write): then it waits for the
/// reactor's event without trying the call first.
pub(crate) fn known_blocked(fd: RawFd, write: bool) -> bool {
    with_own_fd(fd, |s| {
        if write {
            !s.writable && !s.write_closed
        } else {
            !s.readable && !s.read_closed
        }
    })
    .unwrap_or(false)
}

/// The running coroutine found `fd` drained (a read returned less than
/// asked, or `WouldBlock`) or full (a short write): wait for the next edge.
pub(crate) fn blocked(fd: RawFd, write: bool) {
    with_own_fd(fd, |s| {
        if write {
            s.writable = false;
        } else {
            s.readable = false;
        }
    });
}

/// A connection's timeout was set: cached timeouts must be read again.
pub(crate) fn timeouts_changed() {
    TIMEOUT_EPOCH.fetch_add(1, Ordering::Release);
}

/// `fd`'s read (`write`: write) timeout was just set to `t`. On the
/// coroutine that owns `fd`'s registration, its cached value is updated in
/// place; from anywhere else every cached timeout is read again
/// ([`timeouts_changed`]), since another coroutine may hold this one.
pub(crate) fn timeout_set(fd: RawFd, write: bool, t: Option<Duration>) {
    let epoch = TIMEOUT_EPOCH.load(Ordering::Acquire);
    let updated = with_own_fd(fd, |s| {
        let slot = if write {
            &mut s.write_timeout
        } else {
            &mut s.read_timeout
        };
        *slot = Some((epoch, t));
    });
    if updated.is_none() {
        timeouts_changed();
    }
}

/// The read (or write) timeout of `fd`, from the cache of the running
/// coroutine's registration when it is current, else from `read`
/// (a `getsockopt`), then cached.
pub(crate) fn timeout(
    fd: RawFd,
    write: bool,
    read: impl FnOnce() -> io::Result<Option<Duration>>,
) -> io::Result<Option<Duration>> {
    let epoch = TIMEOUT_EPOCH.load(Ordering::Acquire);
    let cached = with_own_fd(fd, |s| {
        if write {
            s.write_timeout
        } else {
            s.read_timeout
        }
    })
    .flatten()
    .filter(|(e, _)| *e == epoch);
    if let Some((_, t)) = cached {
        return Ok(t);
    }
    let t = read()?;
    with_own_fd(fd, |s| {
        let slot = if write {
            &mut s.write_timeout
        } else {
            &mut s.read_timeout
        };
        *slot = Some((epoch, t));
    });
    Ok(t)
}

/// What another thread hands a worker.
pub(crate) enum Msg {
    /// A request to run as a new coroutine.
    Job(Job),
    /// A server loop to run as a coroutine (not a request: not counted as
    /// one), for the server at `url`.
    Loop {
        run: Box<dyn FnOnce() + Send>,
        url: String,
    },
    /// The blocking call of this coroutine finished.
    Wake(Token),
}

/// A worker's messages not taken yet.
#[derive(Default)]
struct Inbox {
    msgs: Vec<Msg>,
    /// The worker is gone (it exited, or died): a message sent now is
    /// dropped at once (see [`Shared::discard`]), as nothing would take it.
    closed: bool,
}

/// The part of a worker other threads see.
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    waker: Waker,
    /// The strategy's count of running requests (a request dropped unrun
    /// leaves it).
    active: Arc<ActiveCount>,
    /// Coroutines on this worker (queued jobs included).
    pub(crate) load: AtomicUsize,
    stop: AtomicBool,
    /// The server is closing: its requests end soon, and so does the worker.
    closing: AtomicBool,
}

impl Shared {
    pub(crate) fn send(&self, msg: Msg) {
        let first = {
            let mut inbox = self.inbox.lock();
            if inbox.closed {
                drop(inbox);
                return self.discard(msg);
            }
            inbox.msgs.push(msg);
            inbox.msgs.len() == 1
        };
        // One wake-up per batch: the worker empties the whole inbox. The
        // worker itself (its server loop placing a request here) looks at
        // its inbox before it sleeps again.
        if first && !self.is_current() {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake a green worker: {e}");
            }
        }
    }

    /// Drops `msg`, which no worker will take, undoing what sending it
    /// counted: a request's connection closes; a server loop's
    /// `serve_forever` sees that the loop is gone.
    fn discard(&self, msg: Msg) {
        match msg {
            Msg::Job(job) => {
                log::warn!("green worker gone: closing the request for {}", job.peer());
                self.load.fetch_sub(1, Ordering::SeqCst);
                self.active.decrement();
            }
            Msg::Loop { url, .. } => {
                log::error!("green worker gone: cannot run the server loop of {url}");
                self.load.fetch_sub(1, Ordering::SeqCst);
            }
            Msg::Wake(_) => {}
        }
    }

    /// The worker is gone: later messages are dropped at once, and those
    /// it did not take are dropped now.
    fn close_inbox(&self) {
        let left = {
            let mut inbox = self.inbox.lock();
            inbox.closed = true;
            std::mem::take(&mut inbox.msgs)
        };
        for msg in left {
            self.discard(msg);
        }
    }

    /// The server begins to close: the worker stops giving the pages of
    /// ended coroutines' stacks back one by one (it is about to free them all).
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Whether this is the worker of the calling thread.
    pub(crate) fn is_current(&self) -> bool {
        CURRENT_WORKER.with(Cell::get) == std::ptr::from_ref(self) as usize
    }

    /// Asks the worker to exit once its last coroutine ended.
    pub(crate) fn stop(&self) {
        self.closing();
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// Settings of a worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) stack_size: usize,
}

/// Starts a worker thread named `name`.
pub(crate) fn spawn(
    name: String,
    config: Config,
    active: Arc<ActiveCount>,
) -> io::Result<(Arc<Shared>, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox::default()),
        waker,
        active: Arc::clone(&active),
        load: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        closing: AtomicBool::new(false),
    });
    let worker_shared = Arc::clone(&shared);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        CURRENT_WORKER.with(|w| w.set(Arc::as_ptr(&worker_shared) as usize));
        // Whichever way the worker ends (its last coroutine after a stop,
        // or a panic), what is sent to it from then on is dropped.
        let _closed = CloseInbox(Arc::clone(&worker_shared));
        Worker {
            poll,
            shared: worker_shared,
            active,
            tasks: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            slabs: Slabs::new(config.stack_size, STACK_CACHE),
        }
        .run();
    })?;
    Ok((shared, handle))
}

/// Closes a worker's inbox when dropped (see [`Shared::close_inbox`]).
struct CloseInbox(Arc<Shared>);

impl Drop for CloseInbox {
    fn drop(&mut self) {
        self.0.close_inbox();
    }
}

/// What a suspended coroutine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the run queue, or running.
    Runnable,
    /// For `fd` (`write`: writable) or `also` (readable), until `deadline`.
    Io {
        fd: RawFd,
        write: bool,
        also: Option<RawFd>,
        deadline: Option<Instant>,
    },
    /// For a timer: `deadline` (`None`: no deadline, a poll retry).
    Timer { deadline: Option<Instant> },
    /// For its blocking call.
    Blocked,
}

/// What [`Worker::watch`] found.
enum Watch {
    /// An event came since the last attempt: try again.
    Ready,
    /// Registered: an event will wake the coroutine.
    Watching,
    /// Cannot be watched for this coroutine (not pollable, or another live
    /// coroutine of this worker is registered for it): retry on a timer.
    Poll,
}

/// Whom a coroutine serves, for logs.
enum Who {
    /// A request from this peer.
    Peer(Address),
    /// The loop of the server at this URL.
    Loop(String),
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Peer(a) => write!(f, "request for {a}"),
            Who::Loop(url) => write!(f, "server loop of {url}"),
        }
    }
}

struct Task {
    co: Co,
    who: Who,
    generation: u32,
    state: State,
    /// Its entry in `Worker::timers`, if any: at most one per coroutine,
    /// never later than `wake_at` while it waits. Not removed when the
    /// coroutine wakes early (most waits end with an event, long before
    /// their deadline): the next wait keeps it if it is not later than the
    /// new wake-up, and when it fires early it is moved to `wake_at`. So a
    /// connection exchanging messages touches the timer tree about once per
    /// timeout period rather than twice per message.
    timer: Option<(Instant, u64)>,
    /// When the current wait should end (a deadline or a retry), if ever.
    wake_at: Option<Instant>,
    /// The descriptors registered for it (forgotten when it ends).
    fds: Vec<RawFd>,
}

struct Worker {
    poll: Poll,
    shared: Arc<Shared>,
    active: Arc<ActiveCount>,
    tasks: Vec<Option<Task>>,
    /// Free slots of `tasks`, with the generation of their last task.
    free: Vec<(usize, u32)>,
    ready: VecDeque<(Token, Resume)>,
    timers: BTreeMap<(Instant, u64), Token>,
    timer_seq: u64,
    /// The coroutines' stacks. Last, so that it drops after `tasks`: a
    /// coroutine dropped unfinished unwinds on its stack.
    slabs: Slabs,
}

fn token(index: usize, generation: u32) -> Token {
    Token(index | (generation as usize) << 32)
}

fn split(token: Token) -> (usize, u32) {
    (token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            self.take_inbox();
            self.run_ready();
            // What this worker's own server loop placed here meanwhile
            // (sent without a wake-up).
            self.take_inbox();
            if self.shared.stop.load(Ordering::SeqCst) && self.live() == 0 {
                return;
            }
            let timeout = if self.ready.is_empty() {
                self.timers
                    .first_key_value()
                    .map(|((at, _), _)| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("green worker: epoll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in &events {
                if event.token() == WAKER {
                    continue;
                }
                // Registrations are by descriptor number (see `wait_io`).
                let Ok(fd) = RawFd::try_from(event.token().0) else {
                    continue;
                };
                let read_closed = event.is_read_closed() || event.is_error();
                let write_closed = event.is_write_closed() || event.is_error();
                let hit_read = event.is_readable() || read_closed;
                let hit_write = event.is_writable() || write_closed;
                let Some(owner) = with_fd(fd, |s| {
                    s.readable |= hit_read;
                    s.writable |= hit_write;
                    s.read_closed |= read_closed;
                    s.write_closed |= write_closed;
                    s.owner
                }) else {
                    continue;
                };
                let Some(task) = self.task_mut(owner) else {
                    continue; // an ended coroutine's descriptor
                };
                if let State::Io {
                    fd: waits_on,
                    write,
                    also,
                    ..
                } = task.state
                {
                    let hit = (waits_on == fd && ((write && hit_write) || (!write && hit_read)))
                        || (also == Some(fd) && hit_read);
                    if hit {
                        self.make_ready(owner, Resume::Ready);
                    }
                }
            }
            self.fire_timers();
        }
    }

    fn live(&self) -> usize {
        self.tasks.len() - self.free.len()
    }

    fn task_mut(&mut self, token: Token) -> Option<&mut Task> {
        let (index, generation) = split(token);
        self.tasks
            .get_mut(index)?
            .as_mut()
            .filter(|t| t.generation == generation)
    }

    /// Queues a waiting coroutine to run, cancelling its timer.
    fn make_ready(&mut self, token: Token, why: Resume) {
        let Some(task) = self.task_mut(token) else {
            return;
        };
        if task.state == State::Runnable {
            return;
        }
        task.state = State::Runnable;
        task.wake_at = None;
        self.ready.push_back((token, why));
    }

    fn take_inbox(&mut self) {
        let messages = std::mem::take(&mut self.shared.inbox.lock().msgs);
        for msg in messages {
            match msg {
                Msg::Job(job) => self.start_job(job),
                Msg::Loop { run, url } => self.start(run, Who::Loop(url)),
                Msg::Wake(token) => {
                    if self
                        .task_mut(token)
                        .is_some_and(|t| t.state == State::Blocked)
                    {
                        self.make_ready(token, Resume::Ready);
                    }
                }
            }
        }
    }

    /// Starts `job` as a new coroutine (queued to run), counted as a
    /// running request until it ends.
    fn start_job(&mut self, job: Job) {
        let who = Who::Peer(job.peer().clone());
        let run = Box::new(move || {
            // Handler panics are caught inside `run`; anything else must not
            // unwind into the scheduler.
            // (The panic hook leaves every panic in a coroutine to the log.)
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| job.run())) {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(not a string)");
                log::error!("a green request panicked outside its handler: {message}");
            }
        });
        self.start(run, who);
    }

    /// Starts `run` as a new coroutine (queued to run). It must not panic.
    fn start(&mut self, run: Box<dyn FnOnce() + Send>, who: Who) {
        let stack = match self.slabs.take() {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot start the green {who}: no stack: {e}");
                self.finished(&who);
                return; // a job drops: its connection closes
            }
        };
        let co = Co::with_stack(stack, move |yielder: &Yielder, _first: Resume| {
            let _current = green_current::enter(yielder);
            run();
        });
        let (index, generation) = match self.free.pop() {
            Some((index, generation)) => (index, generation.wrapping_add(1)),
            None => {
                self.tasks.push(None);
                (self.tasks.len() - 1, 0)
            }
        };
        self.tasks[index] = Some(Task {
            co,
            who,
            generation,
            state: State::Runnable,
            timer: None,
            wake_at: None,
            fds: Vec::new(),
        });
        self.ready
            .push_back((token(index, generation), Resume::Ready));
    }

    /// Runs the coroutines ready now (not those they make ready: the
    /// reactor gets its turn in between).
    fn run_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some((token, why)) = self.ready.pop_front() else {
                break;
            };
            self.resume(token, why);
        }
    }

    fn resume(&mut self, token: Token, why: Resume) {
        let Some(task) = self.task_mut(token) else {
            return;
        };
        let started = Instant::now();
        RUNNING.with(|r| r.set(token));
        let result = task.co.resume(why);
        RUNNING.with(|r| r.set(NOBODY));
        let ran = started.elapsed();
        if ran > SLOW_RESUME {
            log::warn!(
                "green {} ran {} ms without yielding, stalling every other \
                 connection on its thread: wrap blocking calls in socketserver::green::blocking",
                task.who,
                ran.as_millis()
            );
        }
        match result {
            CoroutineResult::Yield(Suspend::Io {
                fd,
                write,
                also,
                deadline,
            }) => self.wait_io(token, fd, write, also, deadline),
            CoroutineResult::Yield(Suspend::Sleep(until)) => {
                self.wait_timer(token, Some(until), until);
            }
            CoroutineResult::Yield(Suspend::Blocking(call)) => {
                if let Some(task) = self.task_mut(token) {
                    task.state = State::Blocked;
                }
                let shared = Arc::clone(&self.shared);
                super::pool::submit(Box::new(move || {
                    call();
                    shared.send(Msg::Wake(token));
                }));
            }
            CoroutineResult::Return(()) => self.end(token),
        }
    }

    /// The coroutine waits for `fd` (and `also`, if any): registered in
    /// epoll for it (once per coroutine, edge triggered, both directions, by
    /// descriptor number), with a timer for `deadline`. Ready at once when
    /// an event came since its last attempt.
    fn wait_io(
        &mut self,
        token: Token,
        fd: RawFd,
        write: bool,
        also: Option<RawFd>,
        deadline: Option<Instant>,
    ) {
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return self.ready.push_back((token, Resume::TimedOut));
        }
        let mut poll = false;
        for (fd, write) in std::iter::once((fd, write)).chain(also.map(|a| (a, false))) {
            match self.watch(token, fd, write) {
                Watch::Ready => return self.ready.push_back((token, Resume::Ready)),
                Watch::Watching => {}
                Watch::Poll => poll = true,
            }
        }
        if poll {
            // Retry on a short timer (see `Watch::Poll`).
            let retry = Instant::now() + SHARED_FD_POLL;
            let at = deadline.map_or(retry, |d| d.min(retry));
            return self.wait_timer(token, deadline, at);
        }
        if let Some(task) = self.task_mut(token) {
            task.state = State::Io {
                fd,
                write,
                also,
                deadline,
            };
        }
        self.arm(token, deadline);
    }

    /// Makes sure `fd` is registered for coroutine `token`, and tells
    /// whether an event for it (writable if `write`, else readable) came
    /// since its last attempt.
    fn watch(&mut self, token: Token, fd: RawFd, write: bool) -> Watch {
        let Ok(index) = usize::try_from(fd) else {
            return Watch::Ready; // not a descriptor: let the call fail
        };
        let state = FDS.with(|fds| fds.borrow().get(index).copied());
        let owner = state.map(|s| s.owner);
        if owner.is_some_and(|o| o != token && self.task_mut(o).is_some()) {
            // Another coroutine here waits on the same descriptor (a shared
            // datagram socket, a connection written to by another one):
            // epoll wakes one token per descriptor, so this one polls
            // instead of taking the registration away.
            return Watch::Poll;
        }
        if owner == Some(token) {
            let ready = state.is_some_and(|s| {
                if write {
                    s.writable || s.write_closed
                } else {
                    s.readable || s.read_closed
                }
            });
            // An event came while it ran: try again now.
            return if ready { Watch::Ready } else { Watch::Watching };
        }
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let mut source = SourceFd(&fd);
        let registered = match registry.register(&mut source, Token(index), interest) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                registry.reregister(&mut source, Token(index), interest)
            }
            r => r,
        };
        if let Err(e) = registered {
            // Not pollable (a file?).
            log::debug!("green: cannot watch fd {fd}: {e}; polling it");
            return Watch::Poll;
        }
        // A new registration reports the current readiness as an event.
        FDS.with(|fds| {
            let mut fds = fds.borrow_mut();
            if fds.len() <= index {
                fds.resize(index + 1, UNOWNED);
            }
            fds[index] = FdState {
                owner: token,
                ..UNOWNED
            };
        });
        if let Some(task) = self.task_mut(token) {
            task.fds.push(fd);
        }
        Watch::Watching
    }

    /// The coroutine waits for a timer at `at`; when it fires it is timed
    /// out if `deadline` has passed, else woken.
    fn wait_timer(&mut self, token: Token, deadline: Option<Instant>, at: Instant) {
        if let Some(task) = self.task_mut(token) {
            task.state = State::Timer { deadline };
        }
        self.arm(token, Some(at));
    }

    /// The waiting coroutine `token` is to wake at `at` (`None`: only on an
    /// event): keeps its timer entry if that fires no later, else moves it.
    fn arm(&mut self, token: Token, at: Option<Instant>) {
        let seq = self.timer_seq + 1;
        let Some(task) = self.task_mut(token) else {
            return;
        };
        task.wake_at = at;
        let Some(at) = at else {
            return;
        };
        let stale = match task.timer {
            Some((entry, _)) if entry <= at => return,
            stale => stale,
        };
        let key = (at, seq);
        task.timer = Some(key);
        if let Some(stale) = stale {
            self.timers.remove(&stale);
        }
        self.timer_seq = seq;
        self.timers.insert(key, token);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let token = entry.remove();
            let Some(task) = self.task_mut(token) else {
                continue;
            };
            task.timer = None;
            let deadline = match task.state {
                State::Io { deadline, .. } | State::Timer { deadline } => deadline,
                State::Runnable | State::Blocked => continue,
            };
            match task.wake_at {
                // Woke early since this entry was made, and waits again for
                // later: the entry moves there.
                Some(at) if at > now => {
                    self.arm(token, Some(at));
                    continue;
                }
                Some(_) => {}
                None => continue,
            }
            let why = if deadline.is_some_and(|d| d <= now) {
                Resume::TimedOut
            } else {
                Resume::Ready
            };
            self.make_ready(token, why);
        }
    }

    /// A coroutine returned: its stack goes back to the slabs.
    fn end(&mut self, token: Token) {
        let (index, generation) = split(token);
        let Some(task) = self.tasks.get_mut(index).and_then(Option::take) else {
            return;
        };
        if let Some(key) = task.timer {
            self.timers.remove(&key);
        }
        // A request's descriptors are closed, or another coroutine
        // registers them again (epoll keeps an open one registered:
        // `reregister` then). A server loop's stay open (the listening and
        // wake-up sockets): they leave this epoll, or every new connection
        // would wake this worker for nothing.
        let is_loop = matches!(task.who, Who::Loop(_));
        FDS.with(|fds| {
            let mut fds = fds.borrow_mut();
            for fd in &task.fds {
                if let Some(s) = usize::try_from(*fd).ok().and_then(|i| fds.get_mut(i)) {
                    if s.owner == token {
                        *s = UNOWNED;
                        if is_loop {
                            let _ = self.poll.registry().deregister(&mut SourceFd(fd));
                        }
                    }
                }
            }
        });
        self.free.push((index, generation));
        // A closing worker keeps the touched pages: its slabs all go soon,
        // in a few `munmap`s rather than one `madvise` per stack.
        let closing = self.shared.closing.load(Ordering::Relaxed);
        self.slabs.give(task.co.into_stack(), !closing);
        self.finished(&task.who);
    }

    /// A coroutine (or one that could not start) is gone.
    fn finished(&self, who: &Who) {
        self.shared.load.fetch_sub(1, Ordering::SeqCst);
        if let Who::Peer(_) = who {
            self.active.decrement();
        }
    }
}
