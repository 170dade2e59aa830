//! Test certificates made at run time with rcgen: a certificate authority ([`TestCa`]) that
//! issues server and client leaves ([`TestLeaf`]), written as PEM files into a directory the
//! caller owns, for TLS and mTLS tests (the OTLP receiver's [`crate::OtlpReceiver::start_tls`],
//! the agent's `export.otlp.tls`).
//!
//! Not for anything but tests: keys are unprotected files, validity is rcgen's default.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key as PEM files, plus the certificate's DER (what a TLS peer sees,
/// e.g. [`crate::receiver::Received::client_cert`]).
#[derive(Clone, Debug)]
pub struct TestLeaf {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl TestLeaf {
    /// The certificate's PEM text.
    ///
    /// # Panics
    /// When the file is gone.
    pub fn cert_pem(&self) -> String {
        read(&self.cert)
    }

    /// The key's PEM text.
    ///
    /// # Panics
    /// When the file is gone.
    pub fn key_pem(&self) -> String {
        read(&self.key)
    }
}

/// A self-signed certificate authority.
pub struct TestCa {
    /// Its certificate, PEM.
    pub pem: String,
    /// Where that PEM was written.
    pub path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("path", &self.path).finish()
    }
}

impl TestCa {
    /// A CA with common name `name`, its certificate written to `<dir>/<name>.pem`.
    ///
    /// # Panics
    /// When rcgen fails or the file cannot be written.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let pem = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"))
            .pem();
        let path = dir.join(format!("{name}.pem"));
        write(&path, &pem);
        Self {
            pem,
            path,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server leaf (`serverAuth`) for `sans` (DNS names or IP addresses), common name `cn`,
    /// written to `<dir>/<cn>.pem` and `<dir>/<cn>.key`.
    ///
    /// # Panics
    /// As [`Self::new`].
    pub fn server(&self, dir: &Path, cn: &str, sans: &[&str]) -> TestLeaf {
        self.issue(dir, cn, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client leaf (`clientAuth`) with common name `cn`, written like [`Self::server`].
    ///
    /// # Panics
    /// As [`Self::new`].
    pub fn client(&self, dir: &Path, cn: &str) -> TestLeaf {
        self.issue(dir, cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        dir: &Path,
        cn: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> TestLeaf {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params =
            CertificateParams::new(sans).unwrap_or_else(|e| panic!("{cn} params: {e}"));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{cn} key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("{cn} certificate: {e}"));
        let leaf = TestLeaf {
            cert: dir.join(format!("{cn}.pem")),
            key: dir.join(format!("{cn}.key")),
            der: cert.der().to_vec(),
        };
        write(&leaf.cert, &cert.pem());
        write(&leaf.key, &key.serialize_pem());
        leaf
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
