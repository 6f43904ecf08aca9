//! Players' credentials and sessions: argon2id password hashes and HS256 JWT bearer tokens.
//! Tokens are stateless, so a session is valid on every node that shares the signing key.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const ISSUER: &str = "crashfleet";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Player id.
    sub: String,
    /// Username, so sockets can label bets without a lookup.
    name: String,
    iss: String,
    iat: u64,
    exp: u64,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub player_id: String,
    pub username: String,
}

#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Auth {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Auth {
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs,
        }
    }

    pub fn issue(&self, player_id: &str, username: &str) -> Result<String> {
        let now = unix_now();
        let claims = Claims {
            sub: player_id.to_string(),
            name: username.to_string(),
            iss: ISSUER.to_string(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }

    pub fn verify(&self, token: &str) -> Result<Session> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            Error::Unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired".into(),
                _ => "invalid token".to_string(),
            })
        })?;
        Ok(Session {
            player_id: data.claims.sub,
            username: data.claims.name,
        })
    }
}

/// argon2id with the crate's defaults (OWASP's recommended m=19 MiB, t=2, p=1). CPU-heavy: callers
/// run it on the blocking pool.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub fn validate_username(u: &str) -> Result<()> {
    let ok = (3..=32).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidUsername(
            "usernames are 3-32 characters of letters, digits, '_', '.' and '-'".into(),
        ))
    }
}

pub fn validate_password(p: &str) -> Result<()> {
    if (8..=128).contains(&p.chars().count()) {
        Ok(())
    } else {
        Err(Error::InvalidPassword(
            "passwords are 8-128 characters".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let a = Auth::new(b"secret-one", 60);
        let t = a.issue("p1", "alice").expect("issue");
        assert_eq!(
            a.verify(&t).expect("valid"),
            Session {
                player_id: "p1".into(),
                username: "alice".into()
            }
        );
        let other = Auth::new(b"secret-two", 60);
        assert!(matches!(other.verify(&t), Err(Error::Unauthorized(_))));
        assert!(a.verify("garbage").is_err());
        let mut tampered = t.clone();
        tampered.pop();
        assert!(a.verify(&tampered).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let a = Auth::new(b"k", 0);
        let claims = Claims {
            sub: "p".into(),
            name: "n".into(),
            iss: ISSUER.into(),
            iat: 1,
            exp: 2,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding)
            .expect("encode");
        assert_eq!(
            a.verify(&t),
            Err(Error::Unauthorized("the token has expired".into()))
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn usernames_and_passwords_are_validated() {
        assert!(validate_username("alice_01").is_ok());
        for bad in ["ab", "with space", "émile", &"x".repeat(33)] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("short").is_err());
    }
}
