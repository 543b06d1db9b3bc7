//! One green worker: an OS thread that runs coroutines until they suspend,
//! then waits in its reactor for their descriptors, timers and mail. A
//! coroutine runs on the worker that started it until it ends.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corosensei::CoroutineResult;
use mio::Token;

use super::coroutine::{Co, Ended, Resume, Suspend, Who, Yielder};
use super::current;
use super::detector::Detector;
use super::inbox::{Inbox, Msg, Owned};
use super::reactor::{Hit, Reactor, Watch};
use super::stacks::Slabs;
use super::throttle::Throttle;
use super::timers::{Key, Timers};
use super::{abandon, companion, overflow, reactor};
use crate::Address;

/// A coroutine that runs longer than this without suspending is reported:
/// it held up every other connection on its thread meanwhile.
pub(crate) const SLOW_RESUME: Duration = Duration::from_millis(100);

/// How often a wait on a descriptor that another coroutine of the same
/// worker is registered for is retried (see `Worker::wait_io`).
const SHARED_FD_POLL: Duration = Duration::from_millis(1);

/// Spare stacks kept for reuse per worker with their touched pages (more
/// are kept mapped while their slab is in use, but their pages go back).
const STACK_CACHE: usize = 256;

/// How long after a stack goes back its pages below the top 32 KiB (touched
/// by a deep request, if any) are given back (see `Slabs::sweep`): one
/// sweep for all the stacks given back meanwhile, rather than an `madvise`
/// per request.
const STACK_SWEEP: Duration = Duration::from_millis(500);

/// At most one "no stack" error per this period (each held back is counted
/// in the next).
const NO_STACK_LOG: Duration = Duration::from_secs(10);

/// At most one stack overflow report per this period per worker.
const OVERFLOW_LOG: Duration = Duration::from_secs(1);

/// Settings of a worker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) stack_size: usize,
    /// Microseconds the workers were blocked by coroutines that did not
    /// yield (see `detector`).
    pub(crate) blocked_us: Arc<AtomicU64>,
}

/// Starts a worker thread named `name`; returns its inbox.
pub(crate) fn spawn(
    name: String,
    config: Config,
) -> io::Result<(Arc<Inbox>, std::thread::JoinHandle<()>)> {
    super::stacks::report_guards();
    let (reactor, waker) = Reactor::new()?;
    let inbox = Arc::new(Inbox::new(waker));
    let handle = Arc::clone(&inbox);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        let _alt_stack = overflow::prepare_thread();
        Worker {
            inbox: Owned::new(handle),
            reactor,
            tasks: Vec::new(),
            free: Vec::new(),
            ready: VecDeque::new(),
            timers: Timers::default(),
            slabs: Slabs::new(config.stack_size, STACK_CACHE),
            no_stack: Throttle::new(NO_STACK_LOG),
            overflows: Throttle::new(OVERFLOW_LOG),
            detector: Detector::new(config.blocked_us),
            hits: Vec::with_capacity(1024),
            sweep_at: None,
        }
        .run();
    })?;
    Ok((inbox, thread))
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
    /// Until another coroutine of this worker wakes it.
    Parked,
}

/// A coroutine of this worker and what the worker knows of it.
struct Task {
    co: Co,
    /// Its stack's guard, `[lo, hi)`.
    guard: (usize, usize),
    who: Who,
    generation: u32,
    state: State,
    /// Its entry in the worker's timers, if any: at most one per
    /// coroutine, never later than `wake_at` while it waits (see
    /// [`Timers::arm`]).
    timer: Option<Key>,
    /// When the current wait should end (a deadline or a retry), if ever.
    wake_at: Option<Instant>,
    /// The descriptors registered for it (forgotten when it ends).
    fds: Vec<RawFd>,
    /// The companions it spawned (cancelled when it ends).
    companions: Vec<Token>,
    /// A companion whose request ended: its waits end at once. Also a
    /// request one of whose companions overflowed its stack.
    cancelled: bool,
    /// The coroutine that spawned this companion (`None`: not a companion).
    parent: Option<Token>,
    /// A request one of whose companions overflowed its stack: it lost its
    /// connection, which its next read or write shuts down (see `doom`).
    doomed: bool,
}

struct Worker {
    inbox: Owned,
    reactor: Reactor,
    tasks: Vec<Option<Task>>,
    /// Free slots of `tasks`, with the generation of their last task.
    free: Vec<(usize, u32)>,
    ready: VecDeque<(Token, Resume)>,
    timers: Timers,
    /// "no stack" errors (one per connection closed for want of a stack).
    no_stack: Throttle,
    /// Stack overflow reports.
    overflows: Throttle,
    detector: Detector,
    /// The events of the last wait in the reactor.
    hits: Vec<Hit>,
    /// When the stacks given back are next swept (see [`STACK_SWEEP`]).
    sweep_at: Option<Instant>,
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
        loop {
            self.take_inbox();
            self.run_ready();
            // What this worker's own server loop placed here meanwhile
            // (sent without a wake-up).
            self.take_inbox();
            if self.inbox.is_stopped() && self.live() == 0 {
                return;
            }
            let timeout = if self.ready.is_empty() {
                let next = match (self.timers.next(), self.sweep_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                next.map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            // One list of events, kept between turns (no allocation per turn).
            let mut hits = std::mem::take(&mut self.hits);
            hits.clear();
            if let Err(e) = self.reactor.wait(timeout, |hit| hits.push(hit)) {
                self.hits = hits;
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("green worker: epoll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for hit in &hits {
                self.event(hit);
            }
            self.hits = hits;
            self.fire_timers();
            self.sweep_stacks();
        }
    }

    /// Gives back the deep pages of the stacks given back since the last
    /// sweep, when it is time.
    fn sweep_stacks(&mut self) {
        if self.sweep_at.is_some_and(|at| at <= Instant::now()) {
            self.sweep_at = None;
            self.slabs.sweep();
        }
    }

    /// An event for a descriptor: its coroutine is ready if it waits for it.
    fn event(&mut self, hit: &Hit) {
        let Some(task) = self.task_mut(hit.owner) else {
            return; // an ended coroutine's descriptor
        };
        if let State::Io {
            fd, write, also, ..
        } = task.state
        {
            let wanted = (fd == hit.fd && ((write && hit.write) || (!write && hit.read)))
                || (also == Some(hit.fd) && hit.read);
            if wanted {
                self.make_ready(hit.owner, Resume::Ready);
            }
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

    /// Queues a waiting coroutine to run.
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
        for msg in self.inbox.take() {
            match msg {
                Msg::Request { peer, run } => self.start_request(peer, run),
                Msg::Loop { run, url } => {
                    self.start(run, Who::Loop(url));
                }
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

    /// Starts request `run` as a new coroutine (queued to run), counted as
    /// a running request until it ends.
    fn start_request(&mut self, peer: Address, request: Box<dyn FnOnce() -> bool + Send>) {
        let who = Who::Peer(peer);
        let run = Box::new(move || {
            // Handler panics are caught inside `run`; anything else must not
            // unwind into the scheduler.
            // (The panic hook leaves every panic in a coroutine to the log.)
            if let Err(panic) = catch_unwind(AssertUnwindSafe(request)) {
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
    fn start(&mut self, run: Box<dyn FnOnce() + Send>, who: Who) -> Option<Token> {
        let stack = match self.slabs.take() {
            Ok(s) => s,
            Err(e) => {
                if let Some(held) = self.no_stack.pass() {
                    log::error!(
                        "cannot start the green {who}: no stack: {e} (closing it; {held} more \
                         since the last such error; see vm.max_map_count and Green::stack_size)"
                    );
                }
                self.inbox.finished();
                return None; // a job drops: its connection closes
            }
        };
        let guard = stack.guard();
        let co = Co::with_stack(stack, move |yielder: &Yielder, _first: Resume| {
            let _current = current::enter(yielder);
            run();
            Ended::Returned
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
            guard,
            who,
            generation,
            state: State::Runnable,
            timer: None,
            wake_at: None,
            fds: Vec::new(),
            companions: Vec::new(),
            cancelled: false,
            parent: None,
            doomed: false,
        });
        let token = token(index, generation);
        self.ready.push_back((token, Resume::Ready));
        Some(token)
    }

    /// Starts the companions the coroutine just run spawned, and wakes the
    /// coroutines its end (as a companion) unparked.
    fn companions(&mut self) {
        for (parent, body) in companion::take_spawned() {
            let Some(of) = self.task_mut(parent).map(|t| t.who.to_string()) else {
                continue; // its request is gone already: dropped unrun
            };
            self.inbox
                .load
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(child) = self.start(body, Who::Companion(of)) {
                if let Some(c) = self.task_mut(child) {
                    c.parent = Some(parent);
                }
                if let Some(p) = self.task_mut(parent) {
                    p.companions.push(child);
                }
            }
        }
        for token in companion::take_woken() {
            if self
                .task_mut(token)
                .is_some_and(|t| t.state == State::Parked)
            {
                self.make_ready(token, Resume::Ready);
            }
        }
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
        let (index, generation) = split(token);
        let Some(task) = self
            .tasks
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|t| t.generation == generation)
        else {
            return;
        };
        let cancelled = task.cancelled;
        let started = Instant::now();
        current::set_running(token, task.doomed);
        overflow::arm(&task.co, task.guard);
        let result = task.co.resume(why);
        overflow::disarm();
        current::set_running(current::NOBODY, false);
        let now = Instant::now();
        let ran = now.saturating_duration_since(started);
        self.detector.ran(ran, &task.who);
        self.detector.tick(now);
        if ran > SLOW_RESUME {
            log::warn!(
                "green {} ran {} ms without yielding, stalling every other \
                 connection on its thread: wrap blocking calls in socketserver::green::blocking",
                task.who,
                ran.as_millis()
            );
        }
        if companion::pending() {
            self.companions();
        }
        match result {
            CoroutineResult::Yield(Suspend::Io { .. } | Suspend::Sleep(_) | Suspend::Park)
                if cancelled =>
            {
                self.ready.push_back((token, Resume::Cancelled));
            }
            CoroutineResult::Yield(Suspend::Park) => {
                if let Some(task) = self.task_mut(token) {
                    task.state = State::Parked;
                }
            }
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
                let inbox = self.inbox.handle();
                super::pool::submit(Box::new(move || {
                    call();
                    inbox.send(Msg::Wake(token));
                }));
            }
            CoroutineResult::Return(ended) => self.end(token, ended),
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
            let tasks = &self.tasks;
            let live = |o: Token| {
                let (index, generation) = split(o);
                tasks
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|t| t.generation == generation)
            };
            match self.reactor.watch(token, fd, write, live) {
                Watch::Ready => return self.ready.push_back((token, Resume::Ready)),
                Watch::Watching => {}
                Watch::Registered => {
                    if let Some(task) = self.task_mut(token) {
                        task.fds.push(fd);
                    }
                }
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

    /// The coroutine waits for a timer at `at`; when it fires it is timed
    /// out if `deadline` has passed, else woken.
    fn wait_timer(&mut self, token: Token, deadline: Option<Instant>, at: Instant) {
        if let Some(task) = self.task_mut(token) {
            task.state = State::Timer { deadline };
        }
        self.arm(token, Some(at));
    }

    /// The waiting coroutine `token` is to wake at `at` (`None`: only on an
    /// event).
    fn arm(&mut self, token: Token, at: Option<Instant>) {
        let (index, generation) = split(token);
        let Some(task) = self
            .tasks
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|t| t.generation == generation)
        else {
            return;
        };
        task.wake_at = at;
        if let Some(at) = at {
            self.timers.arm(&mut task.timer, token, at);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(token) = self.timers.expired(now) {
            let Some(task) = self.task_mut(token) else {
                continue;
            };
            task.timer = None;
            let deadline = match task.state {
                State::Io { deadline, .. } | State::Timer { deadline } => deadline,
                State::Runnable | State::Blocked | State::Parked => continue,
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

    /// A coroutine ended: its stack goes back to the slabs.
    fn end(&mut self, token: Token, ended: Ended) {
        let (index, generation) = split(token);
        let Some(task) = self.tasks.get_mut(index).and_then(Option::take) else {
            return;
        };
        if let Some(key) = task.timer {
            self.timers.remove(&key);
        }
        let overflowed = ended == Ended::Overflowed;
        if overflowed {
            self.overflowed(&task);
        }
        // A server loop's descriptors stay open (the listening and wake-up
        // sockets): they leave this epoll, or every new connection would
        // wake this worker for nothing. So do those of an abandoned
        // request, which may live on in a copy (`try_clone`).
        let is_loop = matches!(task.who, Who::Loop(_));
        self.reactor.forget(token, &task.fds, is_loop || overflowed);
        if overflowed {
            // The request's socket closes, its place in the registry goes.
            abandon::release(token);
            if let Some(parent) = task.parent {
                self.doom(parent);
            }
        }
        self.free.push((index, generation));
        // A closing worker keeps the touched pages: its slabs all go soon,
        // in a few `munmap`s rather than one `madvise` per stack.
        let closing = self.inbox.is_closing();
        self.slabs.give(task.co.into_stack(), !closing);
        if self.sweep_at.is_none() && self.slabs.dirty() {
            self.sweep_at = Some(Instant::now() + STACK_SWEEP);
        }
        self.inbox.finished();
        // Its companions end with it: their waits end at once.
        for child in task.companions {
            if let Some(c) = self.task_mut(child) {
                c.cancelled = true;
                if !matches!(c.state, State::Runnable | State::Blocked) {
                    self.make_ready(child, Resume::Cancelled);
                }
            }
        }
    }

    /// A companion of `token` (or of one of its companions) overflowed its
    /// stack: the request it serves loses its connection, as it would had
    /// it overflowed itself, but its own stack is sound, so it is not
    /// abandoned. It is cancelled: every wait of it ends at once
    /// (`ConnectionAborted`, a join with an error), and its next read or
    /// write shuts its connection down and fails (see `io`), so that
    /// nothing more reaches the client; it then returns as after any I/O
    /// error, dropping what it holds, and its companions end with it.
    fn doom(&mut self, mut token: Token) {
        // The request at the root of the companions.
        while let Some(parent) = self.task_mut(token).and_then(|t| t.parent) {
            token = parent;
        }
        let Some(task) = self.task_mut(token) else {
            return; // it ended already
        };
        if !matches!(task.who, Who::Peer(_)) {
            return; // a server loop goes on (its companions are its own)
        }
        task.cancelled = true;
        task.doomed = true;
        let waiting = !matches!(task.state, State::Runnable | State::Blocked);
        abandon::companion_lost(token);
        if waiting {
            self.make_ready(token, Resume::Cancelled);
        }
    }

    /// Coroutine `token` ran into its stack's guard and was abandoned (see
    /// `overflow`): this worker goes on if its own state is sound, and
    /// reports it.
    fn overflowed(&mut self, task: &Task) {
        // Its body never reached the end of `current::enter`'s guard.
        current::forget();
        if !reactor::consistent() || !abandon::consistent() {
            // Abandoned in the middle of the worker's own bookkeeping.
            log::error!(
                "green {}: stack overflow (stack_size {}) inside the worker's own state: \
                 aborting the process",
                task.who,
                self.slabs.size
            );
            std::process::abort();
        }
        if let Who::Loop(_) = task.who {
            // `serve_forever` waits for a reply that lived on that stack.
            log::error!(
                "green {}: stack overflow (stack_size {}) in the server loop (verify_request, \
                 service_actions): aborting the process",
                task.who,
                self.slabs.size
            );
            std::process::abort();
        }
        if let Some(held) = self.overflows.pass() {
            log::error!(
                "green {}: stack overflow (stack_size {}): its connection is closed, what it \
                 held on its stack is leaked ({held} more overflows since the last report); \
                 raise Green::stack_size",
                task.who,
                self.slabs.size
            );
        }
    }
}
