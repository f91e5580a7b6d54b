//! The moat certificate authority: created on first use under `MOAT_HOME/ca/`
//! (key 0600, public copy in `ca/public/`), and the cache of per-host leaf
//! TLS configurations it mints (ECDSA P-256, bounded LRU, single-flight).
//! An existing `ca.key` is loaded only if it belongs to the user (or root)
//! and is not group- or other-writable (`moat_core::fs_perms`).

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike as _, Days, Utc};
use lru::LruCache;
use moat_core::fs_perms::{self, UntrustedFile};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::ServerConfig;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::sync::OnceCell;

use crate::error::CaError;
use crate::tls::{ALPN_H1, ALPN_H2, crypto_provider};

/// Common name of the CA; also identifies it when re-deriving the issuer.
const CA_COMMON_NAME: &str = "moat local interception CA";
const CA_ORGANIZATION: &str = "moat";
/// Years the CA certificate stays valid.
pub(crate) const CA_VALIDITY_DAYS: u64 = 3650;
/// Leaves are valid for this many days (browsers cap at 398; keep it short).
const LEAF_VALIDITY_DAYS: u64 = 30;
/// A cached leaf is re-minted after this age so it never nears expiry.
const LEAF_REUSE_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default number of hosts whose leaf configuration is kept.
const DEFAULT_LEAF_CACHE: usize = 1024;

type LeafCell = Arc<OnceCell<MintedLeaf>>;

#[derive(Clone)]
struct MintedLeaf {
    config: Arc<ServerConfig>,
    minted_at: Instant,
}

/// The CA and its leaf cache. Cheap to share behind an `Arc`.
pub struct CertificateAuthority {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<LruCache<String, LeafCell>>,
    public_cert_path: PathBuf,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("public_cert_path", &self.public_cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads `dir/ca.crt` + `dir/ca.key`, or creates them (key mode 0600),
    /// and (re)writes the public copy `dir/public/ca.crt`.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let (cert_pem, key_pem) = if cert_path.exists() && key_path.exists() {
            (read(&cert_path)?, read_private_key(&key_path)?)
        } else {
            create_ca_files(dir, &cert_path, &key_path)?
        };
        let ca = Self::from_pem(&cert_pem, &key_pem, &cert_path, &key_path)?;
        write_public_copy(dir, &cert_pem)?;
        Ok(Self {
            public_cert_path: dir.join("public").join("ca.crt"),
            ..ca
        })
    }

    /// Loads an existing CA from `cert_path` + `key_path` without creating
    /// or writing anything (the in-cluster proxy reads its CA from a
    /// read-only Secret volume). The key must be trusted as in
    /// [`CertificateAuthority::load_or_create`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read_private_key(key_path)?;
        let ca = Self::from_pem(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(Self {
            public_cert_path: cert_path.to_path_buf(),
            ..ca
        })
    }

    /// A fresh CA as (certificate PEM, private key PEM), written nowhere:
    /// for a CA that lives elsewhere (a Kubernetes Secret).
    pub fn generate_pem() -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = ca_params();
        set_validity(&mut params, 1, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn from_pem(cert_pem: &str, key_pem: &str, cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::InvalidPem {
            path: key_path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let ca_der = first_certificate(cert_pem).ok_or_else(|| CaError::InvalidPem {
            path: cert_path.to_path_buf(),
            detail: "no CERTIFICATE block".to_string(),
        })?;
        let ca = Self {
            ca_der,
            ca_pem: cert_pem.to_string(),
            issuer: Issuer::new(ca_params(), key),
            leaves: Mutex::new(LruCache::new(leaf_capacity(DEFAULT_LEAF_CACHE))),
            public_cert_path: PathBuf::new(),
        };
        ca.verify_issues_trusted_leaves().map_err(|detail| CaError::Mismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            detail,
        })?;
        Ok(ca)
    }

    /// Sets how many hosts' leaf certificates are kept (default 1024).
    pub fn with_leaf_cache_capacity(self, capacity: usize) -> Self {
        Self {
            leaves: Mutex::new(LruCache::new(leaf_capacity(capacity))),
            ..self
        }
    }

    /// The CA certificate in PEM form (what containers trust).
    pub fn certificate_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Path of the public copy meant for a read-only mount into containers.
    pub fn public_cert_path(&self) -> &Path {
        &self.public_cert_path
    }

    /// TLS server configuration presenting a leaf for `host` (chain = leaf +
    /// CA). Concurrent callers for one host share a single minting.
    pub(crate) async fn server_config_for(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        let cell = self.leaf_cell(&host);
        let leaf = cell.get_or_try_init(|| async { self.mint(&host) }).await?;
        Ok(leaf.config.clone())
    }

    fn leaf_cell(&self, host: &str) -> LeafCell {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = leaves.get(host) {
            let fresh = cell.get().is_none_or(|l| l.minted_at.elapsed() < LEAF_REUSE_LIMIT);
            if fresh {
                return cell.clone();
            }
        }
        let cell = LeafCell::default();
        leaves.put(host.to_string(), cell.clone());
        cell
    }

    fn mint(&self, host: &str) -> Result<MintedLeaf, CaError> {
        let leaf_error = |detail: String| CaError::Leaf {
            host: host.to_string(),
            detail,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| leaf_error(e.to_string()))?;
        let cert = leaf_params(host)
            .map_err(leaf_error)?
            .signed_by(&key, &self.issuer)
            .map_err(|e| leaf_error(e.to_string()))?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| leaf_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| leaf_error(e.to_string()))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_H1.to_vec()];
        config.ignore_client_order = true;
        Ok(MintedLeaf {
            config: Arc::new(config),
            minted_at: Instant::now(),
        })
    }

    /// Mints a probe leaf and verifies it against the stored CA certificate,
    /// proving that certificate and key belong together.
    fn verify_issues_trusted_leaves(&self) -> Result<(), String> {
        const PROBE_HOST: &str = "ca-self-check.moat.invalid";
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let leaf = leaf_params(PROBE_HOST)?
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).map_err(|e| e.to_string())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
            .build()
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(PROBE_HOST).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(leaf.der(), &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn leaf_capacity(capacity: usize) -> NonZeroUsize {
    NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(host: &str) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::default();
    let san = match host.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into().map_err(|e: rcgen::Error| e.to_string())?),
    };
    params.subject_alt_names = vec![san];
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, host);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, 1, LEAF_VALIDITY_DAYS);
    Ok(params)
}

/// Sets validity from `days_before` days ago to `days_after` days ahead (UTC dates).
pub(crate) fn set_validity(params: &mut CertificateParams, days_before: u64, days_after: u64) {
    let today = Utc::now().date_naive();
    let start = today.checked_sub_days(Days::new(days_before)).unwrap_or(today);
    let end = today.checked_add_days(Days::new(days_after)).unwrap_or(today);
    let to_rcgen = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    params.not_before = to_rcgen(start);
    params.not_after = to_rcgen(end);
}

fn create_ca_files(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(String, String), CaError> {
    fs::create_dir_all(dir).map_err(|source| io_error("create directory", dir, source))?;
    // The key lives here: only the owner may even list the directory.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|source| io_error("set permissions on", dir, source))?;
    let (cert_pem, key_pem) = CertificateAuthority::generate_pem()?;
    write_atomically(key_path, &key_pem, 0o600)?;
    write_atomically(cert_path, &cert_pem, 0o644)?;
    Ok((cert_pem, key_pem))
}

fn write_public_copy(dir: &Path, cert_pem: &str) -> Result<(), CaError> {
    let public_dir = dir.join("public");
    fs::create_dir_all(&public_dir).map_err(|source| io_error("create directory", &public_dir, source))?;
    fs::set_permissions(&public_dir, fs::Permissions::from_mode(0o755))
        .map_err(|source| io_error("set permissions on", &public_dir, source))?;
    write_atomically(&public_dir.join("ca.crt"), cert_pem, 0o644)
}

/// Writes via a temporary file created with `mode`, then renames into place.
fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|source| io_error("create", &tmp, source))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error("write", &tmp, source))?;
    fs::rename(&tmp, path).map_err(|source| io_error("rename into place", path, source))
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| io_error("read", path, source))
}

/// Reads `ca.key`, refusing one that another user owns or could have
/// written: whoever controls it can mint certificates every run trusts.
fn read_private_key(path: &Path) -> Result<String, CaError> {
    fs_perms::read_trusted(path).map_err(|err| match err {
        UntrustedFile::Io { source, .. } => io_error("read", path, source),
        untrusted => io_error(
            "load",
            path,
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, untrusted.reason()),
        ),
    })
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> CaError {
    CaError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The first certificate in a PEM bundle.
pub(crate) fn first_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).find_map(Result::ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A not-yet-created directory `name` in a fresh directory, removed
    /// with the returned guard.
    fn temp_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join(name);
        (scratch, dir)
    }

    #[test]
    fn creates_then_reloads_the_same_ca_with_private_key_mode() {
        let (_scratch, dir) = temp_dir("reload");
        let first = CertificateAuthority::load_or_create(&dir).unwrap();
        let mode = fs::metadata(dir.join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = fs::read_to_string(dir.join("public/ca.crt")).unwrap();
        assert_eq!(public, first.certificate_pem());
        let second = CertificateAuthority::load_or_create(&dir).unwrap();
        assert_eq!(first.certificate_pem(), second.certificate_pem());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_from_another_ca_is_rejected() {
        let ((_scratch_a, a), (_scratch_b, b)) = (temp_dir("mismatch-a"), temp_dir("mismatch-b"));
        CertificateAuthority::load_or_create(&a).unwrap();
        CertificateAuthority::load_or_create(&b).unwrap();
        fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
        let err = CertificateAuthority::load_or_create(&a).unwrap_err();
        assert!(matches!(err, CaError::Mismatch { .. }), "{err}");
        fs::remove_dir_all(&a).unwrap();
        fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn a_group_writable_ca_key_is_refused_with_a_chmod_hint() {
        // Another user in the key's group swaps in their own CA key, so every
        // run would trust certificates they mint.
        let (_scratch, dir) = temp_dir("group-writable");
        CertificateAuthority::load_or_create(&dir).unwrap();
        let key = dir.join("ca.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o660)).unwrap();
        let err = CertificateAuthority::load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("writable by its group"), "{err}");
        assert!(err.contains(&format!("chmod go-w {}", key.display())), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        CertificateAuthority::load_or_create(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ca_key_owned_by_another_user_is_refused() {
        // Another local user plants a ca.key of theirs in MOAT_HOME/ca.
        if fs_perms::current_uid() != 0 {
            return; // only root can give a file away; fs_perms tests the rule itself
        }
        let (_scratch, dir) = temp_dir("foreign-owner");
        CertificateAuthority::load_or_create(&dir).unwrap();
        let key = dir.join("ca.key");
        std::os::unix::fs::chown(&key, Some(4242), None).unwrap();
        let err = CertificateAuthority::load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("owned by uid 4242"), "{err}");
        assert!(err.contains("chown"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn leaf_configs_are_cached_per_host() {
        let (_scratch, dir) = temp_dir("leaf");
        let ca = CertificateAuthority::load_or_create(&dir).unwrap();
        let one = ca.server_config_for("api.example.test").await.unwrap();
        let again = ca.server_config_for("API.example.test").await.unwrap();
        let other = ca.server_config_for("127.0.0.1").await.unwrap();
        assert!(Arc::ptr_eq(&one, &again));
        assert!(!Arc::ptr_eq(&one, &other));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_share_one_minting() {
        let (_scratch, dir) = temp_dir("single-flight");
        let ca = Arc::new(CertificateAuthority::load_or_create(&dir).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let ca = ca.clone();
                tokio::spawn(async move { ca.server_config_for("fresh.example.test").await.unwrap() })
            })
            .collect();
        let mut configs = Vec::new();
        for task in tasks {
            configs.push(task.await.unwrap());
        }
        assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let (_scratch, dir) = temp_dir("bounded");
        let ca = CertificateAuthority::load_or_create(&dir)
            .unwrap()
            .with_leaf_cache_capacity(2);
        let first = ca.server_config_for("a.example.test").await.unwrap();
        ca.server_config_for("b.example.test").await.unwrap();
        ca.server_config_for("c.example.test").await.unwrap();
        let again = ca.server_config_for("a.example.test").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &again), "a.example.test should have been evicted");
        fs::remove_dir_all(&dir).unwrap();
    }
}
