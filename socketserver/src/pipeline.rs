//! The life of a connection, stage by stage. Each stage knows only itself
//! and hands the request on, or ends it (counted and logged by reason):
//!
//! ```text
//! accept ─> admission ─> PROXY header ─> TLS handshake ─> handler
//! (loop)    admission.rs  proxy.rs        tls.rs          handler.rs
//!           └── in the server loop ──┘└── in the request's thread, child or coroutine ──┘
//! ```
//!
//! * **accept**: the server loop takes the connection off the socket
//!   (`Server::serve_forever`).
//! * **admission** (`admission.rs`): the drain, the allow and deny
//!   lists, `max_connections`, `max_per_ip`, the pre-handler budget; then
//!   `verify_request` when the socket's peer is the client. Runs in the
//!   loop, before a thread, child or coroutine is spent on the connection.
//! * **PROXY header** ([`crate::proxy`]): behind a proxy the client is
//!   known here; admission's lists and `max_per_ip`, and `verify_request`,
//!   then apply to it.
//! * **TLS handshake** (`tls.rs`, feature `tls`), then `verify_tls`.
//! * **handler**: the connection leaves the pre-handler budget and the
//!   handler runs.
//!
//! Every strategy runs the same pipeline: the loop's part in the loop, the
//! rest in the request's context. A datagram request has only admission's
//! `verify_request` and its handler.

use std::sync::atomic::Ordering::Relaxed;

use crate::admission::Admission;
use crate::connections::Registry;
use crate::handler::Handler;
use crate::refusal::Refusal;
use crate::request::sealed::Tracked;
use crate::{Address, StreamRequest};

/// The stages a server's connections go through after accept.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    pub(crate) admission: Admission,
    /// The PROXY protocol, when on.
    pub(crate) proxy: Option<crate::proxy::Gate>,
    /// TLS, when on: the server's, or each listener's.
    pub(crate) tls: TlsGates,
}

/// The TLS of a server's connections: the server's
/// ([`Builder::tls`](crate::Builder::tls)), or one per listener when a
/// [`Listeners`](crate::transport::Listeners) set says so.
#[derive(Debug, Default)]
pub(crate) struct TlsGates {
    /// The server's.
    pub(crate) server: Option<crate::tls_session::Gate>,
    /// Each listener's, by index; empty: every listener has the server's.
    pub(crate) listeners: Vec<Option<crate::tls_session::Gate>>,
}

impl TlsGates {
    /// The TLS of connections accepted by listener `index` (`None`: plain).
    pub(crate) fn of(&self, index: usize) -> Option<&crate::tls_session::Gate> {
        match self.listeners.get(index) {
            Some(gate) => gate.as_ref(),
            None => self.server.as_ref(),
        }
    }
}

impl Pipeline {
    /// Whether a PROXY header comes first on `req` (a stream connection
    /// with the protocol on): its client is known only after it.
    pub(crate) fn proxied<R: Tracked>(&self, req: &R) -> bool {
        self.proxy.is_some() && req.conn().is_some()
    }

    /// The stages after admission, in the request's context, then the
    /// handler. Returns whether the request succeeded.
    pub(crate) fn run<R, H>(&self, mut req: R, handler: &H, registry: &Registry) -> bool
    where
        R: Tracked,
        H: Handler<R>,
    {
        let _running = registry.start_request();
        if let Some(stream) = req.as_stream() {
            if !self.reach_handler(stream, handler, registry) {
                return false;
            }
        }
        let started = std::time::Instant::now();
        let outcome = handler.serve_request(req);
        registry.counters.request(outcome, started.elapsed());
        let ok = outcome == crate::counters::Outcome::Finished;
        let counter = if ok {
            &registry.counters.completed
        } else {
            &registry.counters.failed
        };
        counter.fetch_add(1, Relaxed);
        ok
    }

    /// PROXY header, the client's admission, TLS: whether the connection
    /// reaches its handler.
    fn reach_handler<R, H>(
        &self,
        stream: &mut StreamRequest,
        handler: &H,
        registry: &Registry,
    ) -> bool
    where
        H: Handler<R>,
    {
        if let Some(gate) = &self.proxy {
            if !crate::proxy::read_header(stream, gate, registry)
                || !self.admission.admit_client(stream, registry)
                || !verified(stream.peer_addr(), registry, |a| handler.verify(a))
            {
                return false;
            }
        }
        if let Some(gate) = self.tls.of(stream.listener()) {
            if !crate::tls_session::handshake(stream, gate, registry) {
                return false;
            }
            #[cfg(feature = "tls")]
            if !crate::tls::verified(stream, registry, |p, i| handler.verify_session(p, i)) {
                return false;
            }
        }
        if let Some(registration) = stream.registration_mut() {
            registration.established();
        }
        true
    }
}

/// `verify_request` for `peer`; a refusal is counted (and logged at debug).
pub(crate) fn verified(
    peer: &Address,
    registry: &Registry,
    verify: impl FnOnce(&Address) -> bool,
) -> bool {
    if verify(peer) {
        return true;
    }
    registry.refused(peer, &Refusal::Verify("verify_request"));
    false
}
