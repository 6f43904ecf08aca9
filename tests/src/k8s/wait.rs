//! Waiting for the controllers: the API answers at once, but the scheduler, kwok and the garbage
//! collector act a moment later, so tests poll for the state they expect.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::error::Error;

/// Between two checks: short, because a local control plane converges in well under a second.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `check` until it returns `Ok(Some(value))`, at most for `timeout`. An `Err` from `check`
/// is retried too (and reported if it is still the last word at the timeout), since a fresh
/// resource can briefly answer 404 or 403 while caches catch up.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, kube::Error>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        };
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: timeout,
                last_error,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn poll_returns_the_first_value() {
        let mut calls = 0;
        let got = poll("three calls", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { Ok(if n == 3 { Some(n) } else { None }) }
        })
        .await;
        assert!(matches!(got, Ok(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_times_out_with_the_last_error() {
        let got: Result<(), _> = poll("never", Duration::from_secs(1), || async {
            Err(kube::Error::LinesCodecMaxLineLengthExceeded)
        })
        .await;
        assert!(matches!(
            got,
            Err(Error::Timeout {
                last_error: Some(_),
                ..
            })
        ));
    }
}
