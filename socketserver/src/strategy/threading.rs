use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{ActiveCount, ActiveGuard, Job, Strategy};
use crate::ShutdownHandle;

/// A new thread per request. Python: `ThreadingMixIn`.
///
/// The heart of the project: simple blocking handler code, each client
/// served at once. Threads are named after their peer (`conn 127.0.0.1:5001`,
/// visible in `top -H` and panic messages). A finished thread leaves nothing
/// behind: the server keeps a count of running requests, not a list of
/// threads, so long-running servers do not grow.
///
/// On close, the server waits for running requests when `block_on_close` is
/// on (the default, as in Python 3.7+); with it off (Python's
/// `daemon_threads = True`) it returns at once and the threads finish on
/// their own (or die with the process).
///
/// ```
/// use socketserver::{Server, StreamRequest, Threading};
///
/// let server = Server::builder()
///     .strategy(Threading::new().stack_size(256 * 1024))
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Threading {
    stack_size: Option<usize>,
    daemon: bool,
    active: Arc<ActiveCount>,
}

impl Threading {
    /// Default settings: the standard library's stack size (2 MiB of address
    /// space, of which only touched pages cost memory), `block_on_close` on.
    pub fn new() -> Threading {
        Threading::default()
    }

    /// Stack size of request threads in bytes. Smaller stacks let more
    /// threads fit in the address space (e.g. 10,000 idle connections).
    pub fn stack_size(mut self, bytes: usize) -> Threading {
        self.stack_size = Some(bytes);
        self
    }

    /// Whether closing the server waits for running requests (default
    /// `true`). Python: `block_on_close`.
    pub fn block_on_close(mut self, block: bool) -> Threading {
        self.daemon = !block;
        self
    }

    /// Python's `daemon_threads`: the opposite of `block_on_close`.
    pub fn daemon_threads(self, daemon: bool) -> Threading {
        self.block_on_close(!daemon)
    }
}

impl Strategy for Threading {
    fn execute(&self, job: Job, _shutdown: &ShutdownHandle) -> io::Result<()> {
        let mut builder = thread::Builder::new().name(format!("conn {}", job.peer()));
        if let Some(size) = self.stack_size {
            builder = builder.stack_size(size);
        }
        let active = Arc::clone(&self.active);
        active.increment();
        let spawned = builder.spawn(move || {
            let _guard = ActiveGuard(&active);
            job.run();
        });
        match spawned {
            Ok(_detached) => Ok(()),
            Err(e) => {
                // The closure (and the job, and its connection) was dropped.
                self.active.decrement();
                Err(e)
            }
        }
    }

    fn close(&self) {
        if !self.daemon {
            self.active.wait_zero();
        }
    }

    fn active(&self) -> usize {
        self.active.get()
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        self.active.wait_zero_for(timeout)
    }

    fn name(&self) -> &'static str {
        "threading"
    }
}
