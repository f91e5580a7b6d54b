//! Key material of one in-cluster proxy (per Kubernetes namespace): the
//! interception CA its runs trust, and the control channel's mutual TLS (a
//! control CA, the proxy's server certificate, the daemon's client
//! certificate). All of it is made here with rcgen; the control CA's key
//! signs the two certificates and is then dropped, so no further client can
//! ever be issued: a new daemon makes new material and replaces the proxy's.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use serde::{Deserialize, Serialize};

use crate::ca::{CA_VALIDITY_DAYS, CertificateAuthority, set_validity};
use crate::error::CaError;

const CONTROL_CA_NAME: &str = "moat proxy control CA";
const CONTROL_SERVER_NAME: &str = "moat proxy control";
const CONTROL_CLIENT_NAME: &str = "moat daemon";

/// PEM certificate and key of one party of the control channel.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Everything one in-cluster proxy and the daemon driving it hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteProxyMaterial {
    /// The CA the proxy mints interception leaves with; its certificate
    /// goes into each run's trust store.
    pub interception_ca: CertifiedKey,
    /// The only issuer the control server accepts client certificates from
    /// (and the daemon's trust root for the server).
    pub control_ca_pem: String,
    /// The proxy's control server identity.
    pub control_server: CertifiedKey,
    /// The daemon's client identity (never leaves the daemon's machine).
    pub control_client: CertifiedKey,
}

impl RemoteProxyMaterial {
    /// Fresh material; the control server's certificate names `server_names`
    /// (DNS names or IP addresses the daemon dials it by).
    pub fn generate(server_names: &[String]) -> Result<Self, CaError> {
        let (cert_pem, key_pem) = CertificateAuthority::generate_pem()?;
        let control_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let control_params = control_ca_params();
        let control_ca = control_params.self_signed(&control_key).map_err(CaError::Generate)?;
        let issuer = Issuer::new(control_params, control_key);
        let server = issue(
            &issuer,
            leaf_params(CONTROL_SERVER_NAME, server_names, ExtendedKeyUsagePurpose::ServerAuth)?,
        )?;
        let client = issue(
            &issuer,
            leaf_params(CONTROL_CLIENT_NAME, &[], ExtendedKeyUsagePurpose::ClientAuth)?,
        )?;
        Ok(Self {
            interception_ca: CertifiedKey { cert_pem, key_pem },
            control_ca_pem: control_ca.pem(),
            control_server: server,
            control_client: client,
        })
    }
}

fn control_ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CONTROL_CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 1, CA_VALIDITY_DAYS);
    params
}

fn leaf_params(
    name: &str,
    subject_alt_names: &[String],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(subject_alt_names.to_vec()).map_err(CaError::Generate)?;
    params.distinguished_name = common_name(name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, 1, CA_VALIDITY_DAYS);
    Ok(params)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished = DistinguishedName::new();
    distinguished.push(DnType::CommonName, name);
    distinguished.push(DnType::OrganizationName, "moat");
    distinguished
}

fn issue(issuer: &Issuer<'_, KeyPair>, params: CertificateParams) -> Result<CertifiedKey, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
    let cert = params.signed_by(&key, issuer).map_err(CaError::Generate)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
