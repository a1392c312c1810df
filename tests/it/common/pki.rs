//! A private CA made with rcgen for the TLS tests: a server certificate, an
//! expired one, client certificates (one with a hostile name), a self-signed one.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// The common name of the `evil` client certificate: a terminal title, a
/// bell, a screen clear and a carriage return that would forge a line.
pub const EVIL_NAME: &str = "evil\x1b]0;owned\x07\x1b[2J\r";

/// A private CA with certificates it issued, as PEM files in a temporary folder.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "portier test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        pki.write("ca.pem", &ca.pem());

        let issue = |name: &str, params: CertificateParams| {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            pki.write(&format!("{name}.pem"), &cert.pem());
            pki.write(&format!("{name}.key"), &key.serialize_pem());
        };
        issue(
            "server",
            CertificateParams::new(vec!["localhost".into()]).unwrap(),
        );
        let mut expired = CertificateParams::new(vec!["localhost".into()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
        issue("expired", expired);
        let mut alice = CertificateParams::new(Vec::<String>::new()).unwrap();
        alice.distinguished_name.push(DnType::CommonName, "alice");
        alice.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue("alice", alice);
        // A client whose name is an attack on the operator's terminal.
        let mut evil = CertificateParams::new(Vec::<String>::new()).unwrap();
        evil.distinguished_name.push(DnType::CommonName, EVIL_NAME);
        evil.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue("evil", evil);

        let own = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        pki.write("own.pem", &own.cert.pem());
        pki.write("own.key", &own.signing_key.serialize_pem());
        pki
    }

    pub fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.dir.path().join(name), pem).unwrap();
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// `--cert NAME.pem --key NAME.key`
    pub fn identity(&self, name: &str) -> Vec<String> {
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        vec!["--cert".into(), cert, "--key".into(), key]
    }
}
