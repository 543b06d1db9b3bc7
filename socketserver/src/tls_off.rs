//! Without the `tls` feature: a session type that cannot exist, so the
//! request's TLS paths compile away.

use std::io;

use crate::conn::Conn;

/// No TLS session is ever made without the feature.
#[derive(Debug)]
pub(crate) enum Session {}

impl Session {
    pub(crate) fn read(&mut self, _: &Conn, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    pub(crate) fn write_all(&mut self, _: &mut dyn io::Write, _: &[u8]) -> io::Result<()> {
        match *self {}
    }
    pub(crate) fn has_plaintext(&mut self) -> bool {
        match *self {}
    }
    pub(crate) fn close(&mut self, _: &Conn) {
        match *self {}
    }
}

/// No TLS settings without the feature.
#[derive(Debug)]
pub(crate) enum Gate {}

/// No TLS settings without the feature.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config(());

impl Config {
    #[allow(clippy::unused_self)] // the same call as with the feature
    pub(crate) fn gate(&self) -> Option<Gate> {
        None
    }
}

/// Never called: no `Gate` exists without the feature.
pub(crate) fn handshake(
    _: &mut crate::StreamRequest,
    gate: &Gate,
    _: &crate::connections::Registry,
) -> bool {
    match *gate {}
}
