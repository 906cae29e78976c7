//! Request signing, Stripe style, so targets can tell Sundial's calls from
//! anyone else's and reject replays.
//!
//! Header: `Sundial-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` where
//! the MAC is computed with a shared secret over `"<t>.<body>"` (the empty
//! string when there is no body). The timestamp is inside the MAC so a
//! captured request cannot be replayed outside the receiver's tolerance.
//!
//! Rotation: `SUNDIAL_SIGNING_SECRETS=new,old` — the first secret signs,
//! every secret verifies. Deploy the new secret to receivers (verifying with
//! both), then put it first here, then drop the old one.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "Sundial-Signature";

/// Default replay window receivers should accept (5 minutes, as Stripe).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Errors of signing configuration and signature verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// A configured secret is empty; it would make signatures forgeable.
    #[error("signing secret #{index} is empty")]
    EmptySecret {
        /// Zero-based position of the secret in the list.
        index: usize,
    },
    /// Verification was asked for but no secret is configured.
    #[error("no signing secret configured")]
    NoSecrets,
    /// The header has no `t=` element.
    #[error("signature header has no t= timestamp")]
    MissingTimestamp,
    /// The `t=` element is not an integer.
    #[error("signature header timestamp is not a unix time")]
    InvalidTimestamp,
    /// The header has no `v1=` element.
    #[error("signature header has no v1= signature")]
    MissingSignature,
    /// The timestamp is further from `now` than the tolerance (replay or clock skew).
    #[error("signature timestamp is {age_secs} s away from now (tolerance {tolerance_secs} s)")]
    OutsideTolerance {
        /// `now - t`; negative when the timestamp is in the future.
        age_secs: i64,
        /// The tolerance that was applied.
        tolerance_secs: i64,
    },
    /// No `v1=` signature matches any configured secret.
    #[error("signature does not match")]
    Mismatch,
}

/// Signs outgoing bodies with the first configured secret.
#[derive(Clone, Default)]
pub struct Signer {
    secrets: Vec<String>,
}

// Secrets must never reach logs, so Debug shows only how many there are.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .finish()
    }
}

impl Signer {
    /// A signer; the first secret signs. An empty list disables signing
    /// (no header is sent), which suits local development.
    pub fn new(secrets: Vec<String>) -> Result<Self, SigningError> {
        if let Some(index) = secrets.iter().position(|s| s.is_empty()) {
            return Err(SigningError::EmptySecret { index });
        }
        Ok(Self { secrets })
    }

    /// Parse the `SUNDIAL_SIGNING_SECRETS` format: comma-separated, blanks
    /// around secrets trimmed, empty entries ignored.
    pub fn from_env_value(value: &str) -> Result<Self, SigningError> {
        Self::new(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Is a signature header sent at all?
    pub fn is_enabled(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The secrets, for receivers in the same process (the demo target).
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Header value for `body` at `now_unix`, or `None` when signing is off.
    pub fn sign(&self, body: &[u8], now_unix: i64) -> Option<String> {
        let secret = self.secrets.first()?;
        let mac = mac_for(secret, now_unix, body).finalize().into_bytes();
        Some(format!("t={now_unix},v1={}", hex::encode(mac)))
    }
}

fn mac_for(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC
    // key (impossible after Signer::new) would still just not verify.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verify a `Sundial-Signature` header against any of `secrets`.
///
/// Accepts several `v1=` elements (a sender mid-rotation may send one per
/// secret). Comparison is constant-time (`hmac`'s `verify_slice`), so the
/// check leaks nothing about how close a forged signature was.
pub fn verify(
    secrets: &[String],
    header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SigningError> {
    if secrets.is_empty() {
        return Err(SigningError::NoSecrets);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for element in header.split(',') {
        match element.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(
                    t.parse::<i64>()
                        .map_err(|_| SigningError::InvalidTimestamp)?,
                )
            }
            // Undecodable hex can never match; skip it rather than fail so an
            // unknown future encoding next to a valid one still verifies.
            Some(("v1", sig)) => signatures.extend(hex::decode(sig).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SigningError::MissingTimestamp)?;
    if signatures.is_empty() {
        return Err(SigningError::MissingSignature);
    }
    let age_secs = now_unix.saturating_sub(timestamp);
    if age_secs.saturating_abs() > tolerance_secs {
        return Err(SigningError::OutsideTolerance {
            age_secs,
            tolerance_secs,
        });
    }
    let matched = secrets.iter().any(|secret| {
        let expected = mac_for(secret, timestamp, body);
        signatures
            .iter()
            .any(|sig| expected.clone().verify_slice(sig).is_ok())
    });
    if matched {
        Ok(())
    } else {
        Err(SigningError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let signer = Signer::new(secrets(&["s1"])).unwrap();
        let header = signer.sign(b"{\"a\":1}", 1_700_000_000).unwrap();
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(
            verify(&secrets(&["s1"]), &header, b"{\"a\":1}", 1_700_000_010, 300),
            Ok(())
        );
        assert_eq!(
            verify(&secrets(&["s1"]), &header, b"{\"a\":2}", 1_700_000_010, 300),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            verify(
                &secrets(&["other"]),
                &header,
                b"{\"a\":1}",
                1_700_000_010,
                300
            ),
            Err(SigningError::Mismatch)
        );
    }

    #[test]
    fn known_vectors() {
        // Cross-checked with: echo -n '<t>.<body>' | openssl dgst -sha256 -hmac <secret>
        let empty = Signer::new(secrets(&["key"]))
            .unwrap()
            .sign(b"", 0)
            .unwrap();
        assert_eq!(
            empty,
            "t=0,v1=85841b4efc3cd7776c3c8f9b7cca9e281c550e5d19889d78e9e669c6337f000d"
        );
        let json = Signer::new(secrets(&["s1", "s2"]))
            .unwrap()
            .sign(b"{\"a\":1}", 1_700_000_000)
            .unwrap();
        assert_eq!(
            json,
            "t=1700000000,v1=fa216b49096efaae0eac6111237eefc3bf3ee2f21b28a1af7e91c02410906f60"
        );
    }

    #[test]
    fn rotation_verifies_with_any_secret() {
        let old = Signer::new(secrets(&["old"])).unwrap();
        let header = old.sign(b"", 100).unwrap();
        assert_eq!(
            verify(&secrets(&["new", "old"]), &header, b"", 100, 300),
            Ok(())
        );
    }

    #[test]
    fn tolerance_and_malformed_headers() {
        let s = secrets(&["k"]);
        let header = Signer::new(s.clone()).unwrap().sign(b"x", 1000).unwrap();
        assert!(matches!(
            verify(&s, &header, b"x", 2000, 300),
            Err(SigningError::OutsideTolerance { age_secs: 1000, .. })
        ));
        assert!(matches!(
            verify(&s, &header, b"x", 0, 300),
            Err(SigningError::OutsideTolerance {
                age_secs: -1000,
                ..
            })
        ));
        assert_eq!(
            verify(&s, "v1=00", b"x", 0, 300),
            Err(SigningError::MissingTimestamp)
        );
        assert_eq!(
            verify(&s, "t=abc,v1=00", b"x", 0, 300),
            Err(SigningError::InvalidTimestamp)
        );
        assert_eq!(
            verify(&s, "t=0", b"x", 0, 300),
            Err(SigningError::MissingSignature)
        );
        assert_eq!(
            verify(&[], &header, b"x", 1000, 300),
            Err(SigningError::NoSecrets)
        );
    }

    #[test]
    fn config_parsing() {
        assert!(!Signer::from_env_value("").unwrap().is_enabled());
        assert_eq!(
            Signer::from_env_value(" a , b ,").unwrap().secrets(),
            ["a", "b"]
        );
        assert_eq!(
            Signer::new(secrets(&["a", ""])).unwrap_err(),
            SigningError::EmptySecret { index: 1 }
        );
        assert!(Signer::default().sign(b"", 0).is_none());
        assert!(!format!("{:?}", Signer::new(secrets(&["hunter2"])).unwrap()).contains("hunter2"));
    }
}
