//! HMAC-SHA256 and shared-secret checks, in constant time: what ingress
//! verifies, sinks sign with and the status page keys its sessions with.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Whether `signature` is HMAC-SHA256 of `signed` under any of `secrets`.
/// The MAC comparison is constant-time.
pub fn verify_hmac(secrets: &[Secret], signed: &[u8], signature: &[u8]) -> bool {
    // Every key is tried even after a match, so timing does not tell which
    // key of a rotation list matched.
    let mut ok = false;
    for s in secrets {
        let Ok(mut mac) = HmacSha256::new_from_slice(s.expose().as_bytes()) else {
            continue;
        };
        mac.update(signed);
        ok |= mac.verify_slice(signature).is_ok();
    }
    ok
}

/// Whether a presented shared secret equals any configured one. Both sides
/// are hashed first, so the comparison takes the same time whatever the
/// lengths, and is then done in constant time.
pub fn secret_matches(secrets: &[Secret], presented: &[u8]) -> bool {
    let p = Sha256::digest(presented);
    let mut ok = subtle::Choice::from(0u8);
    for s in secrets {
        let c = Sha256::digest(s.expose().as_bytes());
        ok |= p.ct_eq(&c);
    }
    ok.into()
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}
