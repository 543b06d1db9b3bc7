//! The command-line life of a demo server process: the operator's
//! preparations ([`OpsArgs`](crate::cli::OpsArgs)), the `listening on`
//! lines, every service served until SIGINT or SIGTERM (or handed over by
//! a `SIGUSR2` upgrade), then the drain ([`serve_all`]); and
//! [`serve_authenticated`] for the servers whose clients authenticate.

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socketserver::tls::ServerConfig;
use socketserver::{Builder, Server, ShutdownHandle, Strategy, StreamHandler};

use crate::cli::{CliError, ServerArgs};
use crate::listening::{print_listening, print_metrics};
use crate::ops::Prepared;
use crate::service::{stream_service_on, Service, Upgrading};

/// The command-line life of a server process: installs SIGINT/SIGTERM
/// handling, prints every `listening on` line (all of them before any
/// serving starts), serves each service on its own thread (the last one on
/// the calling thread, so a lone forking server stays single-threaded), and
/// returns once all have stopped and closed gracefully. When one stops for
/// any reason, the others are stopped too.
///
/// `SIGUSR2` upgrades the process: this program starts again with the
/// sockets of all the services (its services adopt them), and once it
/// serves, this one stops accepting, lets its connections finish and
/// returns (`socketserver::reload`). The upgrade watches the signal on a
/// thread of its own, so a process with a forking service (`forking`,
/// `prefork`), which must fork from a single thread, has no upgrade:
/// there `SIGUSR2` stops the servers gracefully, as SIGTERM does.
///
/// The operator's options ([`OpsArgs`](crate::cli::OpsArgs) in `server`)
/// apply once the services are bound, before the `listening on` lines:
/// the metrics endpoint is bound (`--metrics`; its `metrics on` line
/// follows the `listening on` lines), the pid file written and locked (and
/// removed on return), and the process becomes `--user`.
pub fn serve_all(services: Vec<Box<dyn Service>>, server: &ServerArgs) -> Result<(), CliError> {
    let prepared = server.ops.prepare(&services)?;
    serve_prepared(services, server.drain_secs, prepared)?;
    Ok(())
}

fn serve_prepared(
    mut services: Vec<Box<dyn Service>>,
    drain: Duration,
    prepared: Prepared,
) -> io::Result<()> {
    let Prepared { pid_file, metrics } = prepared;
    let handles: Vec<ShutdownHandle> = services.iter().map(|s| s.shutdown_handle()).collect();
    // Before the `listening on` lines: a script may signal as soon as it has
    // read them.
    let forking = services.iter().any(|s| s.forks());
    for h in &handles {
        h.shutdown_on_signals(&[socketserver::Signal::Int, socketserver::Signal::Term])?;
        if forking {
            h.shutdown_on_signals(&[socketserver::Signal::Usr2])?;
        }
    }
    if let Some(m) = &metrics {
        m.shutdown_handle()
            .shutdown_on_signals(&[socketserver::Signal::Int, socketserver::Signal::Term])?;
    }
    if services.is_empty() {
        let mut out = io::stdout().lock();
        if let Some(m) = &metrics {
            print_metrics(&mut out, &m.address())?;
        }
        return Ok(());
    }
    // Served, stopped and handed over in an upgrade as the others are (its
    // socket last, as the new process binds it last).
    let own = services.len();
    let with_metrics = metrics.is_some();
    services.extend(metrics);
    let handles: Vec<ShutdownHandle> = services.iter().map(|s| s.shutdown_handle()).collect();
    // Also before the `listening on` lines: until the watch is in place,
    // SIGUSR2 has its default action and ends the process.
    let upgrading = if forking {
        log::info!(
            "SIGUSR2 upgrades are off: a forking server forks from a single thread, and the \
             upgrade watches for the signal on a thread of its own"
        );
        None
    } else {
        Some(Arc::new(Upgrading::start(&services, pid_file.as_ref())?))
    };
    {
        let mut out = io::stdout().lock();
        print_listening(&mut out, services[..own].iter().flat_map(|s| s.urls()))?;
        if with_metrics {
            print_metrics(&mut out, &services[own].address())?;
        }
    }
    if with_metrics {
        // The demo's own last service stays the one on this thread.
        services.rotate_right(1);
    }
    let Some(last) = services.pop() else {
        return Ok(());
    };
    let stop_all = {
        let handles = handles.clone();
        move || handles.iter().for_each(ShutdownHandle::shutdown)
    };
    let mut threads = Vec::new();
    for s in services {
        let stop_all = stop_all.clone();
        let upgrading = upgrading.clone();
        let name = format!("serve {}", s.url());
        threads.push(thread::Builder::new().name(name).spawn(move || {
            let r = s.run(drain, upgrading.as_deref());
            stop_all();
            r
        })?);
    }
    let mut result = last.run(drain, upgrading.as_deref());
    stop_all();
    for t in threads {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a server thread panicked")));
        result = result.and(r);
    }
    result
}

/// The command-line life of a server whose connections authenticate
/// (`demos shell serve`, `demos files serve`): serves `handler` on
/// `--listen` with `--strategy` and `--workers`, speaking TLS when `tls`
/// is given, as [`serve_all`] does (until SIGINT or SIGTERM, then the
/// `--drain-secs` deadline). `configure` gives the builder the handler's
/// own settings; `close_handshakes` runs on a clone of the handler when
/// the loop returns, before the drain (connections still authenticating
/// have nothing to finish).
pub fn serve_authenticated<H: StreamHandler + Clone>(
    server: &ServerArgs,
    tls: Option<Arc<ServerConfig>>,
    handler: H,
    configure: impl FnOnce(&H, Builder<Box<dyn Strategy>>) -> Builder<Box<dyn Strategy>>,
    close_handshakes: impl FnOnce(&H) + Send + 'static,
) -> Result<(), CliError> {
    let mut builder = configure(
        &handler,
        server
            .configure(Server::builder().strategy(server.strategy().build(server.workers)))
            .close_timeout(server.drain_secs),
    );
    server.check_plain(tls.is_some())?;
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let closer = handler.clone();
    let service = stream_service_on(
        builder,
        &server.addresses(),
        handler,
        Some(Box::new(move || close_handshakes(&closer))),
    )?;
    serve_all(vec![service], server)
}
