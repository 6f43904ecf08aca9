//! Round secrets and the ledger at rest, through a real standalone node: while a round is open its
//! hash and crash point are nowhere in the database files, the data directory is 0700 and the
//! ledger files 0600, and a ledger other users could read is refused at start.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::TestServer;
use game_node::fairness::{Chain, to_hex};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every byte SQLite keeps for the ledger (the database and its write-ahead log).
fn ledger_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["ledger.db", "ledger.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_rounds_secrets_are_not_on_disk_and_the_files_are_private() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_arg = data.display().to_string();
    let s = TestServer::start(&["--data-dir", &data_arg]).await;

    assert_eq!(mode(&data), 0o700, "the data directory");
    for f in ["ledger.db", "ledger.db-wal", "ledger.db-shm", "chain.seed"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    // The secret of the round now taking bets, as only the chain seed's owner can compute it.
    let seed = game_node::verify::read_seed_file(&data.join("chain.seed")).expect("seed");
    let chain = Chain::new(seed, 5_000).expect("chain");
    let round = s.wait_betting(300).await;
    let number = round["number"].as_u64().expect("number");
    let hash = to_hex(&chain.round_hash(number).expect("hash"));
    // A bet makes the ledger write inside the window, as a busy table does.
    let (token, _) = s.register("atrest").await;
    assert_eq!(s.bet(&token, "k1", 100, None).await.0, 201);
    assert!(
        !contains(&ledger_bytes(&data), &hash),
        "round {number}'s hash is readable in the ledger files while the round is open"
    );

    // Once the round has crashed the hash is public and stored (the search itself works).
    s.wait_finished(number).await;
    let (_, detail) = s.get(&format!("/api/v1/rounds/{number}")).await;
    assert_eq!(detail["round"]["hash"].as_str(), Some(hash.as_str()));
    assert!(
        contains(&ledger_bytes(&data), &hash),
        "round {number}'s hash is stored once it ended"
    );
    s.assert_audit().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_other_users_can_read_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let data_arg = data.display().to_string();
    // A first start creates the ledger; then someone loosens its mode.
    let s = TestServer::start(&["--data-dir", &data_arg]).await;
    s.stop().await;
    let db = data.join("ledger.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let cfg = common::fast_config(&data, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = game_node::node::run(
        listener,
        cfg,
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("a world-readable ledger must be refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("mode 0644") && text.contains("chmod 600"),
        "unclear refusal: {text}"
    );
}
