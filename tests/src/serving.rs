//! [`Serving`]: a TCP server running `serve_forever` on its own thread with
//! its counters at hand (`stats()`), shut down (with a deadline) on drop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use socketserver::{Server, ShutdownHandle, Stats, Strategy, StreamHandler};

use crate::{within, DEADLINE};

/// A TCP server on its own thread; its stats stay readable.
pub struct Serving {
    /// Its address.
    pub addr: SocketAddr,
    stats: Box<dyn Fn() -> Stats + Send>,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Serving {
    /// Starts `server.serve_forever()` on a thread.
    pub fn start<S, H>(server: Server<socketserver::transport::Tcp, S, H>) -> Serving
    where
        S: Strategy,
        H: StreamHandler,
    {
        let server = Arc::new(server);
        let addr = server.local_addr().expect("a TCP server");
        let stop = server.shutdown_handle();
        let for_stats = Arc::clone(&server);
        let thread = thread::spawn(move || server.serve_forever());
        Serving {
            addr,
            stats: Box::new(move || for_stats.stats()),
            stop,
            thread: Some(thread),
        }
    }

    /// Its counters now.
    pub fn stats(&self) -> Stats {
        (self.stats)()
    }

    /// Its address, as the other helpers take it.
    pub fn address(&self) -> socketserver::Address {
        socketserver::Address::Inet(self.addr)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            within(DEADLINE, "serve_forever returns", move || t.join().unwrap())
                .expect("serve_forever");
        }
    }
}
