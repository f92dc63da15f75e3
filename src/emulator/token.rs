//! The emulator's access and ID tokens: JWT-shaped (header.payload.signature, base64url) like
//! Entra's, signed with HMAC-SHA256 under the tenant's key so a forged or edited token is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .into()
}

pub fn mint(key: &str, claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "HS256", "kid": "csp-onboard-emulator"});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = hmac_sha256(key.as_bytes(), signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    BadSignature,
}

/// The claims of a token this tenant signed. Expiry and audience are the caller's business:
/// each service words those failures its own way.
pub fn verify(key: &str, token: &str) -> Result<Value, Invalid> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| Invalid::Malformed)?;
    let expected = hmac_sha256(key.as_bytes(), format!("{h}.{p}").as_bytes());
    if sig != expected {
        return Err(Invalid::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| Invalid::Malformed)?;
    serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edited_token_is_refused() {
        let t = mint("k1", &json!({"aud": "https://graph.microsoft.com"}));
        assert_eq!(
            verify("k1", &t).unwrap()["aud"],
            "https://graph.microsoft.com"
        );
        assert_eq!(verify("k2", &t), Err(Invalid::BadSignature));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"aud":"https://api.partnercenter.microsoft.com"}"#);
        parts[1] = &forged;
        assert_eq!(verify("k1", &parts.join(".")), Err(Invalid::BadSignature));
        assert_eq!(verify("k1", "not-a-jwt"), Err(Invalid::Malformed));
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::emulator::state::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
