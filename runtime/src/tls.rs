//! Transport security: TLS (rustls through tonic) from PEM files.
//!
//! One [`Tls`] describes a process's side of every connection it makes or serves:
//! - `--tls_cert`/`--tls_key`: the identity a daemon serves with (and presents as a client
//!   when a peer asks for a client certificate);
//! - `--tls_ca`: the CA that peers' certificates must chain to. A client with a CA dials TLS
//!   only: a bare `host:port` becomes `https://host:port`, an explicit `http://` is an error;
//! - `--tls_client_auth`: a serving daemon also requires every client to present a
//!   certificate signed by that CA (mutual TLS);
//! - `--tls_client_cert`/`--tls_client_key`: the identity a pure client (`muri status`, the
//!   trainer) presents to a server that requires one.
//!
//! Server names are checked against the certificate as usual: a certificate must list the
//! IP address or DNS name that peers dial (`muri tls gen --san …`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The PEM files of a process's TLS setup, as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// CA certificate(s) that peers' certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Certificate (chain) this process serves with.
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    pub key: Option<PathBuf>,
    /// Certificate presented to servers that require client certificates (defaults to `cert`).
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert` (defaults to `key`).
    pub client_key: Option<PathBuf>,
    /// Serving side: require a client certificate signed by `ca` (mutual TLS).
    pub client_auth: bool,
}

/// Loaded TLS settings; the default is plaintext.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    files: TlsFiles,
    ca: Option<Certificate>,
    server: Option<Identity>,
    client: Option<Identity>,
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    anyhow::ensure!(
        String::from_utf8_lossy(&pem).contains("-----BEGIN "),
        "{what} {} is not a PEM file",
        path.display()
    );
    Ok(pem)
}

fn identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    Ok(Identity::from_pem(
        read_pem(cert, "certificate")?,
        read_pem(key, "private key")?,
    ))
}

/// Both of a cert/key pair or neither.
fn pair<'a>(
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    cert_flag: &str,
    key_flag: &str,
) -> anyhow::Result<Option<(&'a Path, &'a Path)>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => bail!("{cert_flag} needs {key_flag}"),
        (None, Some(_)) => bail!("{key_flag} needs {cert_flag}"),
    }
}

impl Tls {
    /// No TLS: plaintext connections only.
    pub fn plaintext() -> Tls {
        Tls::default()
    }

    /// Reads and checks the files (each error names the file or the flag).
    pub fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let server = pair(&files.cert, &files.key, "--tls_cert", "--tls_key")?;
        let client = pair(
            &files.client_cert,
            &files.client_key,
            "--tls_client_cert",
            "--tls_client_key",
        )?;
        if files.client_auth {
            anyhow::ensure!(
                server.is_some() && files.ca.is_some(),
                "--tls_client_auth needs --tls_cert, --tls_key and --tls_ca (the CA client certificates must chain to)"
            );
        }
        if files.ca.is_none() && (server.is_some() || client.is_some()) {
            bail!("TLS needs --tls_ca too: the CA that peers' certificates chain to");
        }
        let ca = match &files.ca {
            Some(p) => Some(Certificate::from_pem(read_pem(p, "CA certificate")?)),
            None => None,
        };
        let server_identity = server.map(|(c, k)| identity(c, k)).transpose()?;
        let client_identity = match client {
            Some((c, k)) => Some(identity(c, k)?),
            None => server_identity.clone(),
        };
        Ok(Tls {
            files,
            ca,
            server: server_identity,
            client: client_identity,
        })
    }

    /// Whether outgoing connections use TLS.
    pub fn is_client_tls(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether this process serves TLS.
    pub fn is_server_tls(&self) -> bool {
        self.server.is_some()
    }

    /// A daemon (scheduler, worker) both serves and dials its peers, so it needs both halves.
    pub fn check_daemon(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.is_server_tls() == self.is_client_tls(),
            "a daemon serves and dials TLS alike: give --tls_cert, --tls_key and --tls_ca together"
        );
        Ok(())
    }

    /// The CA file, for handing on to child processes.
    pub fn ca_file(&self) -> Option<&Path> {
        self.files.ca.as_deref()
    }

    /// The certificate and key this process presents as a client (for handing on to child
    /// processes): `--tls_client_cert/--tls_client_key`, else `--tls_cert/--tls_key`.
    pub fn client_identity_files(&self) -> Option<(&Path, &Path)> {
        let f = &self.files;
        match (&f.client_cert, &f.client_key, &f.cert, &f.key) {
            (Some(c), Some(k), _, _) | (None, None, Some(c), Some(k)) => Some((c, k)),
            _ => None,
        }
    }

    /// The serving side's rustls settings; `None` = plaintext.
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        let identity = self.server.clone()?;
        let mut config = ServerTlsConfig::new().identity(identity);
        if self.files.client_auth {
            if let Some(ca) = &self.ca {
                config = config.client_ca_root(ca.clone());
            }
        }
        Some(config)
    }

    /// `addr` (`host:port`, `http://…` or `https://…`) as a URI with the scheme this setup
    /// dials. Refuses the combinations that would silently use plaintext or could never
    /// connect, so `https://` always means TLS.
    pub fn uri(&self, addr: &str) -> anyhow::Result<String> {
        let tls = self.is_client_tls();
        if let Some(rest) = addr.strip_prefix("https://") {
            anyhow::ensure!(
                tls,
                "`{addr}` asks for TLS but no CA is given: pass --tls_ca FILE (the CA that signed the server's certificate)"
            );
            return Ok(format!("https://{rest}"));
        }
        if let Some(rest) = addr.strip_prefix("http://") {
            anyhow::ensure!(
                !tls,
                "`{addr}` asks for plaintext but TLS is configured (--tls_ca): use https:// or host:port"
            );
            return Ok(format!("http://{rest}"));
        }
        anyhow::ensure!(
            !addr.contains("://"),
            "`{addr}`: the scheme must be http:// or https://"
        );
        Ok(format!("{}://{addr}", if tls { "https" } else { "http" }))
    }

    /// Adds the client-side rustls settings to an endpoint whose URI came from [`Tls::uri`].
    pub fn apply(&self, endpoint: Endpoint) -> anyhow::Result<Endpoint> {
        let Some(ca) = &self.ca else {
            return Ok(endpoint);
        };
        let mut config = ClientTlsConfig::new().ca_certificate(ca.clone());
        if let Some(identity) = &self.client {
            config = config.identity(identity.clone());
        }
        endpoint
            .tls_config(config)
            .context("setting up the TLS client")
    }
}
