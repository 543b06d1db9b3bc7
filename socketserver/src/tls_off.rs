//! Without the `tls` feature: TLS settings that cannot exist, so the
//! pipeline's TLS stage compiles away.

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
