//! The certificates of the TLS cells: a throwaway CA and a server
//! certificate it signed for `localhost` and 127.0.0.1 (P-256, one day),
//! made with the `openssl` command line in a temp dir when a run starts and
//! removed when it ends.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The files, in a temp dir removed on drop.
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
    /// The CA certificate: what the load generator trusts.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl Certs {
    /// Makes them; an error saying what failed (no `openssl`, ...).
    pub fn make() -> io::Result<Certs> {
        let dir = std::env::temp_dir().join(format!("bench-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let c = Certs {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        let (ca_key, csr, ext) = (
            c.dir.join("ca-key.pem"),
            c.dir.join("csr.pem"),
            c.dir.join("ext.cnf"),
        );
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
        )?;
        let p = |x: &Path| x.to_string_lossy().into_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut a: Vec<String> = ["req", "-x509"].iter().map(|s| (*s).to_owned()).collect();
        a.extend(ec.iter().map(|s| (*s).to_owned()));
        a.extend([
            "-days".into(),
            "1".into(),
            "-subj".into(),
            "/CN=bench throwaway CA".into(),
            "-addext".into(),
            "basicConstraints=critical,CA:TRUE".into(),
            "-addext".into(),
            "keyUsage=critical,keyCertSign".into(),
            "-keyout".into(),
            p(&ca_key),
            "-out".into(),
            p(&c.ca),
        ]);
        openssl(&a)?;
        let mut a: Vec<String> = vec!["req".into()];
        a.extend(ec.iter().map(|s| (*s).to_owned()));
        a.extend([
            "-subj".into(),
            "/CN=localhost".into(),
            "-keyout".into(),
            p(&c.key),
            "-out".into(),
            p(&csr),
        ]);
        openssl(&a)?;
        openssl(&[
            "x509".into(),
            "-req".into(),
            "-in".into(),
            p(&csr),
            "-CA".into(),
            p(&c.ca),
            "-CAkey".into(),
            p(&ca_key),
            "-set_serial".into(),
            "2".into(),
            "-days".into(),
            "1".into(),
            "-extfile".into(),
            p(&ext),
            "-out".into(),
            p(&c.cert),
        ])?;
        Ok(c)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(args: &[String]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running openssl: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {}: {}",
            args.first().map_or("", String::as_str),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
