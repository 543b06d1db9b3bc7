//! TLS for the TCP modes: a rustls client (ring provider) that trusts one CA file and
//! never resumes a session, so every connection in connect mode is a full handshake.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::error::Error;

/// How connections speak TLS: the client configuration and the name the server's
/// certificate must carry. Cheap to clone (the configuration is shared).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that trusts the PEM certificates in `ca_file` (a CA, or the server's
    /// self-signed certificate) and checks that the server's certificate is valid for
    /// `name` (a DNS name such as `localhost`, or an IP address such as `127.0.0.1`).
    /// TLS 1.2 and 1.3 are offered (1.3 is what rustls servers pick), with the ring
    /// provider's default cipher suites; session resumption is off (no tickets, no
    /// session cache), so every new connection pays for a full handshake.
    pub fn from_ca_file(ca_file: &Path, name: &str) -> Result<TlsClient, Error> {
        let bad =
            |what: String| Error::InvalidConfig(format!("--tls-ca {}: {what}", ca_file.display()));
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS client: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| Error::InvalidConfig(format!("TLS server name {name:?}: {e}")))?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A new client session (no bytes sent yet).
    pub(crate) fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.name.clone())
    }

    /// The server name certificates are checked against.
    pub fn server_name(&self) -> String {
        self.name.to_str().into_owned()
    }
}
