use std::io;

use super::{Job, Strategy};
use crate::ShutdownHandle;

/// Runs each request inline in the server loop: one at a time, in arrival
/// order. Python: `TCPServer`/`UDPServer` without a mix-in.
///
/// Right for datagram servers with quick handlers (no thread per datagram)
/// and for teaching; a stream client that stays connected blocks every
/// other client until it leaves.
///
/// ```no_run
/// use socketserver::{Server, StreamRequest, Synchronous};
///
/// let server = Server::builder()
///     .strategy(Synchronous)
///     .tcp("127.0.0.1:0", |r: &mut StreamRequest| r.echo().map(drop))?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Synchronous;

impl Strategy for Synchronous {
    fn execute(&self, job: Job, _shutdown: &ShutdownHandle) -> io::Result<()> {
        job.run();
        Ok(())
    }

    fn runs_inline(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "synchronous"
    }
}
