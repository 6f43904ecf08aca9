//! The domain error ([`crashfleet_core::error::Error`]) as the node's adapters need it: the HTTP
//! status of every code (the edge's business, so the core knows no HTTP) and the mapping of
//! database errors (the ledger's business, so the core knows no SQL).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub use crashfleet_core::error::{Error, PLAYER_TEXT, Result};

/// The HTTP status each error is answered with.
pub trait HttpStatus {
    fn status(&self) -> StatusCode;
}

impl HttpStatus for Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_)
            | Error::InvalidAmount(_)
            | Error::InvalidMultiplier(_)
            | Error::InvalidUsername(_)
            | Error::InvalidPassword(_)
            | Error::MissingIdempotencyKey
            | Error::InvalidIdempotencyKey
            | Error::MaxPayout(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::Muted { .. } => StatusCode::FORBIDDEN,
            Error::NotFound(_) | Error::UnknownRound(_) | Error::UnknownBet(_) => {
                StatusCode::NOT_FOUND
            }
            Error::IdempotencyConflict
            | Error::UsernameTaken
            | Error::BettingClosed
            | Error::BetLimit(_)
            | Error::InsufficientFunds
            | Error::NotFlying
            | Error::AlreadySettled
            | Error::TooLate
            | Error::KeyUsed { .. }
            | Error::Fenced { .. } => StatusCode::CONFLICT,
            Error::RateLimited | Error::LoginThrottled { .. } | Error::ChatThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable(_) | Error::Busy { .. } | Error::OutcomeUnknown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Whether a database error means "the ledger is unreachable or busy, try again" rather than a
/// bug: PostgreSQL SQLSTATE classes 08 (connection), 53 (resources), 57P0x (the server shutting
/// down or restarting), 57014 (statement timeout), 40001/40P01 (serialization, deadlock: the
/// transaction rolled back and moved nothing).
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || matches!(code, "57014" | "40001" | "40P01")
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (docs/API.md lists them).
    code: String,
    message: String,
}

/// An [`Error`] as the HTTP edge answers it: the status of its code, a JSON [`ErrorBody`] and
/// `Retry-After` on the errors that mean "not now". (The domain error knows no HTTP.)
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ApiError(e) = self;
        if let Error::Internal(detail) = &e {
            tracing::error!(%detail, "internal error");
        }
        let body = ErrorBody {
            code: e.code().to_string(),
            message: e.public_message(),
        };
        let mut response = (e.status(), Json(body)).into_response();
        if let Some(secs) = e.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A database error as the ledger reports it: [`Error::Unavailable`] when it means "the ledger
/// is unreachable or busy, try again", else [`Error::Internal`].
pub fn db(e: sqlx::Error) -> Error {
    let transient = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| transient_sqlstate(&c)),
        _ => false,
    };
    if transient {
        Error::Unavailable(format!("ledger unavailable: {e}"))
    } else {
        Error::Internal(format!("ledger: {e}"))
    }
}

/// `.db()?` on a database result: its error as [`db`] maps it.
pub trait DbResult<T> {
    fn db(self) -> Result<T>;
}

impl<T> DbResult<T> for std::result::Result<T, sqlx::Error> {
    fn db(self) -> Result<T> {
        self.map_err(db)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn restarts_and_timeouts_are_unavailable_not_internal() {
        for code in [
            "08006", "57P01", "57P03", "53300", "57014", "40001", "40P01",
        ] {
            assert!(super::transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22003"] {
            assert!(!super::transient_sqlstate(code), "{code}");
        }
    }
}
