//! Waiting on state: tests poll for the state they expect (a phase, a leader, a metric, a node
//! listed or gone) instead of sleeping for a guessed time, so they are as fast as the system and
//! fail with what they last saw.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Calls `check` every `every` until it gives `Some(value)`, and returns the value. After
/// `timeout` it panics with `what` and `context()` (the nodes' logs, say), evaluated only then.
pub async fn until<T, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Fut,
    context: impl FnOnce() -> String,
) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {} ms\n{}",
                timeout.as_millis(),
                context()
            );
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn until_returns_the_first_value_and_checks_at_its_pace() {
        let started = Instant::now();
        let mut calls = 0;
        let got = until(
            "three calls",
            Duration::from_secs(5),
            Duration::from_millis(100),
            || {
                calls += 1;
                let n = calls;
                async move { (n == 3).then_some(n) }
            },
            String::new,
        )
        .await;
        assert_eq!(got, 3);
        assert_eq!(started.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never: not within 1000 ms\nthe logs")]
    async fn until_panics_with_the_context_at_the_timeout() {
        until(
            "never",
            Duration::from_secs(1),
            Duration::from_millis(100),
            || async { None::<()> },
            || "the logs".to_string(),
        )
        .await;
    }
}
