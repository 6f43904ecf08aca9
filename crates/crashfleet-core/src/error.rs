//! One error type for everything a player or operator can be told, each with a stable `code`
//! (documented in docs/API.md). The engine, the ledger and both edges share it so a refusal reads
//! the same over REST and WebSocket. It knows no transport: the HTTP edge maps each error to its
//! status, and each storage adapter maps its own errors into [`Error::Unavailable`] (try again)
//! or [`Error::Internal`] (a bug).

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidAmount(String),
    #[error("{0}")]
    InvalidMultiplier(String),
    #[error("{0}")]
    InvalidUsername(String),
    #[error("{0}")]
    InvalidPassword(String),
    #[error("an Idempotency-Key header (1-64 printable ASCII characters) is required")]
    MissingIdempotencyKey,
    #[error("the idempotency key must be 1-64 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("this idempotency key was already used for a different request")]
    IdempotencyConflict,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("that username is taken")]
    UsernameTaken,
    #[error("wrong username or password")]
    InvalidCredentials,
    #[error("{0}")]
    NotFound(String),
    #[error("round {0} is unknown")]
    UnknownRound(u64),
    #[error("bet {0} is unknown")]
    UnknownBet(String),
    #[error("betting is closed for this round")]
    BettingClosed,
    #[error("at most {0} bets per player per round")]
    BetLimit(u32),
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("stake × auto-cash-out would exceed the table's maximum payout of {0}")]
    MaxPayout(i64),
    #[error("the round is not flying")]
    NotFlying,
    #[error("this bet is already settled")]
    AlreadySettled,
    #[error("too late: the round crashed")]
    TooLate,
    #[error("too many requests, slow down")]
    RateLimited,
    /// Too many failed logins for one username (code `rate_limited`): refused without checking
    /// the password until the delay passes.
    #[error("too many failed logins for this username; retry in {retry_after_secs} s")]
    LoginThrottled { retry_after_secs: u64 },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("{0}")]
    Unavailable(String),
    /// A bounded queue or a per-client cap is full: nothing was done; retry after the given
    /// seconds (sent as `Retry-After`).
    #[error("{what} is busy; retry in {retry_after_secs} s")]
    Busy {
        what: &'static str,
        retry_after_secs: u64,
    },
    /// The node asked for a money decision and lost the answer (a reply that never came back).
    /// Money may have moved: a retry with the same idempotency key returns the real first outcome.
    #[error("the outcome of this request is not known yet; retry with the same idempotency key")]
    OutcomeUnknown,
    /// The idempotency key already placed a bet in an earlier round: every bet needs a new key.
    #[error("this idempotency key already placed bet {bet_id} in round {round}; use a new key")]
    KeyUsed { bet_id: String, round: u64 },
    /// A newer leader holds the table: this node's leader write was refused (fencing).
    #[error("stale leadership term {stale} (the table is at term {current})")]
    Fenced { stale: u64, current: u64 },
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// The stable machine-readable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::InvalidAmount(_) => "invalid_amount",
            Error::InvalidMultiplier(_) => "invalid_multiplier",
            Error::InvalidUsername(_) => "invalid_username",
            Error::InvalidPassword(_) => "invalid_password",
            Error::MissingIdempotencyKey => "missing_idempotency_key",
            Error::InvalidIdempotencyKey => "invalid_idempotency_key",
            Error::IdempotencyConflict => "idempotency_conflict",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::UsernameTaken => "username_taken",
            Error::InvalidCredentials => "invalid_credentials",
            Error::NotFound(_) => "not_found",
            Error::UnknownRound(_) => "unknown_round",
            Error::UnknownBet(_) => "unknown_bet",
            Error::BettingClosed => "betting_closed",
            Error::BetLimit(_) => "bet_limit",
            Error::InsufficientFunds => "insufficient_funds",
            Error::MaxPayout(_) => "max_payout",
            Error::NotFlying => "not_flying",
            Error::AlreadySettled => "already_settled",
            Error::TooLate => "too_late",
            Error::RateLimited | Error::LoginThrottled { .. } => "rate_limited",
            Error::PayloadTooLarge => "payload_too_large",
            Error::Unavailable(_) => "unavailable",
            Error::Busy { .. } => "busy",
            Error::OutcomeUnknown => "outcome_unknown",
            Error::KeyUsed { .. } => "idempotency_key_used",
            Error::Fenced { .. } => "fenced",
            Error::Internal(_) => "internal",
        }
    }

    /// Seconds a client should wait before retrying (the `Retry-After` header), for the errors
    /// that mean "not now": every 429 and 503 carries one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::RateLimited => Some(1),
            Error::Busy {
                retry_after_secs, ..
            }
            | Error::LoginThrottled { retry_after_secs } => Some((*retry_after_secs).max(1)),
            Error::Unavailable(_) | Error::OutcomeUnknown => Some(1),
            _ => None,
        }
    }

    /// The text shown to clients. Internal details stay in the logs.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
