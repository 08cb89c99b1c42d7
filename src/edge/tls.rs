//! TLS at the edge: the certificate the TLS listener presents, loaded from PEM files and
//! swapped in place when they change.
//!
//! Pingora's rustls listener builds its `ServerConfig` once, from file paths, and panics
//! when they do not load. The gateway instead gives it a certificate resolver
//! ([`Certificate`]): the files are read and checked before the server starts (a clear
//! startup error naming the variable and the file), and a SIGHUP (or `--watch`) reads them
//! again. A renewed pair is used from the next handshake on; connections already open keep
//! theirs. A pair that does not load (a half-written file, a key that does not match) is
//! refused with a log line and the current one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics;

/// The TLS listener's certificate and key, reloadable.
pub struct Certificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<Loaded>,
}

/// One loaded pair, and what it was loaded from.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The two files' bytes as read (a reload of identical files changes nothing).
    source: (Vec<u8>, Vec<u8>),
    /// The leaf certificate's `notAfter` (seconds since the epoch).
    not_after: i64,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish()
    }
}

impl Certificate {
    /// Read and check the pair (`PROXY_TLS_CERT`, `PROXY_TLS_KEY`): the error names the
    /// variable, the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Certificate>, String> {
        let loaded = load(cert_path, key_path)?;
        let certificate = Certificate {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: ArcSwap::from_pointee(loaded),
        };
        certificate.report("loaded");
        Ok(Arc::new(certificate))
    }

    /// Read the files again and use them from the next handshake on. Unchanged files
    /// change nothing; a pair that does not load leaves the current one serving.
    pub fn reload(&self) -> Result<(), String> {
        let unchanged = match (
            std::fs::read(&self.cert_path),
            std::fs::read(&self.key_path),
        ) {
            (Ok(cert), Ok(key)) => {
                let current = self.current.load();
                current.source.0 == cert && current.source.1 == key
            }
            _ => false,
        };
        if unchanged {
            return Ok(());
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                metrics::certificate_reload(true);
                self.report("reloaded");
                Ok(())
            }
            Err(e) => {
                metrics::certificate_reload(false);
                log::error!("tls: {e}; the current certificate keeps serving");
                Err(e)
            }
        }
    }

    /// The files a watch looks at.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.cert_path, &self.key_path]
    }

    /// The served certificate's `notAfter` (seconds since the epoch).
    pub fn not_after(&self) -> i64 {
        self.current.load().not_after
    }

    /// Log what is served now, and warn about an expired or soon expiring certificate.
    fn report(&self, what: &str) {
        let not_after = self.current.load().not_after;
        metrics::certificate_expiry(not_after);
        let now = jiff::Timestamp::now().as_second();
        let expiry = jiff::Timestamp::from_second(not_after)
            .map_or_else(|_| not_after.to_string(), |t| t.to_string());
        let file = self.cert_path.display();
        if not_after <= now {
            log::warn!("tls: certificate {what} from {file} EXPIRED at {expiry}");
        } else if not_after - now < 14 * 86_400 {
            log::warn!("tls: certificate {what} from {file} expires soon, at {expiry}");
        } else {
            log::info!("tls: certificate {what} from {file}, valid until {expiry}");
        }
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// The certificate chain (leaf first) and its private key, checked against each other.
fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, String> {
    let read = |var: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{var}={}: cannot read: {e}", path.display()))
    };
    let cert_pem = read("PROXY_TLS_CERT", cert_path)?;
    let key_pem = read("PROXY_TLS_KEY", key_path)?;
    let cert_file = || format!("PROXY_TLS_CERT={}", cert_path.display());
    let key_file = || format!("PROXY_TLS_KEY={}", key_path.display());

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert_file()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            cert_file()
        ));
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("{}: the first certificate does not parse: {e}", cert_file()))?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "{}: no private key in it (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key_file()
        )
    })?;
    let key = CertifiedKey::from_der(chain, key, &*provider()?).map_err(|e| {
        format!(
            "{} and {}: the key does not fit the certificate: {e}",
            cert_file(),
            key_file()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        source: (cert_pem, key_pem),
        not_after,
    })
}

/// The process's rustls crypto provider (Pingora's choice, `ring`, installed once).
fn provider() -> Result<Arc<CryptoProvider>, String> {
    pingora_rustls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .ok_or_else(|| "no TLS crypto provider is installed".to_owned())
}
