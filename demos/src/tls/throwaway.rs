//! `demos tls gen DIR`: a throwaway certificate authority and a server and
//! a client certificate it signed, for trying TLS and mutual TLS on one
//! machine. Not for production: the CA key sits next to the certificates.
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca-key.pem` | the CA (`--tls-ca`, `--tls-client-ca`) |
//! | `server.pem`, `server-key.pem` | names `localhost`, `127.0.0.1`, `::1` (`--tls-cert`, `--tls-key` of a server) |
//! | `client.pem`, `client-key.pem` | a client certificate (`--tls-cert`, `--tls-key` of a client) |
//!
//! Keys are ECDSA P-256, written with mode 0600; existing files are not
//! replaced unless `force`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The files `demos tls gen` writes, in order.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// The names in the server certificate.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn err(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("certificate generation: {e}"))
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "demos (throwaway)");
    dn.push(DnType::CommonName, common);
    dn
}

/// Writes the six files into `dir` (created if missing); returns their
/// paths. Refuses (`AlreadyExists`, naming the file) when one exists,
/// unless `force`; then nothing is written.
pub fn generate(dir: &Path, force: bool) -> io::Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = FILES.iter().map(|f| dir.join(f)).collect();
    if !force {
        if let Some(p) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists; pass --force to replace it", p.display()),
            ));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;

    // A name of its own for each CA: two CAs of the same name would look
    // like one CA with a bad signature to a verifier.
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag).map_err(|e| io::Error::other(e.to_string()))?;
    let tag = crate::files::hex(&tag);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.distinguished_name = name(&format!("demos throwaway CA {tag}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, common: &str, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(names).map_err(err)?;
        params.distinguished_name = name(common);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Ok::<_, io::Error>((cert.pem(), key.serialize_pem()))
    };
    let server_names = SERVER_NAMES.iter().map(|s| (*s).to_owned()).collect();
    let (server_pem, server_key_pem) = leaf(
        server_names,
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client_pem, client_key_pem) = leaf(
        vec!["demos-client".to_owned()],
        "demos-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let contents = [
        ca_pem,
        ca_key_pem,
        server_pem,
        server_key_pem,
        client_pem,
        client_key_pem,
    ];
    for (path, text) in paths.iter().zip(&contents) {
        let private = path.to_string_lossy().ends_with("-key.pem");
        write_file(
            path,
            text.as_bytes(),
            if private { 0o600 } else { 0o644 },
            force,
        )?;
    }
    Ok(paths)
}

/// Writes `bytes` to `path` with `mode`: a new file (or, with `force`, in
/// place of an old one, removed first so that the new mode applies).
fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if force {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(context(e)),
            _ => {}
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(context)?;
    f.write_all(bytes).map_err(context)?;
    f.sync_all().map_err(context)
}
