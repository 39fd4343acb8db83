//! TLS between the cluster's processes (rustls with the ring provider, through tonic): the flags
//! that name a link's certificate, key and CA files ([`TlsArgs`]), which combinations make sense
//! for a server and for a client ([`TlsPaths::mode`], pure), and the IO: reading the PEM files,
//! checking that they parse, and building tonic's server and client configurations from them.
//! Which links use TLS is each binary's business; plaintext is what no flag gives.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Why a TLS configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{given} needs {missing}")]
    Incomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error(
        "{ca} needs {cert} and {key}: a server that checks its clients' certificates must \
         present its own"
    )]
    CaWithoutIdentity {
        ca: &'static str,
        cert: &'static str,
        key: &'static str,
    },
    #[error("{cert} and {key} need {ca}: the servers' certificates cannot be checked without it")]
    IdentityWithoutCa {
        ca: &'static str,
        cert: &'static str,
        key: &'static str,
    },
    #[error("{flag} {path}: {reason}")]
    File {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{flags}: {reason}")]
    Config { flags: String, reason: String },
    #[error(
        "{endpoint}: with {ca} every endpoint must be https://, without it none may be \
         (plaintext)"
    )]
    Scheme { endpoint: String, ca: &'static str },
}

/// Which end of a link a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Accepts connections: the certificate and key are its identity, the CA checks clients.
    Server,
    /// Connects: the CA checks the server, the certificate and key are its client identity.
    Client,
}

/// What a link speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plaintext,
    /// TLS: the client checks the server's certificate.
    Tls,
    /// Mutual TLS: the server checks the client's certificate as well.
    Mutual,
}

/// The flag and variable names of one link's three files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Names {
    pub cert: (&'static str, &'static str),
    pub key: (&'static str, &'static str),
    pub ca: (&'static str, &'static str),
    /// What the link is, for `--help`.
    pub link: &'static str,
}

impl Names {
    fn cert_flag(&self) -> &'static str {
        self.cert.0
    }

    fn key_flag(&self) -> &'static str {
        self.key.0
    }

    fn ca_flag(&self) -> &'static str {
        self.ca.0
    }
}

/// A link whose TLS files are given by flags; its names are a constant, so a binary flattens
/// `TlsArgs<ItsLink>` into its clap configuration once per link.
pub trait Link {
    const NAMES: Names;
}

/// The cluster's internal gRPC links: expert nodes' and coordinators' servers, and gateways and
/// `moe status` as clients of the nodes.
#[derive(Debug, Clone, Copy)]
pub struct Cluster;

impl Link for Cluster {
    const NAMES: Names = Names {
        cert: ("--tls-cert", "MOE_TLS_CERT"),
        key: ("--tls-key", "MOE_TLS_KEY"),
        ca: ("--tls-ca", "MOE_TLS_CA"),
        link: "the cluster's gRPC links",
    };
}

/// Every process's connection to etcd.
#[derive(Debug, Clone, Copy)]
pub struct Etcd;

impl Link for Etcd {
    const NAMES: Names = Names {
        cert: ("--etcd-cert", "MOE_ETCD_CERT"),
        key: ("--etcd-key", "MOE_ETCD_KEY"),
        ca: ("--etcd-ca", "MOE_ETCD_CA"),
        link: "etcd",
    };
}

/// The gateway's public gRPC API (`moe.gateway.v1`).
#[derive(Debug, Clone, Copy)]
pub struct Api;

impl Link for Api {
    const NAMES: Names = Names {
        cert: ("--grpc-tls-cert", "MOE_GRPC_TLS_CERT"),
        key: ("--grpc-tls-key", "MOE_GRPC_TLS_KEY"),
        ca: ("--grpc-tls-ca", "MOE_GRPC_TLS_CA"),
        link: "the gRPC API",
    };
}

/// The certificate, key and CA files of one link, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl TlsPaths {
    /// What the given files ask `side` to speak, or why they do not fit together: a certificate
    /// and its key come together; a server with a CA (checking its clients) needs its own
    /// certificate; a client with a certificate needs a CA to check the server by.
    pub fn mode(&self, side: Side, names: &Names) -> Result<Mode, TlsError> {
        let identity = match (&self.cert, &self.key) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => {
                return Err(TlsError::Incomplete {
                    given: names.cert_flag(),
                    missing: names.key_flag(),
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete {
                    given: names.key_flag(),
                    missing: names.cert_flag(),
                });
            }
        };
        let ca = self.ca.is_some();
        match (side, identity, ca) {
            (_, false, false) => Ok(Mode::Plaintext),
            (_, true, true) => Ok(Mode::Mutual),
            (Side::Server, true, false) | (Side::Client, false, true) => Ok(Mode::Tls),
            (Side::Server, false, true) => Err(TlsError::CaWithoutIdentity {
                ca: names.ca_flag(),
                cert: names.cert_flag(),
                key: names.key_flag(),
            }),
            (Side::Client, true, false) => Err(TlsError::IdentityWithoutCa {
                ca: names.ca_flag(),
                cert: names.cert_flag(),
                key: names.key_flag(),
            }),
        }
    }

    /// The server configuration the files ask for (`None`: plaintext), read and checked: every
    /// file parses, and rustls accepts the certificate with its key.
    pub fn server(&self, names: &Names) -> Result<Option<ServerTlsConfig>, TlsError> {
        self.mode(Side::Server, names)?;
        let Some(identity) = self.identity(names)? else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = self.ca_certificate(names)? {
            config = config.client_ca_root(ca);
        }
        Server::builder()
            .tls_config(config.clone())
            .map_err(|e| refused(names, &e))?;
        Ok(Some(config))
    }

    /// The client configuration the files ask for (`None`: plaintext), read and checked; the
    /// server's certificate is checked for `server_name` (default: the host it is dialled by).
    pub fn client(
        &self,
        names: &Names,
        server_name: Option<&str>,
    ) -> Result<Option<ClientTlsConfig>, TlsError> {
        self.mode(Side::Client, names)?;
        let Some(ca) = self.ca_certificate(names)? else {
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new().ca_certificate(ca);
        if let Some(identity) = self.identity(names)? {
            config = config.identity(identity);
        }
        if let Some(name) = server_name {
            config = config.domain_name(name);
        }
        Endpoint::from_static("https://localhost")
            .tls_config(config.clone())
            .map_err(|e| refused(names, &e))?;
        Ok(Some(config))
    }

    /// The certificate and key, when both are given.
    fn identity(&self, names: &Names) -> Result<Option<Identity>, TlsError> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else {
            return Ok(None);
        };
        let cert = certificates(names.cert_flag(), cert)?;
        let key = private_key(names.key_flag(), key)?;
        Ok(Some(Identity::from_pem(cert, key)))
    }

    fn ca_certificate(&self, names: &Names) -> Result<Option<Certificate>, TlsError> {
        self.ca
            .as_deref()
            .map(|ca| certificates(names.ca_flag(), ca).map(Certificate::from_pem))
            .transpose()
    }
}

/// rustls's or tonic's refusal of a configuration, with its causes.
fn refused(names: &Names, error: &dyn std::error::Error) -> TlsError {
    TlsError::Config {
        flags: format!(
            "{} / {} / {}",
            names.cert_flag(),
            names.key_flag(),
            names.ca_flag()
        ),
        reason: crate::causes(error),
    }
}

/// Refuses etcd endpoints whose scheme does not match the TLS mode: `https://` exactly when a
/// CA is given (etcd's client would otherwise fail at the first call, or speak plaintext).
pub fn check_endpoints(endpoints: &[String], mode: Mode, names: &Names) -> Result<(), TlsError> {
    let tls = mode != Mode::Plaintext;
    match endpoints.iter().find(|e| e.starts_with("https://") != tls) {
        Some(endpoint) => Err(TlsError::Scheme {
            endpoint: endpoint.clone(),
            ca: names.ca_flag(),
        }),
        None => Ok(()),
    }
}

/// Reads `path`, which must hold at least one PEM certificate.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(flag, path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| file_error(flag, path, format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(file_error(flag, path, "holds no PEM certificate".into()));
    }
    Ok(pem)
}

/// Reads `path`, which must hold a PEM private key (PKCS#8, PKCS#1 or SEC1).
fn private_key(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(flag, path, format!("no PEM private key: {e}")))?;
    Ok(pem)
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(flag, path, e.to_string()))
}

fn file_error(flag: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File {
        flag,
        path: path.to_path_buf(),
        reason,
    }
}

/// One link's `--*-cert`, `--*-key` and `--*-ca` flags with their `MOE_*` variables, for
/// `#[command(flatten)]`.
#[derive(Debug, Clone)]
pub struct TlsArgs<L> {
    pub paths: TlsPaths,
    link: PhantomData<L>,
}

impl<L> Default for TlsArgs<L> {
    fn default() -> Self {
        TlsArgs {
            paths: TlsPaths::default(),
            link: PhantomData,
        }
    }
}

impl<L: Link> TlsArgs<L> {
    pub fn names(&self) -> &'static Names {
        &L::NAMES
    }

    /// This link's server configuration; see [`TlsPaths::server`].
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        self.paths.server(&L::NAMES)
    }

    /// This link's client configuration; see [`TlsPaths::client`].
    pub fn client(&self, server_name: Option<&str>) -> Result<Option<ClientTlsConfig>, TlsError> {
        self.paths.client(&L::NAMES, server_name)
    }

    /// The mode these flags ask of `side`; see [`TlsPaths::mode`].
    pub fn mode(&self, side: Side) -> Result<Mode, TlsError> {
        self.paths.mode(side, &L::NAMES)
    }
}

impl TlsArgs<Etcd> {
    /// The client configuration for etcd at `endpoints` (`None`: plaintext), whose schemes must
    /// match it (see [`check_endpoints`]).
    pub fn for_endpoints(&self, endpoints: &[String]) -> Result<Option<ClientTlsConfig>, TlsError> {
        let config = self.client(None)?;
        check_endpoints(endpoints, self.mode(Side::Client)?, &Etcd::NAMES)?;
        Ok(config)
    }
}

/// What a client of the expert nodes and of etcd takes (gateways and `moe status`): the nodes'
/// link, the name their certificates must carry, and etcd's link.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// TLS towards the expert nodes (--tls-ca checks the nodes' certificates; --tls-cert and
    /// --tls-key are the client certificate nodes with mutual TLS require).
    #[command(flatten)]
    pub nodes: TlsArgs<Cluster>,
    /// The name the nodes' certificates must carry (default: the host of each node's address).
    #[arg(long, env = "MOE_TLS_SERVER_NAME")]
    pub server_name: Option<String>,
    /// TLS of the connection to etcd.
    #[command(flatten)]
    pub etcd: TlsArgs<Etcd>,
}

impl ClientTlsArgs {
    /// The client configurations towards the nodes and towards etcd at `endpoints` (`None`:
    /// plaintext), or what is wrong with the flags.
    pub fn configs(
        &self,
        endpoints: &[String],
    ) -> Result<(Option<ClientTlsConfig>, Option<ClientTlsConfig>), String> {
        let nodes = self
            .nodes
            .client(self.server_name.as_deref())
            .map_err(|e| e.to_string())?;
        if nodes.is_none() && self.server_name.is_some() {
            return Err("--tls-server-name needs --tls-ca".into());
        }
        let etcd = self
            .etcd
            .for_endpoints(endpoints)
            .map_err(|e| e.to_string())?;
        Ok((nodes, etcd))
    }
}

fn id(flag: &'static str) -> &'static str {
    flag.trim_start_matches("--")
}

impl<L: Link> clap::FromArgMatches for TlsArgs<L> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let names = &L::NAMES;
        let path =
            |(flag, _): (&'static str, &'static str)| matches.get_one::<PathBuf>(id(flag)).cloned();
        Ok(TlsArgs {
            paths: TlsPaths {
                cert: path(names.cert),
                key: path(names.key),
                ca: path(names.ca),
            },
            link: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<L: Link> clap::Args for TlsArgs<L> {
    fn augment_args(command: clap::Command) -> clap::Command {
        let names = &L::NAMES;
        let arg = |(flag, var): (&'static str, &'static str), help: String| {
            clap::Arg::new(id(flag))
                .long(id(flag))
                .env(var)
                .value_name("PEM")
                .value_parser(clap::value_parser!(PathBuf))
                .help(help)
        };
        command
            .arg(arg(
                names.cert,
                format!(
                    "Certificate chain (PEM) this process presents on {} (with {})",
                    names.link,
                    names.key_flag()
                ),
            ))
            .arg(arg(
                names.key,
                format!("Private key (PEM) of {}", names.cert_flag()),
            ))
            .arg(arg(
                names.ca,
                format!(
                    "CA certificates (PEM) the peer's certificate on {} must chain to; a server \
                     given one requires client certificates (mutual TLS)",
                    names.link
                ),
            ))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Authority;

    fn paths(cert: bool, key: bool, ca: bool) -> TlsPaths {
        let some = |given: bool, name: &str| given.then(|| PathBuf::from(name));
        TlsPaths {
            cert: some(cert, "c.pem"),
            key: some(key, "k.pem"),
            ca: some(ca, "ca.pem"),
        }
    }

    #[test]
    fn the_modes_each_side_accepts() {
        let names = &Cluster::NAMES;
        let mode = |side, cert, key, ca| paths(cert, key, ca).mode(side, names);
        for side in [Side::Server, Side::Client] {
            assert_eq!(mode(side, false, false, false).unwrap(), Mode::Plaintext);
            assert_eq!(mode(side, true, true, true).unwrap(), Mode::Mutual);
        }
        assert_eq!(mode(Side::Server, true, true, false).unwrap(), Mode::Tls);
        assert_eq!(mode(Side::Client, false, false, true).unwrap(), Mode::Tls);
    }

    #[test]
    fn a_certificate_and_its_key_come_together() {
        let names = &Etcd::NAMES;
        for side in [Side::Server, Side::Client] {
            let refused = paths(false, true, true).mode(side, names).unwrap_err();
            assert_eq!(refused.to_string(), "--etcd-key needs --etcd-cert");
            let refused = paths(true, false, false).mode(side, names).unwrap_err();
            assert_eq!(refused.to_string(), "--etcd-cert needs --etcd-key");
        }
    }

    #[test]
    fn a_server_checking_clients_needs_an_identity_and_a_client_with_one_needs_a_ca() {
        let names = &Cluster::NAMES;
        let refused = paths(false, false, true)
            .mode(Side::Server, names)
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("--tls-ca needs --tls-cert and --tls-key"),
            "{refused}"
        );
        let refused = paths(true, true, false)
            .mode(Side::Client, names)
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("--tls-cert and --tls-key need --tls-ca"),
            "{refused}"
        );
    }

    #[test]
    fn etcd_endpoints_must_match_the_mode() {
        let names = &Etcd::NAMES;
        let plain = vec!["http://a:2379".to_string(), "b:2379".to_string()];
        let secure = vec!["https://a:2379".to_string(), "https://b:2379".to_string()];
        assert!(check_endpoints(&plain, Mode::Plaintext, names).is_ok());
        assert!(check_endpoints(&secure, Mode::Mutual, names).is_ok());
        assert!(check_endpoints(&secure, Mode::Tls, names).is_ok());
        let refused = check_endpoints(&secure, Mode::Plaintext, names).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("https://a:2379: with --etcd-ca")
        );
        let refused = check_endpoints(&plain, Mode::Tls, names).unwrap_err();
        assert!(refused.to_string().starts_with("http://a:2379: "));
    }

    #[test]
    fn issued_files_build_server_and_client_configurations() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let issued = Authority::new("cluster", dir.path())?.issue("node")?;
        let names = &Cluster::NAMES;
        assert!(issued.server(names)?.is_some());
        assert!(issued.client(names, Some("localhost"))?.is_some());
        let server_only = TlsPaths {
            ca: None,
            ..issued.clone()
        };
        assert!(server_only.server(names)?.is_some());
        let ca_only = TlsPaths {
            cert: None,
            key: None,
            ..issued
        };
        assert!(ca_only.client(names, None)?.is_some());
        assert!(TlsPaths::default().server(names)?.is_none());
        assert!(TlsPaths::default().client(names, None)?.is_none());
        Ok(())
    }

    #[test]
    fn missing_unreadable_and_mismatched_files_are_refused_by_name() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let authority = Authority::new("cluster", dir.path())?;
        let node = authority.issue("node")?;
        let other = authority.issue("other")?;
        let names = &Cluster::NAMES;

        let missing = TlsPaths {
            ca: Some(dir.path().join("absent.pem")),
            ..node.clone()
        };
        let refused = missing.server(names).unwrap_err().to_string();
        assert!(refused.starts_with("--tls-ca "), "{refused}");
        assert!(refused.contains("absent.pem"), "{refused}");

        let key_as_cert = TlsPaths {
            cert: node.key.clone(),
            ..node.clone()
        };
        let refused = key_as_cert.server(names).unwrap_err().to_string();
        assert!(refused.starts_with("--tls-cert "), "{refused}");
        assert!(refused.contains("no PEM certificate"), "{refused}");

        let cert_as_key = TlsPaths {
            key: node.cert.clone(),
            ..node.clone()
        };
        let refused = cert_as_key.client(names, None).unwrap_err().to_string();
        assert!(refused.starts_with("--tls-key "), "{refused}");

        let mismatched = TlsPaths {
            key: other.key,
            ..node
        };
        let refused = mismatched.server(names).unwrap_err().to_string();
        assert!(
            refused.starts_with("--tls-cert / --tls-key / --tls-ca: "),
            "{refused}"
        );
        Ok(())
    }

    #[derive(Debug, clap::Parser)]
    struct Demo {
        #[command(flatten)]
        cluster: TlsArgs<Cluster>,
        #[command(flatten)]
        etcd: TlsArgs<Etcd>,
    }

    #[test]
    fn the_flags_parse_per_link_and_each_has_its_variable() {
        use clap::{CommandFactory, Parser};
        crate::config::assert_every_flag_has_a_variable(&Demo::command());
        let demo = Demo::try_parse_from([
            "demo",
            "--tls-cert",
            "/c",
            "--tls-key",
            "/k",
            "--etcd-ca",
            "/e",
        ])
        .unwrap();
        let given = TlsPaths {
            cert: Some("/c".into()),
            key: Some("/k".into()),
            ca: None,
        };
        assert_eq!(demo.cluster.paths, given);
        assert_eq!(demo.cluster.mode(Side::Server).unwrap(), Mode::Tls);
        assert_eq!(demo.etcd.mode(Side::Client).unwrap(), Mode::Tls);
        assert_eq!(demo.etcd.names().ca.1, "MOE_ETCD_CA");
    }
}
