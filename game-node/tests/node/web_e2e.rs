//! Drives the real web page in headless Chromium (tests/web/e2e.mjs) against a real node: register,
//! bet with auto-cash-out, watch a whole round, verify it on /verify, and save screenshots.
//! Needs Node.js and Debian's chromium (tests/install-deps.sh installs it). Under `CI=true` a missing
//! browser fails the test; elsewhere it is skipped with a message saying how to run it.

use crate::common;

use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_plays_and_verifies_a_round_in_a_real_browser() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let chromium =
        std::env::var("CRASHFLEET_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let have_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !std::path::Path::new(&chromium).exists() || !have_node {
        let msg = "SKIPPED web e2e: needs node and chromium (run `bash tests/install-deps.sh`)";
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{msg}");
        eprintln!("{msg}");
        return;
    }
    // A 2.5 s betting window leaves a person (and the test) time to click.
    let s = TestServer::start(&["--betting-window-ms", "2500", "--doubling-ms", "2000"]).await;
    let artifacts = std::env::var("CRASHFLEET_ARTIFACTS").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("crashfleet-artifacts")
            .display()
            .to_string()
    });
    let url = s.url.clone();
    let script = root.join("tests/web/run.sh");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(script)
            .env("CRASHFLEET_URL", url)
            .env("CRASHFLEET_ARTIFACTS", &artifacts)
            .output()
    })
    .await
    .expect("join")
    .expect("run tests/web/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    s.assert_audit().await;
}
