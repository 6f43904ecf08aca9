//! Players' credentials and sessions: argon2id password hashes and HS256 JWT bearer tokens.
//! Tokens are stateless, so a session is valid on every node that shares the signing key.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, SaltString};
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

/// A job for the password threads.
type Job = Box<dyn FnOnce() + Send>;

/// The password threads: a few dedicated threads run every argon2 hash and check. Each argon2 call
/// allocates 19 MiB; on tokio's blocking pool (up to 512 threads) a burst of registrations spread
/// those blocks over many malloc arenas that keep them — a load test of 300 sign-ups left a node at
/// 1.7 GB RSS. Two threads (or one per core up to four) bound both that memory and the CPU that
/// sign-ups can take from the game.
fn password_threads() -> &'static std::sync::mpsc::Sender<Job> {
    static POOL: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                            Err(_) => return,
                        };
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start password thread {i}: {e}");
            }
        }
        tx
    })
}

/// Runs `f` on the password threads.
async fn on_password_threads<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    password_threads()
        .send(job)
        .map_err(|_| Error::Internal("password threads stopped".into()))?;
    rx.await
        .map_err(|_| Error::Internal("password thread failed".into()))
}

/// [`hash_password`] on the password threads.
pub async fn hash_password_async(password: String) -> Result<String> {
    on_password_threads(move || hash_password(&password)).await?
}

/// [`verify_password`] on the password threads; `false` without a hash (an unknown user costs
/// the same round trip, so timing does not reveal which usernames exist).
pub async fn verify_password_async(password: String, hash: Option<String>) -> Result<bool> {
    on_password_threads(move || match hash {
        Some(h) => verify_password(&password, &h),
        None => {
            let _ = hash_password(&password);
            false
        }
    })
    .await
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
/// async callers use [`hash_password_async`].
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
