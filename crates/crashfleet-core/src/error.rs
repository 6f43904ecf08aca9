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
    /// Too many chat messages from one player: refused (nothing posted) until the window ends.
    #[error("too many chat messages; wait {retry_after_secs} s")]
    ChatThrottled { retry_after_secs: u64 },
    /// An admin muted this player in the table's chat until `until_ms` (Unix ms).
    #[error("you are muted in this chat until {until_ms} (Unix ms)")]
    Muted { until_ms: i64 },
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
            Error::ChatThrottled { .. } => "chat_rate_limited",
            Error::Muted { .. } => "muted",
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
            | Error::LoginThrottled { retry_after_secs }
            | Error::ChatThrottled { retry_after_secs } => Some((*retry_after_secs).max(1)),
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

/// What a player is shown for each code: short, in the player's terms (the message says what
/// happened in detail). The game page gets this table from the node, so the two never disagree.
pub const PLAYER_TEXT: &[(&str, &str)] = &[
    ("bad_request", "The request was not understood"),
    ("invalid_amount", "That stake is not allowed"),
    ("invalid_multiplier", "That auto cash-out is not allowed"),
    (
        "invalid_username",
        r#"Usernames are 3–32 letters, digits, "_", "." or "-""#,
    ),
    ("invalid_password", "Passwords are 8–128 characters"),
    (
        "missing_idempotency_key",
        "The request had no idempotency key",
    ),
    (
        "invalid_idempotency_key",
        "The request had an invalid idempotency key",
    ),
    (
        "idempotency_conflict",
        "That request id was already used for something else",
    ),
    ("unauthorized", "Please log in again"),
    ("forbidden", "That is not yours"),
    ("username_taken", "That username is taken"),
    ("invalid_credentials", "Wrong username or password"),
    ("not_found", "Not found"),
    ("unknown_round", "Unknown round"),
    ("unknown_bet", "Unknown bet"),
    ("betting_closed", "Betting is closed for this round"),
    (
        "bet_limit",
        "You already have the most bets allowed this round",
    ),
    ("insufficient_funds", "Not enough credits"),
    (
        "max_payout",
        "Stake × auto cash-out is above the table’s maximum payout",
    ),
    (
        "not_flying",
        "You can only cash out while the multiplier is flying",
    ),
    ("already_settled", "That bet is already settled"),
    ("too_late", "Too late — the round had already crashed"),
    ("rate_limited", "Slow down a little"),
    ("chat_rate_limited", "You are sending messages too fast"),
    ("muted", "You are muted in this chat for now"),
    ("payload_too_large", "The request was too large"),
    ("unavailable", "The table is unavailable right now"),
    ("busy", "The server is busy — try again in a moment"),
    (
        "outcome_unknown",
        "Still confirming your request — checking again",
    ),
    (
        "idempotency_key_used",
        "That request was already used for an earlier bet",
    ),
    ("internal", "Something went wrong on the server"),
];

impl Error {
    /// The player-facing text of this error's code.
    pub fn player_text(&self) -> &'static str {
        let code = self.code();
        PLAYER_TEXT
            .iter()
            .find(|(c, _)| *c == code)
            .map_or("Something went wrong", |(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of every variant: the `match` below stops compiling when a variant is added, so the
    /// list (and with it the table check) cannot fall behind.
    fn every_error() -> Vec<Error> {
        let all = vec![
            Error::BadRequest(String::new()),
            Error::InvalidAmount(String::new()),
            Error::InvalidMultiplier(String::new()),
            Error::InvalidUsername(String::new()),
            Error::InvalidPassword(String::new()),
            Error::MissingIdempotencyKey,
            Error::InvalidIdempotencyKey,
            Error::IdempotencyConflict,
            Error::Unauthorized(String::new()),
            Error::Forbidden(String::new()),
            Error::UsernameTaken,
            Error::InvalidCredentials,
            Error::NotFound(String::new()),
            Error::UnknownRound(1),
            Error::UnknownBet(String::new()),
            Error::BettingClosed,
            Error::BetLimit(1),
            Error::InsufficientFunds,
            Error::MaxPayout(1),
            Error::NotFlying,
            Error::AlreadySettled,
            Error::TooLate,
            Error::RateLimited,
            Error::LoginThrottled {
                retry_after_secs: 1,
            },
            Error::ChatThrottled {
                retry_after_secs: 1,
            },
            Error::Muted { until_ms: 1 },
            Error::PayloadTooLarge,
            Error::Unavailable(String::new()),
            Error::Busy {
                what: "x",
                retry_after_secs: 1,
            },
            Error::OutcomeUnknown,
            Error::KeyUsed {
                bet_id: String::new(),
                round: 1,
            },
            Error::Fenced {
                stale: 1,
                current: 2,
            },
            Error::Internal(String::new()),
        ];
        for e in &all {
            match e {
                Error::BadRequest(_)
                | Error::InvalidAmount(_)
                | Error::InvalidMultiplier(_)
                | Error::InvalidUsername(_)
                | Error::InvalidPassword(_)
                | Error::MissingIdempotencyKey
                | Error::InvalidIdempotencyKey
                | Error::IdempotencyConflict
                | Error::Unauthorized(_)
                | Error::Forbidden(_)
                | Error::UsernameTaken
                | Error::InvalidCredentials
                | Error::NotFound(_)
                | Error::UnknownRound(_)
                | Error::UnknownBet(_)
                | Error::BettingClosed
                | Error::BetLimit(_)
                | Error::InsufficientFunds
                | Error::MaxPayout(_)
                | Error::NotFlying
                | Error::AlreadySettled
                | Error::TooLate
                | Error::RateLimited
                | Error::LoginThrottled { .. }
                | Error::ChatThrottled { .. }
                | Error::Muted { .. }
                | Error::PayloadTooLarge
                | Error::Unavailable(_)
                | Error::Busy { .. }
                | Error::OutcomeUnknown
                | Error::KeyUsed { .. }
                | Error::Fenced { .. }
                | Error::Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_code_a_player_can_get_has_a_text_and_the_table_has_no_stale_code() {
        let codes: std::collections::BTreeSet<&str> =
            every_error().iter().map(Error::code).collect();
        // `fenced` is between nodes (a deposed leader's write); no player request ends with it.
        for code in &codes {
            let listed = PLAYER_TEXT.iter().any(|(c, _)| c == code);
            assert_eq!(listed, *code != "fenced", "{code}");
        }
        for (code, text) in PLAYER_TEXT {
            assert!(codes.contains(code), "{code} is no error's code");
            assert!(!text.is_empty(), "{code}");
        }
        let mut seen = std::collections::BTreeSet::new();
        assert!(
            PLAYER_TEXT.iter().all(|(c, _)| seen.insert(*c)),
            "a code is listed twice"
        );
        assert_eq!(
            Error::TooLate.player_text(),
            "Too late — the round had already crashed"
        );
    }
}
