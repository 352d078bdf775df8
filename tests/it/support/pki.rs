//! Certificates made in the test: a CA, a server certificate for 127.0.0.1,
//! a client CA with a client certificate, and an unrelated "rogue" CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing the tests serve.
    pub rogue_ca: PathBuf,
    /// A server certificate for 127.0.0.1 signed by the rogue CA.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A client certificate and key (from a CA of their own) valid from two
/// days ago for `days` days from now (negative: already expired).
pub fn client_cert_valid_for(dir: &Path, name: &str, days: i64) -> (PathBuf, PathBuf) {
    let issuer = ca("dated client CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![format!("{name}.test")]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(days.abs() + 2);
    params.not_after = now + time::Duration::days(days);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let server_ca = ca("upmirror test CA");
        let (server_cert, server_key) = leaf(
            &server_ca,
            &["127.0.0.1", "localhost", "::1", "two.upmirror.test"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client_ca = ca("upmirror test client CA");
        let (client_cert, client_key) = leaf(&client_ca, &["mirror.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let rogue = ca("rogue CA");
        let (rogue_cert, rogue_key) = leaf(&rogue, &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        Pki {
            ca: write("ca.pem", &server_ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_ca: write("client-ca.pem", &client_ca.pem()),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            rogue_ca: write("rogue-ca.pem", &rogue.pem()),
            rogue_cert: write("rogue.pem", &rogue_cert),
            rogue_key: write("rogue.key", &rogue_key),
        }
    }
}
