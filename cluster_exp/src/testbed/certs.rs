//! `muri tls gen`: a throwaway CA and one certificate for a testbed's daemons.
//!
//! Made in-process with rcgen rather than with the openssl CLI, so run.sh and the tests need
//! no external tool or openssl config file, and the extensions rustls insists on (IP and DNS
//! subject alternative names, server and client key usages) are set in one reviewed place.
//! The CA's private key is never written: nothing else can be signed with it later.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Names every daemon certificate carries unless told otherwise: the loopback addresses.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The files [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct TestbedCerts {
    /// The CA certificate: `--tls_ca` of every process.
    pub ca: PathBuf,
    /// The daemons' certificate: `--tls_cert` (and the client certificate under mutual TLS).
    pub cert: PathBuf,
    /// Its private key (mode 0600): `--tls_key`.
    pub key: PathBuf,
}

/// Writes `ca.pem`, `node.pem` and `node.key` into `dir` (created if missing). `sans` are
/// the IP addresses and DNS names peers dial; rustls checks the dialed one against them.
pub fn generate(dir: &Path, sans: &[String]) -> anyhow::Result<TestbedCerts> {
    anyhow::ensure!(!sans.is_empty(), "--san needs at least one name or address");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "muri testbed CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params =
        CertificateParams::new(sans.to_vec()).with_context(|| format!("bad --san in {sans:?}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "muri testbed node");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().context("generating the node key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the node certificate")?;

    let out = TestbedCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    };
    write_file(&out.ca, &ca_cert.pem(), 0o644)?;
    write_file(&out.cert, &cert.pem(), 0o644)?;
    write_file(&out.key, &key.serialize_pem(), 0o600)?;
    Ok(out)
}

/// Creates (or replaces) `path` with `mode`, so a key is never readable by others even
/// briefly.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    // The umask may have narrowed `mode`; a public certificate stays readable as asked.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pem_files_and_keeps_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        let certs = generate(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        let ca = std::fs::read_to_string(&certs.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        let key = std::fs::read_to_string(&certs.key).unwrap();
        assert!(key.contains("PRIVATE KEY"), "{key}");
        let mode = std::fs::metadata(&certs.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Loading them as a daemon's TLS setup works.
        let tls = muri_runtime::tls::Tls::load(muri_runtime::tls::TlsFiles {
            ca: Some(certs.ca),
            cert: Some(certs.cert),
            key: Some(certs.key),
            ..Default::default()
        })
        .unwrap();
        assert!(tls.is_server_tls() && tls.is_client_tls());
        tls.check_daemon().unwrap();
    }

    #[test]
    fn a_bad_san_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(generate(dir.path(), &[]).is_err());
        assert!(generate(dir.path(), &["nöde".into()]).is_err());
    }
}
