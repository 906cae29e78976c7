//! Request signing, Stripe style, so targets can tell Sundial's calls from
//! anyone else's and reject replays.
//!
//! Header: `Sundial-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` where
//! the MAC is computed with a shared secret over the *signed string*:
//!
//! ```text
//! <t>\n<Idempotency-Key>\n<Sundial-Trigger>\n<Sundial-Attempt>\n<Sundial-Scheduled-For>\n<body>
//! ```
//!
//! that is the timestamp, then the values of the [`SIGNED_HEADERS`] as
//! sent (a header that is not sent counts as the empty string:
//! notifications carry only `Idempotency-Key`), each followed by a line
//! feed, then the body bytes (nothing when there is no body). Header
//! values cannot hold a line feed, so the string splits one way only. The
//! timestamp is inside the MAC so a captured request cannot be replayed
//! outside the receiver's tolerance; the headers are, so a replay within
//! it cannot pass for another occurrence, attempt or trigger.
//!
//! Rotation: `SUNDIAL_SIGNING_SECRETS=new,old` — the first secret signs,
//! every secret verifies. Deploy the new secret to receivers (verifying with
//! both), then put it first here, then drop the old one.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "Sundial-Signature";

/// The headers the signature covers, in the order of the signed string.
pub const SIGNED_HEADERS: [&str; 4] = [
    "Idempotency-Key",
    crate::trigger::TRIGGER_HEADER,
    crate::trigger::ATTEMPT_HEADER,
    crate::trigger::SCHEDULED_FOR_HEADER,
];

/// The values of the [`SIGNED_HEADERS`] of one request, in their order;
/// `""` for a header that is not sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Covered<'a>(pub [&'a str; 4]);

impl<'a> Covered<'a> {
    /// Only an `Idempotency-Key` (notifications).
    pub fn key_only(idempotency_key: &'a str) -> Self {
        Covered([idempotency_key, "", "", ""])
    }

    /// The covered values of a received request, as a receiver reads them.
    pub fn from_headers(headers: &'a reqwest::header::HeaderMap) -> Self {
        Covered(SIGNED_HEADERS.map(|name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        }))
    }
}

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

    /// Header value for a request with these covered headers and `body`
    /// at `now_unix`, or `None` when signing is off.
    pub fn sign(&self, covered: &Covered<'_>, body: &[u8], now_unix: i64) -> Option<String> {
        let secret = self.secrets.first()?;
        let mac = mac_for(secret, now_unix, covered, body)
            .finalize()
            .into_bytes();
        Some(format!("t={now_unix},v1={}", hex::encode(mac)))
    }
}

/// The signed string: see the module documentation.
pub fn signed_string(timestamp: i64, covered: &Covered<'_>, body: &[u8]) -> Vec<u8> {
    let mut signed = timestamp.to_string().into_bytes();
    for value in covered.0 {
        signed.push(b'\n');
        signed.extend_from_slice(value.as_bytes());
    }
    signed.push(b'\n');
    signed.extend_from_slice(body);
    signed
}

fn mac_for(secret: &str, timestamp: i64, covered: &Covered<'_>, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC
    // key (impossible after Signer::new) would still just not verify.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(&signed_string(timestamp, covered, body));
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
    covered: &Covered<'_>,
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
        let expected = mac_for(secret, timestamp, covered, body);
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

    const NONE: Covered<'static> = Covered(["", "", "", ""]);
    const FIRED: Covered<'static> = Covered([
        "42:2026-03-08T07:00:00.000Z",
        "schedule",
        "1",
        "2026-03-08T07:00:00.000Z",
    ]);

    #[test]
    fn sign_and_verify_round_trip() {
        let signer = Signer::new(secrets(&["s1"])).unwrap();
        let header = signer.sign(&FIRED, b"{\"a\":1}", 1_700_000_000).unwrap();
        assert!(header.starts_with("t=1700000000,v1="));
        let check = |covered: &Covered<'_>, body: &[u8], s: &[&str]| {
            verify(&secrets(s), &header, covered, body, 1_700_000_010, 300)
        };
        assert_eq!(check(&FIRED, b"{\"a\":1}", &["s1"]), Ok(()));
        assert_eq!(
            check(&FIRED, b"{\"a\":2}", &["s1"]),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            check(&FIRED, b"{\"a\":1}", &["other"]),
            Err(SigningError::Mismatch)
        );
        // Each covered header is inside the MAC.
        for (i, name) in SIGNED_HEADERS.iter().enumerate() {
            let mut changed = FIRED;
            changed.0[i] = "retry";
            assert_eq!(
                check(&changed, b"{\"a\":1}", &["s1"]),
                Err(SigningError::Mismatch),
                "{name}"
            );
        }
    }

    #[test]
    fn known_vectors() {
        // Cross-checked with: printf '<signed string>' | openssl dgst -sha256 -hmac <secret>
        assert_eq!(signed_string(0, &NONE, b""), b"0\n\n\n\n\n");
        let empty = Signer::new(secrets(&["key"]))
            .unwrap()
            .sign(&NONE, b"", 0)
            .unwrap();
        assert_eq!(
            empty,
            "t=0,v1=e40b2864d405dbd83a603a70c9af3294af887aacb6c8c2cba82a6e02ccb89463"
        );
        let json = Signer::new(secrets(&["s1", "s2"]))
            .unwrap()
            .sign(&FIRED, b"{\"a\":1}", 1_700_000_000)
            .unwrap();
        assert_eq!(
            json,
            "t=1700000000,v1=b2f44fce95d1d8d52b85206ff9f6856eeeae0998d6dc5f693e657d39391a30bc"
        );
    }

    #[test]
    fn covered_values_come_from_the_headers() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("idempotency-key", "notification:1".parse().unwrap());
        headers.insert("sundial-attempt", "2".parse().unwrap());
        assert_eq!(
            Covered::from_headers(&headers),
            Covered(["notification:1", "", "2", ""])
        );
        assert_eq!(
            Covered::key_only("notification:1"),
            Covered(["notification:1", "", "", ""])
        );
    }

    #[test]
    fn rotation_verifies_with_any_secret() {
        let old = Signer::new(secrets(&["old"])).unwrap();
        let header = old.sign(&NONE, b"", 100).unwrap();
        assert_eq!(
            verify(&secrets(&["new", "old"]), &header, &NONE, b"", 100, 300),
            Ok(())
        );
    }

    #[test]
    fn tolerance_and_malformed_headers() {
        let s = secrets(&["k"]);
        let header = Signer::new(s.clone())
            .unwrap()
            .sign(&NONE, b"x", 1000)
            .unwrap();
        assert!(matches!(
            verify(&s, &header, &NONE, b"x", 2000, 300),
            Err(SigningError::OutsideTolerance { age_secs: 1000, .. })
        ));
        assert!(matches!(
            verify(&s, &header, &NONE, b"x", 0, 300),
            Err(SigningError::OutsideTolerance {
                age_secs: -1000,
                ..
            })
        ));
        assert_eq!(
            verify(&s, "v1=00", &NONE, b"x", 0, 300),
            Err(SigningError::MissingTimestamp)
        );
        assert_eq!(
            verify(&s, "t=abc,v1=00", &NONE, b"x", 0, 300),
            Err(SigningError::InvalidTimestamp)
        );
        assert_eq!(
            verify(&s, "t=0", &NONE, b"x", 0, 300),
            Err(SigningError::MissingSignature)
        );
        assert_eq!(
            verify(&[], &header, &NONE, b"x", 1000, 300),
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
        assert!(Signer::default().sign(&NONE, b"", 0).is_none());
        assert!(!format!("{:?}", Signer::new(secrets(&["hunter2"])).unwrap()).contains("hunter2"));
    }
}
