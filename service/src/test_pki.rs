//! A throwaway public-key infrastructure for tests (feature `test-pki`): a CA that writes its
//! certificate as a PEM file and issues certificates for servers and clients on loopback
//! (`localhost`, `127.0.0.1`), written beside it with their keys. Not for production use: the
//! keys sit unencrypted in the given directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::tls::TlsPaths;

/// A certificate authority whose certificate is `<dir>/<name>-ca.crt`.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    ca: PathBuf,
}

impl Authority {
    /// A new CA named `name`, its certificate written under `dir`.
    pub fn new(name: &str, dir: &Path) -> anyhow::Result<Authority> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let cert = params.self_signed(&key)?;
        let ca = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca, cert.pem())?;
        Ok(Authority {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            ca,
        })
    }

    /// The CA's certificate file.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Issues a certificate for `name`, valid for servers and clients on `localhost` and
    /// `127.0.0.1`, and writes it and its key as `<dir>/<name>.crt` and `<dir>/<name>.key`;
    /// the paths come back with this CA's certificate as the CA.
    pub fn issue(&self, name: &str) -> anyhow::Result<TlsPaths> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_path = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Ok(TlsPaths {
            cert: Some(cert_path),
            key: Some(key_path),
            ca: Some(self.ca.clone()),
        })
    }
}
