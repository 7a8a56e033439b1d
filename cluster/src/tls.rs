//! Certificates between nodes: mutual TLS configurations for QUIC and for
//! TLS over TCP, loading the cluster's PEM files, and `engine cluster
//! init-certs` (a test CA and node certificates, made with rcgen).
//!
//! Authentication is membership of the cluster's CA: a node accepts a peer
//! whose certificate chains to the CA, whatever its name. Every node
//! certificate carries [`SERVER_NAME`], the name a node dials, so one
//! certificate serves both as client and as server.
//!
//! Without certificates a node may only listen on loopback (checked when the
//! profile loads); it then makes a throwaway self-signed certificate and
//! accepts any peer's. That is for trying a cluster out on one machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::settings::TlsFiles;

/// The name every node certificate carries and every node dials.
pub const SERVER_NAME: &str = "caxton-cluster";

/// The ALPN protocol of the cluster transport.
pub const ALPN: &[u8] = b"caxton-cluster/1";

/// Certificates that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file the profile names could not be read or used; `key` is its
    /// key under `coordination.cluster.tls` (`ca_file`, `cert_file`, `key_file`).
    #[error("{path}: {message}")]
    Setting {
        /// The profile key that names the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// The TLS side of a node: server and client configurations that demand
/// and present a certificate.
#[derive(Clone)]
pub struct NodeTls {
    /// Accepts peers (client certificates are required).
    pub server: Arc<rustls::ServerConfig>,
    /// Dials peers (presents this node's certificate).
    pub client: Arc<rustls::ClientConfig>,
    /// Whether peers are authenticated against a CA (false: loopback trial mode).
    pub authenticated: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Setting {
        key,
        path: path.to_owned(),
        message: error.to_string(),
    })
}

fn certificates(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(key, path)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let parsed = parsed.map_err(|error| TlsError::Setting {
        key,
        path: path.to_owned(),
        message: format!("not a PEM certificate: {error}"),
    })?;
    if parsed.is_empty() {
        return Err(TlsError::Setting {
            key,
            path: path.to_owned(),
            message: "holds no certificate".into(),
        });
    }
    Ok(parsed)
}

/// The CA certificates in `path` (`ca_file`), as the roots a node trusts.
fn ca_roots(path: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates("ca_file", path)? {
        roots.add(ca).map_err(|error| TlsError::Setting {
            key: "ca_file",
            path: path.to_owned(),
            message: format!("not a usable CA certificate: {error}"),
        })?;
    }
    Ok(Arc::new(roots))
}

fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::Setting {
        key: "key_file",
        path: path.to_owned(),
        message: format!("not a PEM private key: {error}"),
    })
}

impl NodeTls {
    /// Mutual TLS from the cluster's files; `early_data` allows 0-RTT.
    pub fn from_files(files: &TlsFiles, early_data: bool) -> Result<Self, TlsError> {
        let roots = ca_roots(&files.ca)?;
        let chain = certificates("cert_file", &files.cert)?;
        let key = private_key(&files.key)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            provider(),
        )
        .build()
        .map_err(|error| TlsError::Config(error.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|error| TlsError::Setting {
                key: "key_file",
                path: files.key.clone(),
                message: format!(
                    "does not match the certificate in {} (coordination.cluster.tls.cert_file): {error}",
                    files.cert
                ),
            })?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|error| TlsError::Config(error.to_string()))?;
        Ok(Self::finish(server, client, early_data, true))
    }

    /// Loopback trial mode: a throwaway self-signed certificate, and any
    /// peer's accepted.
    pub fn unauthenticated(early_data: bool) -> Result<Self, TlsError> {
        let key =
            rcgen::KeyPair::generate().map_err(|error| TlsError::Generate(error.to_string()))?;
        let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
            .map_err(|error| TlsError::Generate(error.to_string()))?;
        let cert = params
            .self_signed(&key)
            .map_err(|error| TlsError::Generate(error.to_string()))?;
        let chain = vec![cert.der().clone()];
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|error| TlsError::Generate(error.to_owned()))?;
        let accept_any = Arc::new(AcceptAny(provider()));
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_client_cert_verifier(Arc::clone(&accept_any) as Arc<dyn ClientCertVerifier>)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| TlsError::Config(error.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(accept_any)
            .with_client_auth_cert(chain, key)
            .map_err(|error| TlsError::Config(error.to_string()))?;
        Ok(Self::finish(server, client, early_data, false))
    }

    fn finish(
        mut server: rustls::ServerConfig,
        mut client: rustls::ClientConfig,
        early_data: bool,
        authenticated: bool,
    ) -> Self {
        server.alpn_protocols = vec![ALPN.to_vec()];
        client.alpn_protocols = vec![ALPN.to_vec()];
        if early_data {
            server.max_early_data_size = u32::MAX;
            client.enable_early_data = true;
        }
        Self {
            server: Arc::new(server),
            client: Arc::new(client),
            authenticated,
        }
    }

    /// The name to dial.
    pub fn server_name() -> ServerName<'static> {
        ServerName::DnsName(
            rustls::pki_types::DnsName::try_from(SERVER_NAME)
                .expect("a valid DNS name")
                .to_owned(),
        )
    }
}

/// Accepts any certificate: loopback trial mode only (see the module docs).
/// Handshake signatures are still checked, with the provider's algorithms.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAny {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for AcceptAny {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

/// The files `init-certs` wrote for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node's name.
    pub name: String,
    /// `NAME.pem`.
    pub cert: PathBuf,
    /// `NAME-key.pem`.
    pub key: PathBuf,
}

/// Refuse a node list that is empty, names a node twice, or holds a name
/// that is not one (the agent names' rule: it names files and certificates).
fn check_node_names(nodes: &[String]) -> Result<(), TlsError> {
    if nodes.is_empty() {
        return Err(TlsError::Generate(
            "name at least one node (--nodes a,b,c)".into(),
        ));
    }
    for (index, name) in nodes.iter().enumerate() {
        caxton_profiles::check_node_name(name)
            .map_err(|error| TlsError::Generate(error.replace("an agent name", "a node name")))?;
        if nodes[..index].contains(name) {
            return Err(TlsError::Generate(format!(
                "node `{name}` is named twice; each node needs a certificate of its own"
            )));
        }
    }
    Ok(())
}

/// The common name of the CA `init_certs` makes; a CA found in the
/// directory is taken up again under it (its key signs, and the result is
/// checked against its certificate).
const TEST_CA_NAME: &str = "Caxton cluster test CA";

/// The test CA's parameters: the same each time, so that its key, read back
/// from `ca-key.pem`, issues certificates its `ca.pem` verifies.
fn test_ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|error| TlsError::Generate(error.to_string()))?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, TEST_CA_NAME);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

/// Make a test CA (`ca.pem`, `ca-key.pem`) and a certificate and key per
/// node in `directory`, for trying a cluster out. Returns the CA's path and
/// the nodes' files. Keys are written readable by their owner only.
///
/// A directory that already holds the test CA (both files) keeps it: the
/// nodes named get certificates from it, so a node joins a cluster whose
/// nodes hold that CA; a node that already has a certificate there is
/// refused rather than overwritten. `replace_ca` makes a new CA instead
/// (nodes still holding the old one refuse every certificate it signs).
pub fn init_certs(
    directory: &Path,
    nodes: &[String],
    replace_ca: bool,
) -> Result<(PathBuf, Vec<NodeFiles>), TlsError> {
    // Every name is checked before anything is written: a refused run
    // leaves no CA behind to refuse the corrected one.
    check_node_names(nodes)?;
    let ca_path = directory.join("ca.pem");
    let ca_key_path = directory.join("ca-key.pem");
    let reuse = !replace_ca && (ca_path.exists() || ca_key_path.exists());
    if reuse {
        if let Some(missing) = [&ca_path, &ca_key_path]
            .into_iter()
            .find(|path| !path.exists())
        {
            return Err(TlsError::File {
                path: missing.display().to_string(),
                message: "is missing beside the other half of the CA: restore it, or make a new CA (and new certificates for every node) with --replace-ca".into(),
            });
        }
        if let Some(taken) = nodes
            .iter()
            .map(|name| directory.join(format!("{name}.pem")))
            .find(|path| path.exists())
        {
            return Err(TlsError::File {
                path: taken.display().to_string(),
                message: "already exists: that node has a certificate from this CA; delete it (and its key) to issue a new one".into(),
            });
        }
    }
    let generate = |error: rcgen::Error| TlsError::Generate(error.to_string());
    let write = |path: &Path, text: &str, secret: bool| -> Result<(), TlsError> {
        let failed = |error: std::io::Error| TlsError::File {
            path: path.display().to_string(),
            message: error.to_string(),
        };
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        // A key is created readable by its owner only, never briefly wider.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(path)
            .map_err(failed)?;
        if secret {
            use std::os::unix::fs::PermissionsExt;
            // An existing file keeps its old mode through `open`.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(failed)?;
        }
        file.write_all(text.as_bytes()).map_err(failed)?;
        Ok(())
    };
    std::fs::create_dir_all(directory).map_err(|error| TlsError::File {
        path: directory.display().to_string(),
        message: error.to_string(),
    })?;
    let ca_params = test_ca_params()?;
    let ca_key = if reuse {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|error| TlsError::File {
            path: ca_key_path.display().to_string(),
            message: error.to_string(),
        })?;
        rcgen::KeyPair::from_pem(&pem).map_err(|error| TlsError::File {
            path: ca_key_path.display().to_string(),
            message: format!("not a PEM private key: {error}"),
        })?
    } else {
        let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
        write(&ca_path, &ca_cert.pem(), false)?;
        write(&ca_key_path, &ca_key.serialize_pem(), true)?;
        ca_key
    };
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    // Issued and checked first, written after: a CA that is not the test
    // CA (another name, or a key that is not its certificate's) leaves no
    // files behind.
    let mut issued = Vec::new();
    for name in nodes {
        let key = rcgen::KeyPair::generate().map_err(generate)?;
        let mut params = rcgen::CertificateParams::new(vec![
            SERVER_NAME.to_owned(),
            name.clone(),
            "localhost".to_owned(),
        ])
        .map_err(generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(generate)?;
        if reuse {
            verify_against_ca(&ca_path, cert.der())?;
        }
        issued.push((name.clone(), cert.pem(), key.serialize_pem()));
    }
    let mut written = Vec::new();
    for (name, cert, key) in issued {
        let files = NodeFiles {
            cert: directory.join(format!("{name}.pem")),
            key: directory.join(format!("{name}-key.pem")),
            name,
        };
        write(&files.cert, &cert, false)?;
        write(&files.key, &key, true)?;
        written.push(files);
    }
    Ok((ca_path, written))
}

/// Check that the CA in `ca_path` verifies `cert`, as a node holding it
/// would when the certificate's node connects.
fn verify_against_ca(ca_path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let path = ca_path.display().to_string();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(ca_roots(&path)?, provider())
            .build()
            .map_err(|error| TlsError::Config(error.to_string()))?;
    verifier
        .verify_client_cert(cert, &[], rustls::pki_types::UnixTime::now())
        .map(|_| ())
        .map_err(|error| TlsError::File {
            path,
            message: format!(
                "is not the test CA that `init-certs` makes (or its key is not `ca-key.pem`'s): a certificate signed with that key does not verify ({error}); use --replace-ca for a new CA"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_certs_writes_a_ca_and_usable_node_certificates() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let (ca, nodes) =
            init_certs(directory.path(), &["a".into(), "b".into()], false).expect("generated");
        assert_eq!(nodes.len(), 2);
        let files = TlsFiles {
            ca: ca.display().to_string(),
            cert: nodes[0].cert.display().to_string(),
            key: nodes[0].key.display().to_string(),
        };
        let tls = NodeTls::from_files(&files, false).expect("loads");
        assert!(tls.authenticated);
        let mode = std::fs::metadata(&nodes[0].key).expect("a key file");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        // A second run in the same directory keeps its CA, and certifies a
        // node the first did not with it: a certificate that CA verifies.
        let ca_before = std::fs::read(&ca).expect("the CA");
        let (kept, added) =
            init_certs(directory.path(), &["c".into()], false).expect("a node added");
        assert_eq!(std::fs::read(&kept).expect("the CA"), ca_before);
        let added_files = TlsFiles {
            ca: kept.display().to_string(),
            cert: added[0].cert.display().to_string(),
            key: added[0].key.display().to_string(),
        };
        NodeTls::from_files(&added_files, false).expect("c's files load");
        let added_cert = certificates("cert_file", &added_files.cert).expect("c's certificate");
        verify_against_ca(&kept, &added_cert[0]).expect("the kept CA verifies c");
        // A node that has a certificate is not overwritten.
        let a_before = std::fs::read(&nodes[0].cert).expect("a's certificate");
        let refused =
            init_certs(directory.path(), &["a".into(), "d".into()], false).expect_err("a exists");
        assert!(
            refused.to_string().contains("a.pem") && refused.to_string().contains("delete it"),
            "{refused}"
        );
        assert_eq!(
            std::fs::read(&nodes[0].cert).expect("a's certificate"),
            a_before
        );
        assert!(!directory.path().join("d.pem").exists(), "nothing written");
        // A CA that is not the test CA (here: another CA's key beside it)
        // is refused before anything is written.
        let other = tempfile::tempdir().expect("a temporary directory");
        init_certs(other.path(), &["x".into()], false).expect("another CA");
        std::fs::copy(
            other.path().join("ca-key.pem"),
            directory.path().join("ca-key.pem"),
        )
        .expect("a foreign key");
        let refused =
            init_certs(directory.path(), &["e".into()], false).expect_err("a key not the CA's");
        assert!(refused.to_string().contains("--replace-ca"), "{refused}");
        assert!(!directory.path().join("e.pem").exists(), "nothing written");
        let (replaced, _) =
            init_certs(directory.path(), &["e".into()], true).expect("replaced when told");
        assert_ne!(std::fs::read(&replaced).expect("the CA"), ca_before);
        // Bad name lists are refused before anything is written, so the
        // corrected run is not refused for the CA a refused one left.
        let elsewhere = tempfile::tempdir().expect("a temporary directory");
        for (nodes, says) in [
            (
                vec!["a".to_owned(), "not a name".to_owned()],
                "is not a node name",
            ),
            (vec![], "at least one node"),
            (vec!["a".to_owned(), "a".to_owned()], "named twice"),
        ] {
            let refused = init_certs(elsewhere.path(), &nodes, false).expect_err("refused");
            assert!(refused.to_string().contains(says), "{refused}");
            assert_eq!(
                std::fs::read_dir(elsewhere.path()).expect("listed").count(),
                0,
                "{nodes:?} wrote files"
            );
        }
        init_certs(elsewhere.path(), &["a".into()], false).expect("the corrected run");
        let broken = TlsFiles {
            key: files.cert.clone(),
            ..files
        };
        let error = NodeTls::from_files(&broken, false)
            .err()
            .expect("a certificate is not a key");
        assert!(error.to_string().contains(".pem"), "{error}");
    }
}
