//! TLS for `listen`, `send` and `connect`, with rustls and its `ring`
//! provider (no OpenSSL, no cmake, easy to cross-compile for a Pi).
//!
//! The client verifies against the system's roots, a private CA, or a pinned
//! certificate fingerprint; a self-signed server certificate handed over as
//! `--ca` is taken as a pin, since rustls refuses it as its own issuer.
//! Every verification failure is an error, never a fallback to clear text.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{Error, Result};

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerIdentity {
    /// PEM files: the certificate chain and its private key.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// A certificate made at start; its fingerprint is printed for clients to pin.
    SelfSigned,
}

/// How a listener speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// The listener's certificate.
    pub identity: ServerIdentity,
    /// Require client certificates issued by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

/// How `send` and `connect` check the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsConfig {
    /// A private CA (or the server's own self-signed certificate, taken as a pin).
    pub ca: Option<PathBuf>,
    /// Accept exactly the certificates with these SHA-256 fingerprints.
    pub pins: Vec<Fingerprint>,
    /// Check nothing (asked for explicitly, and warned about).
    pub insecure: bool,
    /// A client certificate and key, for listeners that require one.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// A certificate's SHA-256 fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// Hex, with or without colons, any case: as the listener printed it.
    pub fn parse(text: &str) -> std::result::Result<Fingerprint, String> {
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let bad = || format!("{text}: not a SHA-256 fingerprint (64 hex digits, colons optional)");
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(context: impl fmt::Display, err: impl fmt::Display) -> Error {
    Error::Tls(format!("{context}: {err}"))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_error(
                format!("cannot read certificates from {}", path.display()),
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "no PEM certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// A certificate chain to present, its first certificate checked for what
/// TLS refuses with a misleading error ("the certificate and key do not fit").
fn read_identity(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = read_certs(path)?;
    if chain.first().is_some_and(is_version_1) {
        return Err(Error::Tls(format!(
            "{}: {VERSION_1}; make a version 3 one, e.g. add -extfile <(printf 'basicConstraints=CA:FALSE') to `openssl x509 -req`",
            path.display()
        )));
    }
    Ok(chain)
}

const VERSION_1: &str = "an X.509 version 1 certificate (it has no extensions), which TLS refuses";

/// True for a version 1 certificate: what `openssl x509 -req` makes (OpenSSL
/// 3.0) when it is given no extension to add.
fn is_version_1(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert)
        .is_ok_and(|(_, parsed)| parsed.version() == x509_parser::x509::X509Version::V1)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        tls_error(
            format!("cannot read a private key from {}", path.display()),
            e,
        )
    })
}

fn roots(certs: Vec<CertificateDer<'static>>, path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| tls_error(format!("cannot use {} as a CA", path.display()), e))?;
    }
    Ok(roots)
}

/// A ready TLS listener side, and the fingerprint to print when it made its own certificate.
pub(crate) struct ServerTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) self_signed: Option<Fingerprint>,
}

impl ServerTls {
    pub(crate) fn new(config: &ServerTlsConfig) -> Result<ServerTls> {
        let (chain, key, self_signed) = match &config.identity {
            ServerIdentity::Files { cert, key } => (read_identity(cert)?, read_key(key)?, None),
            ServerIdentity::SelfSigned => {
                let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
                let made = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| tls_error("cannot make a certificate", e))?;
                let cert = made.cert.der().clone();
                let key = PrivateKeyDer::try_from(made.signing_key.serialize_der())
                    .map_err(|e| tls_error("cannot make a certificate", e))?;
                let fingerprint = Fingerprint::of(&cert);
                (vec![cert], key, Some(fingerprint))
            }
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS setup", e))?;
        let builder = match &config.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = Arc::new(roots(read_certs(path)?, path)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| tls_error(format!("cannot use {}", path.display()), e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| tls_error("the certificate and key do not fit", e))?;
        // No session tickets: a client that only sends (`ncat --send-only`)
        // never reads them, and its kernel answers its close with a reset
        // that throws away the end of what it sent. portier's clients do not
        // resume sessions, and a netcat session is one connection anyway.
        config.send_tls13_tickets = 0;
        config.max_tls13_tickets = 0;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            self_signed,
        })
    }
}

/// Checks the server: pins first, then the CA roots (system or private).
#[derive(Debug)]
struct Verifier {
    pins: Vec<Fingerprint>,
    roots: Option<Arc<WebPkiServerVerifier>>,
    insecure: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

/// The server's certificate is not the pinned one.
#[derive(Debug)]
struct PinMismatch {
    expected: Fingerprint,
    got: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fingerprint mismatch: expected {}, the server has {}",
            self.expected, self.got
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity);
        if self.insecure || self.pins.contains(&got) {
            return Ok(ServerCertVerified::assertion());
        }
        match (&self.roots, self.pins.first()) {
            (Some(roots), _) => {
                roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            (None, Some(&expected)) => {
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(PinMismatch { expected, got })),
                )))
            }
            (None, None) => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// True for a certificate that may issue others (basic constraints CA).
fn is_ca(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert)
        .ok()
        .and_then(|(_, parsed)| {
            parsed
                .basic_constraints()
                .ok()
                .flatten()
                .map(|bc| bc.value.ca)
        })
        .unwrap_or(false)
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::Tls(
            "no trusted root certificates found on this system; give --ca FILE or --pin".into(),
        ));
    }
    Ok(roots)
}

/// What a user of `--insecure` is told (by the CLI, the one layer that speaks to them at start).
pub const INSECURE_WARNING: &str = "warning: --insecure: the server's certificate is not checked; anyone on the way can read and change this connection";

/// A TLS client side for `send` and `connect`.
pub(crate) fn connector(config: &ClientTlsConfig) -> Result<TlsConnector> {
    client_config(config).map(TlsConnector::from)
}

/// The rustls settings behind [`connector`], for clients that bring their own
/// connection code (the MQTT sink).
pub(crate) fn client_config(config: &ClientTlsConfig) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let mut pins = config.pins.clone();
    let roots = match (&config.ca, config.pins.is_empty(), config.insecure) {
        (_, _, true) => None,  // the CLI has said INSECURE_WARNING
        (_, false, _) => None, // a pin means exactly that certificate
        (Some(path), true, _) => {
            let (cas, own): (Vec<_>, Vec<_>) = read_certs(path)?.into_iter().partition(is_ca);
            pins.extend(own.iter().map(|cert| Fingerprint::of(cert)));
            (!cas.is_empty()).then(|| roots(cas, path)).transpose()?
        }
        (None, true, _) => Some(system_roots()?),
    };
    let roots = match roots {
        Some(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| tls_error("cannot use the CA", e))?,
        ),
        None => None,
    };
    let verifier = Arc::new(Verifier {
        pins,
        roots,
        insecure: config.insecure,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS setup", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_identity(cert)?, read_key(key)?)
            .map_err(|e| tls_error("the client certificate and key do not fit", e))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(Error::Usage("--cert and --key go together".into())),
    };
    Ok(Arc::new(config))
}

/// Starts TLS over a connected stream to `host`, turning a failed check into one clear line.
pub(crate) async fn connect(
    connector: &TlsConnector,
    stream: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|_| Error::Usage(format!("'{host}' is not a valid TLS server name")))?
        .to_owned();
    connector
        .connect(name, stream)
        .await
        .map_err(|e| Error::Tls(format!("cannot set up TLS with {host}: {}", describe(&e))))
}

/// How long a TLS client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of a handshake, bounded in time (a client that never
/// finishes cannot hold its slot); the stream and the subject of the client's
/// certificate, if it showed one, or why it failed, in words.
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> std::result::Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<String>), String> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {}", describe(&e))),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    let subject = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(subject);
    Ok((tls, subject))
}

/// A failed handshake in words: the rustls reason when there is one.
pub(crate) fn describe(err: &std::io::Error) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            // tokio-rustls says "tls handshake eof".
            return "the other side closed the connection during the handshake (full, or refusing this address?)".into();
        }
        return crate::error::describe(err);
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "wrong name: the certificate is not valid for this host name".into()
            }
            CertificateError::UnknownIssuer => {
                "unknown issuer: the certificate is not signed by a trusted CA (give --ca FILE, or --pin)".into()
            }
            CertificateError::Other(other) if other.to_string().contains("UnsupportedCertVersion") => {
                format!("the certificate is {VERSION_1}; it must be issued again as version 3")
            }
            CertificateError::Other(other) => other.to_string(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) => {
            "the other side does not speak TLS (plain TCP?)".into()
        }
        rustls::Error::NoCertificatesPresented => "no client certificate was presented".into(),
        rustls::Error::AlertReceived(alert) => format!("the other side refused: {alert:?}"),
        other => other.to_string(),
    }
}

/// True when the peer closed the connection without TLS's `close_notify`.
/// Most TLS tools (ncat, openssl, socat) close that way, so it ends a
/// session like a normal close.
pub(crate) fn is_unannounced_close(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::UnexpectedEof
}

/// The subject of a client certificate, as `CN=alice,O=Pi Lab`.
pub(crate) fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(parsed.subject().to_string().replace(", ", ","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_printed_with_or_without_colons() {
        let fingerprint = Fingerprint::of(b"certificate");
        let printed = fingerprint.to_string();
        assert_eq!(printed.len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&printed), Ok(fingerprint));
        let bare = printed.replace(':', "").to_lowercase();
        assert_eq!(Fingerprint::parse(&bare), Ok(fingerprint));
        assert!(Fingerprint::parse("AB:CD").is_err());
    }

    #[test]
    fn self_signed_listeners_get_a_fingerprint() {
        let config = ServerTlsConfig {
            identity: ServerIdentity::SelfSigned,
            client_ca: None,
        };
        assert!(ServerTls::new(&config).unwrap().self_signed.is_some());
    }
}
