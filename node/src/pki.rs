//! The cluster's certificate authority and node identities (mutual TLS between nodes).
//!
//! Gatehouse's nodes prove who they are to each other with X.509 certificates issued by
//! one **cluster CA**, which `gatehouse ca init` creates (and the all-in-one creates by
//! itself in its data directory). Every node certificate names its node in a URI
//! subject alternative name, `spiffe://gatehouse/<role>/<name>` — e.g.
//! `spiffe://gatehouse/gateway/gateway-1` — which is the whole identity: the role says
//! what the node may do (a gateway may follow the configuration and report its status,
//! control may manage application keys), the name says which replica it is (a gateway
//! can report only as itself). DNS and IP names in the same certificate let it serve
//! TLS as well, so one certificate is a node's server and client identity.
//!
//! The CA's private key signs certificates and the revocation list and nothing else; it
//! stays in the CA directory (mode 0600) and never on the log or on a node that does not
//! issue certificates. A revoked node certificate is listed in `<ca dir>/revoked.crl`
//! (signed by the CA); nodes load it with `--cluster-crl` and refuse its handshakes.
//!
//! Files, in a CA directory: `ca.crt` (give it to every node and client), `ca.key`
//! (keep it offline), `revoked.crl`, `serials.json` (what was issued, for revocation),
//! and `<role>-<name>.crt` / `.key` per issued node.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};

/// The URI prefix of node identities.
pub const IDENTITY_PREFIX: &str = "spiffe://gatehouse/";

/// Why a CA operation or a node identity failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a node is, and so what it may do on the other nodes' internal planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeRole {
    Control,
    TokenService,
    Gateway,
}

impl NodeRole {
    pub const ALL: [NodeRole; 3] = [NodeRole::Control, NodeRole::TokenService, NodeRole::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Control => "control",
            NodeRole::TokenService => "token-service",
            NodeRole::Gateway => "gateway",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeRole {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                PkiError::Invalid(format!(
                    "unknown node role {s:?}: must be control, token-service or gateway"
                ))
            })
    }
}

/// A verified node: what its certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub role: NodeRole,
    /// The replica's name (a gateway's id in `ListGateways`).
    pub name: String,
}

impl NodeIdentity {
    pub fn new(role: NodeRole, name: impl Into<String>) -> Result<NodeIdentity, PkiError> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(PkiError::Invalid(format!(
                "node name {name:?}: 1 to 64 ASCII letters, digits, '-' or '_'"
            )));
        }
        Ok(NodeIdentity { role, name })
    }

    /// `spiffe://gatehouse/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("{IDENTITY_PREFIX}{}/{}", self.role, self.name)
    }

    /// The identity in a URI SAN, if it is one of ours.
    pub fn from_uri(uri: &str) -> Option<NodeIdentity> {
        let (role, name) = uri.strip_prefix(IDENTITY_PREFIX)?.split_once('/')?;
        NodeIdentity::new(role.parse().ok()?, name).ok()
    }

    /// The identity a (verified) DER certificate carries in its URI SANs.
    pub fn from_certificate(der: &[u8]) -> Option<NodeIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => NodeIdentity::from_uri(uri),
            _ => None,
        })
    }

    /// The file stem of this node's certificate in a CA directory.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.role, self.name)
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// A node certificate and its key, as PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    pub identity: NodeIdentity,
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// One issued certificate, remembered for revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IssuedRecord {
    serial: String,
    role: NodeRole,
    name: String,
    revoked_at: Option<i64>,
}

/// The cluster CA in its directory (see the module docs).
pub struct ClusterCa {
    dir: PathBuf,
    key: KeyPair,
}

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CRL: &str = "revoked.crl";
const SERIALS: &str = "serials.json";

/// How long issued certificates are valid.
const VALIDITY_DAYS: i64 = 825;

impl ClusterCa {
    /// Creates a new CA in `dir` (which must not hold one already).
    pub fn create(dir: &Path) -> Result<ClusterCa, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cert_path = dir.join(CA_CERT);
        if cert_path.exists() {
            return Err(PkiError::Invalid(format!(
                "{} already holds a CA ({CA_CERT}); use it, or choose another directory",
                dir.display()
            )));
        }
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        let key_path = dir.join(CA_KEY);
        write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        let ca = ClusterCa {
            dir: dir.to_path_buf(),
            key,
        };
        ca.write_crl(&[])?;
        Ok(ca)
    }

    /// The CA in `dir`.
    pub fn open(dir: &Path) -> Result<ClusterCa, PkiError> {
        let key_path = dir.join(CA_KEY);
        let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&pem)?;
        Ok(ClusterCa {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The CA in `dir`, created if there is none (the all-in-one, tests).
    pub fn open_or_create(dir: &Path) -> Result<ClusterCa, PkiError> {
        if dir.join(CA_KEY).exists() {
            ClusterCa::open(dir)
        } else {
            ClusterCa::create(dir)
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.crt`: what every node and client trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// `revoked.crl`.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::new(ca_params(), &self.key)
    }

    /// Issues a certificate for `identity`, also valid as a TLS server certificate for
    /// `hosts` (DNS names or IP addresses), into `<role>-<name>.crt`/`.key`. A second
    /// issue for the same identity replaces the files (rotation); revoke the old serial
    /// if its key may have leaked.
    pub fn issue(
        &self,
        identity: &NodeIdentity,
        hosts: &[String],
    ) -> Result<IssuedCertificate, PkiError> {
        let (cert_pem, key_pem, cert_path, key_path) = self.issue_files(
            &identity.file_stem(),
            &identity.name,
            Some((identity.role, identity.uri())),
            hosts,
            Some((identity.role, identity.name.clone())),
        )?;
        Ok(IssuedCertificate {
            identity: identity.clone(),
            cert_pem,
            key_pem,
            cert_path,
            key_path,
        })
    }

    /// Issues a TLS server certificate naming no node (e.g. for NATS) into
    /// `server-<name>.crt`/`.key`; returns the certificate's path.
    pub fn issue_server(&self, name: &str, hosts: &[String]) -> Result<PathBuf, PkiError> {
        NodeIdentity::new(NodeRole::Control, name)?; // the same rules for the name
        let (_, _, cert_path, _) =
            self.issue_files(&format!("server-{name}"), name, None, hosts, None)?;
        Ok(cert_path)
    }

    /// The certificate's subject is `CN=<name>,OU=<role>,O=Gatehouse` (NATS maps it to
    /// a user with `verify_and_map`, see `nats/`), its URI SAN the node identity.
    fn issue_files(
        &self,
        stem: &str,
        common_name: &str,
        role_and_uri: Option<(NodeRole, String)>,
        hosts: &[String],
        node: Option<(NodeRole, String)>,
    ) -> Result<(String, String, PathBuf, PathBuf), PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some((role, _)) = &role_and_uri {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, role.as_str());
        }
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Gatehouse");
        if let Some((_, uri)) = role_and_uri {
            params.subject_alt_names.push(SanType::URI(
                uri.as_str()
                    .try_into()
                    .map_err(|_| PkiError::Invalid(format!("bad identity URI {uri}")))?,
            ));
        }
        for host in hosts {
            let san = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.as_str()
                        .try_into()
                        .map_err(|_| PkiError::Invalid(format!("bad host name {host:?}")))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(VALIDITY_DAYS);
        let serial: [u8; 16] = rand::random();
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f; // positive
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer())?;

        let cert_path = self.dir.join(format!("{stem}.crt"));
        let key_path = self.dir.join(format!("{stem}.key"));
        let key_pem = key.serialize_pem();
        write_private(&key_path, key_pem.as_bytes()).map_err(io(&key_path))?;
        // The chain: the certificate, then the CA's.
        let ca_pem = std::fs::read_to_string(self.cert_path()).map_err(io(&self.cert_path()))?;
        let cert_pem = format!("{}{ca_pem}", cert.pem());
        std::fs::write(&cert_path, &cert_pem).map_err(io(&cert_path))?;

        if let Some((role, name)) = node {
            let mut issued = self.issued()?;
            issued.insert(
                hex(&serial),
                IssuedRecord {
                    serial: hex(&serial),
                    role,
                    name,
                    revoked_at: None,
                },
            );
            self.save_issued(&issued)?;
        }
        Ok((cert_pem, key_pem, cert_path, key_path))
    }

    /// Revokes every certificate issued to `identity` and rewrites `revoked.crl`.
    /// Returns how many certificates were revoked.
    pub fn revoke(&self, identity: &NodeIdentity) -> Result<usize, PkiError> {
        let mut issued = self.issued()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut revoked = 0;
        for record in issued.values_mut() {
            if record.role == identity.role
                && record.name == identity.name
                && record.revoked_at.is_none()
            {
                record.revoked_at = Some(now);
                revoked += 1;
            }
        }
        self.save_issued(&issued)?;
        let list: Vec<&IssuedRecord> = issued.values().filter(|r| r.revoked_at.is_some()).collect();
        self.write_crl(&list)?;
        Ok(revoked)
    }

    fn write_crl(&self, revoked: &[&IssuedRecord]) -> Result<(), PkiError> {
        let now = time::OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|r| {
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(&r.serial)?),
                    revocation_time: time::OffsetDateTime::from_unix_timestamp(r.revoked_at?)
                        .ok()?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(VALIDITY_DAYS),
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer())?;
        let path = self.crl_path();
        std::fs::write(&path, crl.pem()?).map_err(io(&path))
    }

    fn issued(&self) -> Result<BTreeMap<String, IssuedRecord>, PkiError> {
        let path = self.dir.join(SERIALS);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PkiError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn save_issued(&self, issued: &BTreeMap<String, IssuedRecord>) -> Result<(), PkiError> {
        let path = self.dir.join(SERIALS);
        let json = serde_json::to_vec_pretty(issued)
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", path.display())))?;
        std::fs::write(&path, json).map_err(io(&path))
    }
}

/// The CA's own parameters: the same at creation and at every issue, so the issuer
/// name and key identifier of issued certificates match the CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Gatehouse cluster CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Gatehouse");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.key_identifier_method = KeyIdMethod::Sha256;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(3650);
    params
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `bytes` to a file only its owner can read (mode 0600 when it is created) and
/// syncs it to disk: the one way a node writes a private key or a secret. An existing
/// file keeps its mode, so callers that must be sure of it remove the file first.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn identities_round_trip_through_their_uri_and_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let id = NodeIdentity::new(NodeRole::Gateway, "gateway-1").unwrap();
        assert_eq!(id.uri(), "spiffe://gatehouse/gateway/gateway-1");
        assert_eq!(NodeIdentity::from_uri(&id.uri()), Some(id.clone()));
        let issued = ca
            .issue(&id, &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(NodeIdentity::from_certificate(&der), Some(id));
        assert!(NodeIdentity::from_uri("spiffe://gatehouse/admin/x").is_none());
        assert!(NodeIdentity::from_uri("spiffe://other/gateway/x").is_none());
        assert!(NodeIdentity::new(NodeRole::Control, "a/b").is_err());
        assert!(
            ClusterCa::create(dir.path()).is_err(),
            "one CA per directory"
        );
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let issued = ca
            .issue(&NodeIdentity::new(NodeRole::Control, "c").unwrap(), &[])
            .unwrap();
        for key in [dir.path().join(CA_KEY), issued.key_path] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", key.display());
        }
    }

    #[test]
    fn a_revoked_certificate_is_listed_in_the_crl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        let id = NodeIdentity::new(NodeRole::Control, "control").unwrap();
        let issued = ca.issue(&id, &[]).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let serial = cert.raw_serial().to_vec();
        let listed = |ca: &ClusterCa| {
            let pem = std::fs::read(ca.crl_path()).unwrap();
            let crl = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
            let (_, crl) = x509_parser::parse_x509_crl(&crl).unwrap();
            crl.iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect::<Vec<_>>()
        };
        assert!(listed(&ca).is_empty());
        assert_eq!(ca.revoke(&id).unwrap(), 1);
        assert_eq!(ca.revoke(&id).unwrap(), 0, "already revoked");
        let reopened = ClusterCa::open(dir.path()).unwrap();
        assert_eq!(listed(&reopened), vec![serial]);
    }
}
