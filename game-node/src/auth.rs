//! Players' credentials and sessions: argon2id password hashes and HS256 JWT bearer tokens.
//!
//! A token is signed with the key every node of a table shares, and names the player and the
//! player's *token version*. Every authenticated request resolves it against the ledger (one read
//! of the player's row by primary key): a token whose player no longer exists, or whose version is
//! older than the player's current one, is refused (`unauthorized`). Logout bumps the version
//! ([`crate::ports::Accounts::revoke_tokens`]), so every token of that player stops working at once
//! on every node, because the ledger is what the fleet shares.
//!
//! Why a token version rather than short-lived tokens with refresh tokens: a short-lived token
//! still works until it expires (revocation is only as quick as its lifetime), a refresh token
//! must be stored and revocable anyway (a ledger read on refresh), and a WebSocket outlives any
//! short token. Every authenticated REST call already reads the player (balance, bets), so the
//! version check costs one indexed read and revokes immediately. The price: logout ends every
//! session of the player (all devices), not just one.
//!
//! The token's `name` claim is kept for compatibility with existing tokens and tools but never
//! trusted: the username always comes from the ledger.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ports::{Ledger, PlayerRecord};

const ISSUER: &str = "crashfleet";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Player id.
    sub: String,
    /// Username at issue time. Kept for compatibility; never trusted (the ledger's name is used).
    name: String,
    /// The player's token version at issue time; tokens from before versions existed carry none
    /// and count as version 0.
    #[serde(default)]
    ver: u64,
    iss: String,
    iat: u64,
    exp: u64,
}

/// A session resolved against the ledger: the player exists and the token is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub player_id: String,
    /// The ledger's username (never the token's claim).
    pub username: String,
    /// The token version the session was resolved at: a socket re-checks it before money
    /// commands ([`Session::still_valid`]).
    pub token_version: u64,
}

impl Session {
    /// The player as the game service takes it.
    pub fn player(&self) -> crate::game::Player<'_> {
        crate::game::Player {
            id: &self.player_id,
            username: &self.username,
        }
    }

    pub fn of(p: &PlayerRecord) -> Session {
        Session {
            player_id: p.id.clone(),
            username: p.username.clone(),
            token_version: p.token_version,
        }
    }

    /// Re-reads the player (one read by primary key): a long-lived session (a WebSocket) ends when
    /// its player logs out anywhere or no longer exists. Returns the session as the ledger has it now.
    pub async fn still_valid(&self, ledger: &dyn Ledger) -> Result<Session> {
        match ledger.player(&self.player_id).await? {
            Some(p) if p.token_version == self.token_version => Ok(Session::of(&p)),
            Some(_) => Err(Error::Unauthorized(
                "this session has ended (logged out); log in again".into(),
            )),
            None => Err(Error::Unauthorized(
                "this session's player no longer exists".into(),
            )),
        }
    }
}

/// What a token says once its signature and expiry are checked; not yet a session (see
/// [`Auth::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub player_id: String,
    pub token_version: u64,
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

    /// A token for `p` at its current token version.
    pub fn issue(&self, p: &PlayerRecord) -> Result<String> {
        let now = unix_now();
        let claims = Claims {
            sub: p.id.clone(),
            name: p.username.clone(),
            ver: p.token_version,
            iss: ISSUER.to_string(),
            iat: now,
            exp: now + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }

    /// Checks the signature, issuer and expiry (no ledger read).
    pub fn verify(&self, token: &str) -> Result<TokenClaims> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            Error::Unauthorized(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired".into(),
                _ => "invalid token".to_string(),
            })
        })?;
        Ok(TokenClaims {
            player_id: data.claims.sub,
            token_version: data.claims.ver,
        })
    }

    /// The session a token stands for, resolved against the ledger: `unauthorized` for a bad or
    /// expired token, a player who no longer exists, or a token revoked by logout. Returns the
    /// player's record (the caller usually needs its balance or name anyway).
    pub async fn resolve(&self, ledger: &dyn Ledger, token: &str) -> Result<PlayerRecord> {
        let claims = self.verify(token)?;
        let p = ledger
            .player(&claims.player_id)
            .await?
            .ok_or_else(|| Error::Unauthorized("this session's player no longer exists".into()))?;
        if p.token_version != claims.token_version {
            return Err(Error::Unauthorized(
                "this session has ended (logged out); log in again".into(),
            ));
        }
        Ok(p)
    }
}

/// Largest argon2 memory cost a stored hash may ask for (KiB): a tampered row must not make a
/// login allocate without bound.
const MAX_M_COST_KIB: u32 = 256 * 1024;

thread_local! {
    /// argon2's working memory (19 MiB at the default cost), kept per password thread and reused.
    /// Allocating it per hash let glibc's dynamic mmap threshold move the blocks onto heaps it never
    /// returns: RSS grew ~20 MB per sign-up (16 MB → 216 MB after 20 sign-ups, measured).
    static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs one argon2 computation with this thread's reusable memory.
fn argon2_into(a: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let need = a.params().block_count();
        if blocks.len() < need {
            blocks.resize(need, argon2::Block::default());
        }
        a.hash_password_into_with_memory(password, salt, out, &mut blocks[..need])
            .is_ok()
    })
}

/// argon2id with the crate's defaults (OWASP's recommended m=19 MiB, t=2, p=1), as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`, what `Argon2::hash_password` writes). CPU-heavy:
/// async callers use [`crate::password::PasswordPool::hash`].
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{Output, ParamsString};
    let fail = |e: &dyn std::fmt::Display| Error::Internal(format!("hashing a password: {e}"));
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let a = Argon2::default();
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| fail(&e))?;
    let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
    if !argon2_into(&a, password.as_bytes(), raw_salt, &mut out) {
        return Err(fail(&"argon2 refused its input"));
    }
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(a.params()).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    }
    .to_string();
    Ok(phc)
}

/// Checks a password against a stored PHC string (any argon2 variant, version and cost up to
/// `MAX_M_COST_KIB`); the comparison is constant-time (`Output`'s equality).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::Output;
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(expected), Some(salt)) = (
        argon2::Algorithm::try_from(h.algorithm),
        argon2::Params::try_from(&h),
        h.hash,
        h.salt,
    ) else {
        return false;
    };
    let version = match h.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    if params.m_cost() > MAX_M_COST_KIB {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(raw_salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let a = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    argon2_into(&a, password.as_bytes(), raw_salt, &mut out)
        && Output::new(&out).is_ok_and(|o| o == expected)
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

/// Login applies the registration bounds before any work: a username or password no account can
/// have is `invalid_credentials` at once — an over-long password is never hashed.
pub fn check_login_input(username: &str, password: &str) -> Result<()> {
    if validate_username(username).is_ok() && validate_password(password).is_ok() {
        Ok(())
    } else {
        Err(Error::InvalidCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours verifies with the crate's own verifier…
        let ours = hash_password("correct horse").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        // …and hashes the crate wrote (every stored player's) verify with ours.
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password("battery staple", &theirs));
        assert!(!verify_password("battery stapler", &theirs));
        // A tampered cost is refused before any allocation.
        let greedy = theirs.replace("m=19456", "m=4194304");
        assert!(!verify_password("battery staple", &greedy));
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let a = Auth::new(b"secret-one", 60);
        let p = PlayerRecord {
            id: "p1".into(),
            username: "alice".into(),
            password_hash: String::new(),
            balance: 0,
            token_version: 3,
        };
        let t = a.issue(&p).expect("issue");
        assert_eq!(
            a.verify(&t).expect("valid"),
            TokenClaims {
                player_id: "p1".into(),
                token_version: 3,
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
            ver: 0,
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

    #[test]
    fn login_input_outside_the_registration_bounds_is_invalid_credentials() {
        assert!(check_login_input("alice", "12345678").is_ok());
        for (u, p) in [
            ("alice", "short"),
            ("alice", &"x".repeat(129)),
            ("alice", &"x".repeat(1 << 20)),
            ("a b", "12345678"),
        ] {
            assert_eq!(check_login_input(u, p), Err(Error::InvalidCredentials));
        }
    }

    #[test]
    fn tokens_without_a_version_count_as_version_zero() {
        #[derive(Serialize)]
        struct Old {
            sub: String,
            name: String,
            iss: String,
            iat: u64,
            exp: u64,
        }
        let a = Auth::new(b"k", 60);
        let now = unix_now();
        let old = Old {
            sub: "p".into(),
            name: "n".into(),
            iss: ISSUER.into(),
            iat: now,
            exp: now + 60,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &old, &a.encoding)
            .expect("encode");
        assert_eq!(a.verify(&t).map(|c| c.token_version), Ok(0));
    }
}
