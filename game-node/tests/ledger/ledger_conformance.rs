//! Ledger conformance: one suite, written once against the [`Ledger`] port, run on both backends
//! `SqlLedger` serves — SQLite (standalone) and PostgreSQL (fleet). Every scenario ends with the
//! conservation audit (balances + house result = credits − withdrawals, exactly), and one test tampers with the database to
//! prove the audit can fail.
//!
//! `conformance!` turns each `async fn name(t: &Ctx)` below into `sqlite::name` and
//! `postgres::name`, so `cargo test -p game-node --test ledger postgres::` runs one side.
//!
//! Isolation: every test gets a database of its own — a fresh SQLite file in a temporary directory,
//! or a fresh PostgreSQL database created through the `CRASHFLEET_TEST_DATABASE_URL` connection
//! (its user may create databases; `tests/pg/pg.sh` sets that up) and dropped when the test passes.
//! A shared database with unique table ids and usernames would not do: the audit, the leaderboard
//! and the tampering test read the whole database, so parallel tests would see each other's money.
//!
//! Without `CRASHFLEET_TEST_DATABASE_URL` the PostgreSQL tests print a SKIPPED line (straight to
//! stderr, past libtest's capture, so it shows) — and fail under `CI=true`: CI must never pass
//! without having talked to PostgreSQL.

use std::io::Write as _;
use std::ops::Deref;
use std::sync::Arc;

use crashfleet_core::settlement::{self as settlement, SettlementLeaf};
use crashfleet_tests::db::TestDb;
use game_node::engine::{CashOut, Curve, Outcome, RoundPlan, Rules, Settlement, payout};
use game_node::error::Error;
use game_node::ledger::SqlLedger;
use game_node::ports::ledger_parts::*;
use game_node::ports::{BetRecord, Commitment, Ledger, PlayerRecord, Reveal, Settled};
use game_node::protocol::{BetStatus, RoundStatus};
use sqlx::Connection as _;

const URL_ENV: &str = "CRASHFLEET_TEST_DATABASE_URL";
const TABLE: &str = "main";
/// A fixed start time: the ledger takes every instant from its caller.
const T0: i64 = 1_700_000_000_000;
/// Connections per ledger instance; parallel tests share one server (pg.sh allows 400).
const POOL: u32 = 4;
/// Connections per replica in the concurrency tests: enough for real contention on the rows.
const REPLICA_POOL: u32 = 8;

/// One test's database and the ledger under test (`Deref`s to it).
struct Ctx {
    backend: &'static str,
    url: String,
    ledger: SqlLedger,
    /// Keeps the SQLite file alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the test's own database.
    pg: Option<TestDb>,
}

impl Deref for Ctx {
    type Target = SqlLedger;
    fn deref(&self) -> &SqlLedger {
        &self.ledger
    }
}

impl Ctx {
    async fn sqlite() -> Ctx {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = SqlLedger::connect(&url, POOL).await.expect("sqlite ledger");
        Ctx {
            backend: "sqlite",
            url,
            ledger,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// `None` when PostgreSQL is not configured (and not required): the test is skipped, loudly.
    async fn postgres(test: &str) -> Option<Ctx> {
        let Some(admin) = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()) else {
            let how = "start one with: eval \"$(bash tests/pg/pg.sh start | tail -1)\" && \
                       export CRASHFLEET_TEST_DATABASE_URL";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{URL_ENV} is unset and CI=true: the PostgreSQL ledger tests must run in CI; {how} (tests/run.sh does)"
                );
            }
            // One line for the whole run, written past the test harness's output capture (which
            // only takes `print!`/`eprint!`), so the skip shows even when every test passes.
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "\nSKIPPED postgres::* (the PostgreSQL half of the ledger conformance suite): \
                     {URL_ENV} is unset; {how}"
                );
            });
            return None;
        };
        let db = TestDb::create(&admin, test).await;
        let url = db.url.clone();
        let ledger = SqlLedger::connect(&url, POOL)
            .await
            .expect("postgres ledger");
        Some(Ctx {
            backend: "postgres",
            url,
            ledger,
            _dir: None,
            pg: Some(db),
        })
    }

    /// Another `SqlLedger` on the same database: a second replica of the fleet.
    async fn replica(&self) -> SqlLedger {
        SqlLedger::connect(&self.url, REPLICA_POOL)
            .await
            .expect("replica")
    }

    /// Runs raw SQL behind the ledger's back (the tampering test). Returns the rows affected.
    async fn raw(&self, sql: &str) -> u64 {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url)
            .await
            .expect("raw connection");
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .expect("raw SQL")
            .rows_affected();
        conn.close().await.ok();
        n
    }

    /// After a passing test: closes the ledger and drops a PostgreSQL database. (A failing test
    /// keeps its database for inspection; `pg.sh stop` removes everything.) Best effort: a passing
    /// test does not fail over its clean-up.
    async fn finish(self) {
        self.ledger.close().await;
        if let Some(db) = self.pg {
            db.drop_now().await;
        }
    }
}

/// Generates `sqlite::<name>` and `postgres::<name>` for each scenario.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let t = super::Ctx::sqlite().await;
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(t) = super::Ctx::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&t).await;
                    t.finish().await;
                }
            )*
        }
    };
}

conformance!(
    register_usernames_are_unique_case_insensitively,
    revoke_tokens_bumps_the_version_for_every_replica,
    adjust_is_idempotent_and_never_overdraws,
    commit_fairness_stores_once,
    the_salt_can_be_fixed_only_before_the_first_round,
    a_signing_key_is_adopted_once_and_never_replaced,
    claim_term_fences_stale_leaders,
    open_round_refuses_a_reused_number,
    place_bet_debits_once,
    settle_cash_out_pays_once,
    finish_round_settles_exactly_once,
    void_round_refunds_open_bets_only,
    history_reads,
    audit_detects_tampering,
    concurrent_bets_never_overdraw,
    concurrent_retries_of_one_bet_debit_once,
    concurrent_finish_round_settles_once,
    concurrent_void_and_cash_outs_pay_each_bet_once,
    concurrent_finish_and_cash_outs_pay_each_bet_once,
    concurrent_claims_keep_the_newest_term,
    concurrent_adjust_retries_move_money_once,
    a_burst_of_mixed_writes_answers_each_alone,
    random_histories_keep_the_audit_exact,
);

// --- builders --------------------------------------------------------------------------------

fn rules() -> Rules {
    Rules {
        min_stake: 1,
        max_stake: 1_000_000,
        max_payout: 100_000_000,
        bets_per_player: 100,
        max_x100: 100_000,
        betting_ms: 5_000,
        pause_ms: 2_000,
    }
}

/// Round `number` opening at `T0 + number` minutes, crashing at `crash_x100`.
fn plan(number: u64, crash_x100: u64) -> RoundPlan {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&number.to_be_bytes());
    hash[31] = 0xcf;
    RoundPlan::new(
        number,
        hash,
        crash_x100,
        T0 + number as i64 * 60_000,
        &rules(),
        &Curve::from_doubling_ms(10_000),
    )
}

/// What the leader reveals when round `number` (opened with `plan(number, crash_x100)`) ends.
fn reveal(number: u64, crash_x100: u64) -> Reveal {
    Reveal::of(&plan(number, crash_x100))
}

/// A bet as `Game::place_bet` records it (fresh id, status `open`, nothing settled).
fn bet(p: &PlayerRecord, round: u64, key: &str, stake: i64, auto: Option<u64>) -> BetRecord {
    BetRecord {
        bet_id: uuid::Uuid::new_v4().to_string(),
        table: TABLE.into(),
        round,
        player_id: p.id.clone(),
        username: p.username.clone(),
        stake,
        auto_cashout_x100: auto,
        status: BetStatus::Open,
        cashout_x100: None,
        payout: None,
        placed_at_ms: T0 + round as i64 * 60_000 + 1_000,
        idempotency_key: key.into(),
        cashout_key: None,
        settled_at_ms: None,
    }
}

/// The settlement leaf `b` must end as.
fn leaf(
    b: &BetRecord,
    outcome: settlement::Outcome,
    multiplier_x100: Option<u64>,
    payout: u64,
) -> SettlementLeaf {
    SettlementLeaf {
        bet_id: b.bet_id.clone(),
        player: settlement::player_hash(&b.player_id),
        stake: b.stake as u64,
        outcome,
        multiplier_x100,
        payout,
    }
}

fn won(b: &BetRecord, multiplier_x100: u64) -> Settlement {
    Settlement {
        bet_id: b.bet_id.clone(),
        player_id: b.player_id.clone(),
        outcome: Outcome::Won {
            multiplier_x100,
            payout: payout(b.stake, multiplier_x100, rules().max_payout),
        },
        cashout_key: None,
    }
}

fn lost(b: &BetRecord) -> Settlement {
    Settlement {
        bet_id: b.bet_id.clone(),
        player_id: b.player_id.clone(),
        outcome: Outcome::Lost,
        cashout_key: None,
    }
}

fn cash_out(b: &BetRecord, multiplier_x100: u64) -> CashOut {
    CashOut {
        round: b.round,
        bet_id: b.bet_id.clone(),
        player_id: b.player_id.clone(),
        username: b.username.clone(),
        stake: b.stake,
        multiplier_x100,
        payout: payout(b.stake, multiplier_x100, rules().max_payout),
        at_ms: b.placed_at_ms + 10_000,
        auto: false,
        key: None,
    }
}

async fn player(t: &Ctx, name: &str, credit: i64) -> PlayerRecord {
    t.register(name, "argon2-hash-not-checked-here", credit, T0)
        .await
        .expect("register")
}

async fn balance(l: &dyn Ledger, id: &str) -> i64 {
    l.player(id).await.expect("player").expect("exists").balance
}

/// Claims term 1 and opens round `number`.
async fn open(t: &Ctx, number: u64, crash_x100: u64) {
    t.claim_term(TABLE, 1).await.expect("claim");
    t.open_round(TABLE, 1, &plan(number, crash_x100))
        .await
        .expect("open round");
}

async fn finish(
    t: &Ctx,
    number: u64,
    crash_x100: u64,
    settlements: &[Settlement],
) -> Vec<(String, i64)> {
    t.finish_round(
        TABLE,
        1,
        number,
        &reveal(number, crash_x100),
        T0 + number as i64 * 60_000 + 20_000,
        settlements,
    )
    .await
    .expect("finish")
}

/// The audit must balance; its sums are returned for further checks.
async fn assert_balanced(t: &Ctx) -> game_node::ports::Audit {
    let a = t.audit().await.expect("audit");
    assert!(
        a.balanced && a.violations.is_empty(),
        "[{}] audit not balanced: {a:#?}",
        t.backend
    );
    assert_eq!(
        a.player_balances + a.house_result,
        a.credits - a.withdrawals,
        "[{}] conservation",
        t.backend
    );
    a
}

fn assert_err<T: std::fmt::Debug>(r: Result<T, Error>, want: &Error, what: &str) {
    match r {
        Err(e) if &e == want => {}
        other => panic!("{what}: expected Err({want:?}), got {other:?}"),
    }
}

// --- the scenarios ----------------------------------------------------------------------------

async fn register_usernames_are_unique_case_insensitively(t: &Ctx) {
    let alice = player(t, "Alice", 1_000).await;
    assert_eq!(alice.balance, 1_000);
    assert_eq!(alice.username, "Alice");
    for dup in ["Alice", "alice", "ALICE", "aLiCe"] {
        assert_err(
            t.register(dup, "h", 50, T0).await,
            &Error::UsernameTaken,
            &format!("[{}] register {dup}", t.backend),
        );
    }
    let found = t
        .player_by_name("aLIce")
        .await
        .expect("ledger call")
        .expect("by name");
    assert_eq!(found, alice);
    assert_eq!(
        t.player(&alice.id).await.expect("ledger call"),
        Some(alice.clone())
    );
    assert_eq!(t.player_by_name("bob").await.expect("ledger call"), None);
    assert_eq!(t.player("no-such-id").await.expect("ledger call"), None);

    let bob = player(t, "bob", 0).await;
    assert_eq!(bob.balance, 0);
    let a = assert_balanced(t).await;
    assert_eq!((a.players, a.credits, a.player_balances), (2, 1_000, 1_000));
}

async fn revoke_tokens_bumps_the_version_for_every_replica(t: &Ctx) {
    let alice = player(t, "alice", 100).await;
    let bob = player(t, "bob", 100).await;
    assert_eq!(alice.token_version, 0, "a new player starts at version 0");
    let by_id = |l: &'static str| format!("[{}] {l}", t.backend);
    // A second replica on the same database sees the bump (the fleet shares the ledger).
    let replica = t.replica().await;
    for want in 1..=3u64 {
        assert_eq!(
            t.revoke_tokens(&alice.id).await.expect("ledger call"),
            Some(want),
            "{}",
            by_id("revoke")
        );
        let seen = replica
            .player(&alice.id)
            .await
            .expect("ledger call")
            .expect("alice");
        assert_eq!(seen.token_version, want, "{}", by_id("replica read"));
    }
    // Concurrent logouts on two replicas each count: no lost update.
    let (a, b) = tokio::join!(t.revoke_tokens(&alice.id), replica.revoke_tokens(&alice.id));
    let mut got = [
        a.expect("ledger").expect("v"),
        b.expect("ledger").expect("v"),
    ];
    got.sort_unstable();
    assert_eq!(got, [4, 5], "{}", by_id("concurrent revokes"));
    let by_name = t
        .player_by_name("ALICE")
        .await
        .expect("ledger call")
        .expect("by name");
    assert_eq!(by_name.token_version, 5);
    // Nobody else is touched, balances neither, and an unknown player is `None`.
    assert_eq!(
        t.player(&bob.id)
            .await
            .expect("ledger call")
            .map(|p| p.token_version),
        Some(0)
    );
    assert_eq!(by_name.balance, 100);
    assert_eq!(
        t.revoke_tokens("no-such-id").await.expect("ledger call"),
        None
    );
    replica.close().await;
    assert_balanced(t).await;
}

async fn adjust_is_idempotent_and_never_overdraws(t: &Ctx) {
    let p = player(t, "Carol", 1_000).await;
    assert_eq!(
        t.adjust("carol", 500, "k1", T0).await.expect("ledger call"),
        1_500
    );
    assert_eq!(
        t.adjust("CAROL", 500, "k1", T0).await.expect("ledger call"),
        1_500
    );
    assert_eq!(
        t.adjust("Carol", -200, "k2", T0)
            .await
            .expect("ledger call"),
        1_300
    );
    assert_eq!(
        t.adjust("Carol", -200, "k2", T0)
            .await
            .expect("ledger call"),
        1_300
    );
    assert_err(
        t.adjust("Carol", -1_301, "k3", T0).await,
        &Error::InsufficientFunds,
        "overdraw",
    );
    assert_eq!(balance(&t.ledger, &p.id).await, 1_300);
    // The refused debit stored nothing: its key is still free.
    assert_eq!(
        t.adjust("Carol", -1_300, "k3", T0)
            .await
            .expect("ledger call"),
        0
    );
    assert_err(
        t.adjust("Carol", 700, "k1", T0).await,
        &Error::IdempotencyConflict,
        "same key, other amount",
    );
    player(t, "Dave", 0).await;
    assert_err(
        t.adjust("Dave", 500, "k1", T0).await,
        &Error::IdempotencyConflict,
        "same key, other player",
    );
    assert!(matches!(
        t.adjust("nobody", 5, "k9", T0).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        t.adjust("Carol", 0, "k10", T0).await,
        Err(Error::InvalidAmount(_))
    ));
    let a = assert_balanced(t).await;
    assert_eq!(
        (a.credits, a.withdrawals, a.player_balances),
        (1_500, 1_500, 0)
    );
}

async fn commit_fairness_stores_once(t: &Ctx) {
    assert_eq!(t.commitment(TABLE).await.expect("ledger call"), None);
    let first = Commitment {
        table: TABLE.into(),
        terminating_hash: "ab".repeat(32),
        salt: "public salt".into(),
        chain_length: 10_000,
        house_edge_bp: 100,
        max_x100: 100_000,
        created_at_ms: T0,
        signing_key: Some("ef".repeat(32)),
    };
    assert_eq!(t.commit_fairness(&first).await.expect("ledger call"), first);
    let other = Commitment {
        terminating_hash: "cd".repeat(32),
        salt: "another salt".into(),
        chain_length: 5,
        house_edge_bp: 250,
        created_at_ms: T0 + 1,
        ..first.clone()
    };
    // Never silently replaced: the stored commitment comes back, and the caller compares.
    assert_eq!(t.commit_fairness(&other).await.expect("ledger call"), first);
    assert_eq!(
        t.commitment(TABLE).await.expect("ledger call"),
        Some(first.clone())
    );
    let elsewhere = Commitment {
        table: "other".into(),
        ..other.clone()
    };
    assert_eq!(
        t.commit_fairness(&elsewhere).await.expect("ledger call"),
        elsewhere
    );
    assert_eq!(t.commitment(TABLE).await.expect("ledger call"), Some(first));
}

/// A commitment of [`TABLE`] with salt `salt` and no signing key stored.
fn keyless_commitment(salt: &str) -> Commitment {
    Commitment {
        table: TABLE.into(),
        terminating_hash: "ab".repeat(32),
        salt: salt.into(),
        chain_length: 10_000,
        house_edge_bp: 100,
        max_x100: 100_000,
        created_at_ms: T0,
        signing_key: None,
    }
}

async fn a_signing_key_is_adopted_once_and_never_replaced(t: &Ctx) {
    let c = keyless_commitment("s");
    t.commit_fairness(&c).await.expect("commit");
    // A table committed before receipts existed takes the first key a node brings...
    let first = "01".repeat(32);
    assert_eq!(
        t.adopt_signing_key(TABLE, &first).await.expect("adopt"),
        first
    );
    // ...and keeps it: another node's key is not stored, the stored one comes back.
    assert_eq!(
        t.adopt_signing_key(TABLE, &"02".repeat(32))
            .await
            .expect("again"),
        first
    );
    let stored = t.commitment(TABLE).await.expect("read").expect("stored");
    assert_eq!(stored.signing_key.as_deref(), Some(first.as_str()));
    assert_eq!(stored.terminating_hash, c.terminating_hash);
    assert!(t.adopt_signing_key("no-such-table", &first).await.is_err());
}

async fn the_salt_can_be_fixed_only_before_the_first_round(t: &Ctx) {
    let c = keyless_commitment("generated at first start");
    t.commit_fairness(&c).await.expect("commit");
    // No round yet: the public salt announced after the terminating hash replaces it.
    assert!(t.fix_salt(TABLE, "block 800000").await.expect("fix"));
    let stored = t.commitment(TABLE).await.expect("read").expect("stored");
    assert_eq!(stored.salt, "block 800000");
    assert_eq!(
        stored.terminating_hash, c.terminating_hash,
        "the commitment itself is unchanged"
    );
    // Once a round exists the salt is final.
    open(t, 1, 250).await;
    assert!(!t.fix_salt(TABLE, "block 800001").await.expect("fix"));
    let stored = t.commitment(TABLE).await.expect("read").expect("stored");
    assert_eq!(stored.salt, "block 800000");
    // Another table's rounds do not matter.
    let other = Commitment {
        table: "other".into(),
        ..c.clone()
    };
    t.commit_fairness(&other).await.expect("commit");
    assert!(t.fix_salt("other", "x").await.expect("fix"));
}

async fn claim_term_fences_stale_leaders(t: &Ctx) {
    assert_eq!(t.current_term(TABLE).await.expect("ledger call"), 0);
    // No term claimed yet: no leader write is accepted.
    assert!(matches!(
        t.open_round(TABLE, 1, &plan(1, 300)).await,
        Err(Error::Fenced { .. })
    ));
    t.claim_term(TABLE, 3).await.expect("ledger call");
    t.claim_term(TABLE, 3)
        .await
        .expect("re-claiming the same term");
    assert_eq!(t.current_term(TABLE).await.expect("ledger call"), 3);
    assert_err(
        t.claim_term(TABLE, 2).await,
        &Error::Fenced {
            stale: 2,
            current: 3,
        },
        "older term",
    );
    assert_eq!(t.current_term(TABLE).await.expect("ledger call"), 3);
    // Terms are per table.
    t.claim_term("other", 1).await.expect("ledger call");

    t.claim_term(TABLE, 5).await.expect("ledger call");
    assert_err(
        t.open_round(TABLE, 3, &plan(1, 300)).await,
        &Error::Fenced {
            stale: 3,
            current: 5,
        },
        "open_round, stale term",
    );
    assert_eq!(t.last_round(TABLE).await.expect("ledger call"), None);
    t.open_round(TABLE, 5, &plan(1, 300))
        .await
        .expect("ledger call");
    let p = player(t, "Erin", 1_000).await;
    let b = bet(&p, 1, "b1", 100, None);
    t.place_bet(&b).await.expect("ledger call");

    // A new leader takes over: the deposed one can neither finish nor void.
    t.claim_term(TABLE, 6).await.expect("ledger call");
    assert_err(
        t.finish_round(TABLE, 5, 1, &reveal(1, 300), T0, &[won(&b, 200)])
            .await,
        &Error::Fenced {
            stale: 5,
            current: 6,
        },
        "finish_round, stale term",
    );
    assert_err(
        t.void_round(TABLE, 5, 1, &reveal(1, 300), T0).await,
        &Error::Fenced {
            stale: 5,
            current: 6,
        },
        "void_round, stale term",
    );
    assert_err(
        t.open_round(TABLE, 5, &plan(2, 300)).await,
        &Error::Fenced {
            stale: 5,
            current: 6,
        },
        "open_round, deposed",
    );
    // Its payouts (auto-cash-outs, a void's honoured cash-outs) are leader writes too.
    assert_err(
        t.settle_leader_cash_out(TABLE, 5, &cash_out(&b, 150), T0)
            .await,
        &Error::Fenced {
            stale: 5,
            current: 6,
        },
        "settle_leader_cash_out, stale term",
    );
    let r = t
        .round(TABLE, 1)
        .await
        .expect("ledger call")
        .expect("round 1");
    assert_eq!((r.status.as_str(), r.term), ("open", 5));
    assert_eq!(
        t.bet(&b.bet_id)
            .await
            .expect("ledger call")
            .expect("stored")
            .status,
        BetStatus::Open
    );
    assert_eq!(balance(&t.ledger, &p.id).await, 900);

    // The new leader finishes the round it inherited.
    let changed = t
        .finish_round(TABLE, 6, 1, &reveal(1, 300), T0 + 90_000, &[won(&b, 200)])
        .await
        .expect("ledger call");
    assert_eq!(changed, vec![(p.id.clone(), 1_100)]);
    assert_eq!(
        t.round(TABLE, 1)
            .await
            .expect("ledger call")
            .expect("stored")
            .status,
        RoundStatus::Crashed
    );
    assert_balanced(t).await;
}

async fn open_round_refuses_a_reused_number(t: &Ctx) {
    open(t, 1, 250).await;
    assert!(
        t.open_round(TABLE, 1, &plan(1, 999)).await.is_err(),
        "[{}] round 1 opened twice",
        t.backend
    );
    finish(t, 1, 250, &[]).await;
    assert!(
        t.open_round(TABLE, 1, &plan(1, 999)).await.is_err(),
        "[{}] finished round 1 reopened",
        t.backend
    );
    let r = t
        .round(TABLE, 1)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!((r.status.as_str(), r.crash_x100), ("crashed", 250));
    // A reused number with a newer term is refused too: numbers never come back.
    t.claim_term(TABLE, 2).await.expect("ledger call");
    assert!(t.open_round(TABLE, 2, &plan(1, 999)).await.is_err());
    t.open_round(TABLE, 2, &plan(2, 400))
        .await
        .expect("ledger call");
    let last = t
        .last_round(TABLE)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!(
        (last.number, last.status.as_str(), last.term),
        (2, "open", 2)
    );
    // An open round's secrets are not at rest: neither the ledger's answer nor the raw row holds
    // them (anyone reading the database during the betting window would know the outcome).
    assert_eq!((last.hash.as_str(), last.crash_x100), ("", 0));
    assert_eq!(
        t.raw(&format!(
            "UPDATE rounds SET bets = bets WHERE table_id = '{TABLE}' AND status = 'open' \
             AND (hash IS NOT NULL OR crash_x100 IS NOT NULL)"
        ))
        .await,
        0,
        "[{}] an open round's hash or crash point is stored",
        t.backend
    );
    // The settled round carries both, as revealed.
    assert_eq!(
        t.raw(&format!(
            "UPDATE rounds SET bets = bets WHERE table_id = '{TABLE}' AND number = 1 \
             AND hash = '{}' AND crash_x100 = 250",
            reveal(1, 250).hash
        ))
        .await,
        1,
        "[{}] the settled round lost its reveal",
        t.backend
    );
    assert_eq!(last.opened_at_ms, plan(2, 400).opened_at_ms);
    assert_eq!(last.started_at_ms, plan(2, 400).started_at_ms);
    let open_rounds = t.open_rounds(TABLE).await.expect("ledger call");
    assert_eq!(
        open_rounds.iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(t.open_rounds("other").await.expect("ledger call"), vec![]);
    assert_balanced(t).await;
}

async fn place_bet_debits_once(t: &Ctx) {
    let p = player(t, "Frank", 1_000).await;
    // No such round.
    assert_err(
        t.place_bet(&bet(&p, 1, "early", 100, None)).await,
        &Error::BettingClosed,
        "bet on a round that does not exist",
    );
    open(t, 1, 500).await;
    let first = bet(&p, 1, "k1", 300, Some(250));
    let (stored, bal) = t.place_bet(&first).await.expect("ledger call");
    assert_eq!(bal, 700);
    assert_eq!(stored.bet_id, first.bet_id);
    assert_eq!(stored.status, BetStatus::Open);
    let read = t
        .bet(&first.bet_id)
        .await
        .expect("ledger call")
        .expect("stored bet");
    assert_eq!(read, first);
    assert_eq!(
        t.bet_by_key(&p.id, "k1").await.expect("ledger call"),
        Some(first.clone())
    );
    assert_eq!(t.bet_by_key(&p.id, "k2").await.expect("ledger call"), None);

    // A retry (same player, same key) with a new bet id gets the first bet; nothing moves.
    let retry = bet(&p, 1, "k1", 300, Some(250));
    let (again, bal) = t.place_bet(&retry).await.expect("ledger call");
    assert_eq!(again.bet_id, first.bet_id);
    assert_eq!(bal, 700);
    assert_eq!(t.bet(&retry.bet_id).await.expect("ledger call"), None);

    assert_err(
        t.place_bet(&bet(&p, 1, "k2", 701, None)).await,
        &Error::InsufficientFunds,
        "stake above the balance",
    );
    assert_eq!(balance(&t.ledger, &p.id).await, 700);
    let (_, bal) = t
        .place_bet(&bet(&p, 1, "k3", 700, None))
        .await
        .expect("ledger call");
    assert_eq!(bal, 0, "a stake equal to the balance is accepted");
    assert_eq!(t.round_bets(TABLE, 1).await.expect("ledger call").len(), 2);

    // Another player may use the same key.
    let q = player(t, "Grace", 100).await;
    t.place_bet(&bet(&q, 1, "k1", 100, None))
        .await
        .expect("ledger call");

    finish(t, 1, 500, &[]).await;
    let r = player(t, "Heidi", 1_000).await;
    assert_err(
        t.place_bet(&bet(&r, 1, "late", 100, None)).await,
        &Error::BettingClosed,
        "bet on a finished round",
    );
    assert_eq!(balance(&t.ledger, &r.id).await, 1_000);
    assert_eq!(t.round_bets(TABLE, 1).await.expect("ledger call").len(), 3);
    let a = assert_balanced(t).await;
    assert_eq!((a.bets, a.stakes, a.payouts), (3, 1_100, 0));
}

async fn settle_cash_out_pays_once(t: &Ctx) {
    let p = player(t, "Ivan", 1_000).await;
    open(t, 1, 400).await;
    let b = bet(&p, 1, "k1", 100, None);
    t.place_bet(&b).await.expect("ledger call");
    let c = cash_out(&b, 250);
    assert_eq!(
        t.settle_cash_out(&c, Some("co-1"), c.at_ms)
            .await
            .expect("ledger call"),
        Some(1_150)
    );
    // A retry, or the crash settlement reaching the same bet, pays nothing more.
    assert_eq!(
        t.settle_cash_out(&c, Some("co-1"), c.at_ms)
            .await
            .expect("ledger call"),
        None
    );
    assert_eq!(
        t.settle_cash_out(&cash_out(&b, 300), Some("co-2"), c.at_ms)
            .await
            .expect("ledger call"),
        None
    );
    let stored = t
        .bet(&b.bet_id)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!(stored.status, BetStatus::Won);
    assert_eq!(stored.cashout_x100, Some(250));
    assert_eq!(stored.payout, Some(250));
    assert_eq!(stored.cashout_key.as_deref(), Some("co-1"));

    let changed = finish(t, 1, 400, &[won(&b, 250)]).await;
    assert_eq!(
        changed,
        vec![],
        "the settlement must not pay a won bet again"
    );
    assert_eq!(balance(&t.ledger, &p.id).await, 1_150);
    assert_eq!(
        t.bet(&b.bet_id)
            .await
            .expect("ledger call")
            .expect("stored")
            .status,
        BetStatus::Won
    );
    let a = assert_balanced(t).await;
    assert_eq!((a.stakes, a.payouts, a.house_result), (100, 250, -150));
}

async fn finish_round_settles_exactly_once(t: &Ctx) {
    let a = player(t, "Judy", 1_000).await;
    let b = player(t, "Ken", 1_000).await;
    let c = player(t, "Leo", 1_000).await;
    open(t, 1, 200).await;
    let ba = bet(&a, 1, "a", 100, Some(150));
    let bb = bet(&b, 1, "b", 200, Some(300));
    let bc = bet(&c, 1, "c", 300, None);
    for x in [&ba, &bb, &bc] {
        t.place_bet(x).await.expect("ledger call");
    }
    // `bc` has no settlement entry: every bet still open is lost.
    let settlements = [won(&ba, 150), lost(&bb)];
    let crashed_at = T0 + 99_000;
    let changed = t
        .finish_round(TABLE, 1, 1, &reveal(1, 200), crashed_at, &settlements)
        .await
        .expect("ledger call");
    assert_eq!(changed, vec![(a.id.clone(), 1_050)]);
    let r = t
        .round(TABLE, 1)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!(
        (r.status.as_str(), r.crashed_at_ms),
        ("crashed", Some(crashed_at))
    );
    let got = |id: &str| {
        let id = id.to_string();
        async move { t.bet(&id).await.expect("ledger call").expect("stored") }
    };
    let (sa, sb, sc) = (
        got(&ba.bet_id).await,
        got(&bb.bet_id).await,
        got(&bc.bet_id).await,
    );
    assert_eq!(
        (sa.status.as_str(), sa.cashout_x100, sa.payout),
        ("won", Some(150), Some(150))
    );
    assert_eq!((sb.status.as_str(), sb.payout), ("lost", Some(0)));
    assert_eq!((sc.status.as_str(), sc.payout), ("lost", Some(0)));
    // The settlement commits to every bet of the round as settled, in the same transaction.
    use settlement::Outcome::{Lost, Won};
    let mut leaves = vec![
        leaf(&bc, Lost, None, 0),
        leaf(&ba, Won, Some(150), 150),
        leaf(&bb, Lost, None, 0),
    ];
    let expected = Settled::of(&settlement::settle(&mut leaves));
    assert_eq!(
        (expected.bets_count, expected.wagered, expected.paid),
        (3, 600, 150)
    );
    assert_eq!(r.settlement, Some(expected));

    // Again (a retrying leader, or another replica): a no-op.
    let again = t
        .finish_round(TABLE, 1, 1, &reveal(1, 200), crashed_at + 5, &settlements)
        .await
        .expect("ledger call");
    assert_eq!(again, vec![]);
    assert_eq!(
        t.void_round(TABLE, 1, 1, &reveal(1, 200), crashed_at)
            .await
            .expect("ledger call"),
        vec![]
    );
    assert_eq!(
        t.round(TABLE, 1)
            .await
            .expect("ledger call")
            .expect("stored")
            .crashed_at_ms,
        Some(crashed_at)
    );
    assert_eq!(balance(&t.ledger, &a.id).await, 1_050);
    assert_eq!(balance(&t.ledger, &b.id).await, 800);
    assert_eq!(balance(&t.ledger, &c.id).await, 700);
    // Finishing a round that never opened changes nothing either.
    assert_eq!(finish(t, 7, 200, &[]).await, vec![]);
    let audit = assert_balanced(t).await;
    assert_eq!(
        (audit.stakes, audit.payouts, audit.house_result),
        (600, 150, 450)
    );
}

async fn void_round_refunds_open_bets_only(t: &Ctx) {
    let a = player(t, "Mallory", 1_000).await;
    let b = player(t, "Niaj", 1_000).await;
    open(t, 1, 500).await;
    let ba = bet(&a, 1, "a", 100, None);
    let bb = bet(&b, 1, "b", 250, None);
    let bb2 = bet(&b, 1, "b2", 50, Some(400));
    for x in [&ba, &bb, &bb2] {
        t.place_bet(x).await.expect("ledger call");
    }
    t.settle_cash_out(&cash_out(&ba, 180), Some("co"), T0)
        .await
        .expect("ledger call")
        .expect("paid");
    assert_eq!(balance(&t.ledger, &a.id).await, 1_080);

    let mut changed = t
        .void_round(TABLE, 1, 1, &reveal(1, 500), T0 + 70_000)
        .await
        .expect("ledger call");
    changed.sort();
    assert_eq!(changed.len(), 2, "two open bets refunded: {changed:?}");
    assert!(changed.iter().all(|(id, _)| *id == b.id));
    assert_eq!(changed.iter().map(|c| c.1).max(), Some(1_000));
    assert_eq!(balance(&t.ledger, &b.id).await, 1_000);
    assert_eq!(
        balance(&t.ledger, &a.id).await,
        1_080,
        "the won bet stays won"
    );
    let sa = t
        .bet(&ba.bet_id)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!((sa.status.as_str(), sa.payout), ("won", Some(180)));
    for x in [&bb, &bb2] {
        let s = t
            .bet(&x.bet_id)
            .await
            .expect("ledger call")
            .expect("stored");
        assert_eq!((s.status.as_str(), s.payout), ("refunded", Some(x.stake)));
    }
    let r = t
        .round(TABLE, 1)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!(
        (r.status.as_str(), r.crashed_at_ms),
        ("voided", Some(T0 + 70_000))
    );
    assert!(r.public().is_some(), "a voided round is revealed");
    use settlement::Outcome::{Refunded, Won};
    let mut leaves = vec![
        leaf(&ba, Won, Some(180), 180),
        leaf(&bb, Refunded, None, 250),
        leaf(&bb2, Refunded, None, 50),
    ];
    let expected = Settled::of(&settlement::settle(&mut leaves));
    assert_eq!((expected.wagered, expected.paid), (400, 480));
    assert_eq!(
        r.settlement,
        Some(expected),
        "a voided round is committed to as well"
    );

    // Voided once: voiding or finishing again moves nothing; betting is closed.
    assert_eq!(
        t.void_round(TABLE, 1, 1, &reveal(1, 500), T0)
            .await
            .expect("ledger call"),
        vec![]
    );
    assert_eq!(finish(t, 1, 500, &[won(&bb, 200)]).await, vec![]);
    assert_err(
        t.place_bet(&bet(&a, 1, "late", 10, None)).await,
        &Error::BettingClosed,
        "bet on a voided round",
    );
    let s = t.stats(TABLE).await.expect("ledger call");
    assert_eq!(
        (
            s.rounds,
            s.voided_rounds,
            s.bets,
            s.wagered,
            s.paid_out,
            s.refunded
        ),
        (0, 1, 3, 400, 180, 300)
    );
    assert_eq!(s.house_result, -80);
    let audit = assert_balanced(t).await;
    assert_eq!(
        (audit.stakes, audit.payouts, audit.refunds),
        (400, 180, 300)
    );
}

async fn history_reads(t: &Ctx) {
    let a = player(t, "Olivia", 10_000).await;
    let b = player(t, "Peggy", 10_000).await;
    let idle = player(t, "Quinn", 10_000).await;
    // Round 1: a wins 2.00x, b loses. Round 2: b wins 3.00x. Round 3: voided. Round 4: still open.
    open(t, 1, 250).await;
    let a1 = bet(&a, 1, "a1", 1_000, Some(200));
    let b1 = bet(&b, 1, "b1", 500, None);
    t.place_bet(&a1).await.expect("ledger call");
    t.place_bet(&b1).await.expect("ledger call");
    finish(t, 1, 250, &[won(&a1, 200), lost(&b1)]).await;

    t.open_round(TABLE, 1, &plan(2, 1_000))
        .await
        .expect("ledger call");
    let a2 = bet(&a, 2, "a2", 100, None);
    let b2 = bet(&b, 2, "b2", 400, None);
    t.place_bet(&a2).await.expect("ledger call");
    t.place_bet(&b2).await.expect("ledger call");
    finish(t, 2, 1000, &[won(&b2, 300)]).await;

    t.open_round(TABLE, 1, &plan(3, 150))
        .await
        .expect("ledger call");
    let a3 = bet(&a, 3, "a3", 700, None);
    t.place_bet(&a3).await.expect("ledger call");
    t.void_round(TABLE, 1, 3, &reveal(3, 150), T0 + 200_000)
        .await
        .expect("ledger call");

    t.open_round(TABLE, 1, &plan(4, 5_000))
        .await
        .expect("ledger call");
    let b4 = bet(&b, 4, "b4", 50, None);
    t.place_bet(&b4).await.expect("ledger call");

    let rounds = t.rounds(TABLE, 10).await.expect("ledger call");
    let view: Vec<(u64, &str)> = rounds
        .iter()
        .map(|r| (r.number, r.status.as_str()))
        .collect();
    assert_eq!(view, vec![(3, "voided"), (2, "crashed"), (1, "crashed")]);
    assert_eq!(rounds[1].crash_x100, 1_000);
    assert_eq!(
        t.rounds(TABLE, 2)
            .await
            .expect("ledger call")
            .iter()
            .map(|r| r.number)
            .collect::<Vec<_>>(),
        vec![3, 2]
    );
    assert_eq!(t.rounds("other", 10).await.expect("ledger call"), vec![]);
    let open4 = t
        .round(TABLE, 4)
        .await
        .expect("ledger call")
        .expect("stored");
    assert_eq!(open4.status, RoundStatus::Open);
    assert!(
        open4.public().is_none(),
        "an open round's secrets stay hidden"
    );
    assert_eq!(t.round(TABLE, 99).await.expect("ledger call"), None);

    let r1 = t.round_bets(TABLE, 1).await.expect("ledger call");
    assert_eq!(r1.len(), 2);
    let by_id = |id: &str| {
        r1.iter()
            .find(|x| x.bet_id == id)
            .cloned()
            .expect("in round_bets")
    };
    assert_eq!(
        (by_id(&a1.bet_id).status.as_str(), by_id(&a1.bet_id).payout),
        ("won", Some(2_000))
    );
    assert_eq!(by_id(&b1.bet_id).username, "Peggy");
    assert_eq!(
        t.round_bets(TABLE, 4).await.expect("ledger call"),
        vec![b4.clone()]
    );

    // Newest first, limited.
    let pa = t.player_bets(&a.id, 10).await.expect("ledger call");
    assert_eq!(
        pa.iter().map(|x| x.bet_id.clone()).collect::<Vec<_>>(),
        vec![a3.bet_id.clone(), a2.bet_id.clone(), a1.bet_id.clone()]
    );
    assert_eq!(pa[0].status, BetStatus::Refunded);
    assert_eq!(t.player_bets(&a.id, 1).await.expect("ledger call").len(), 1);
    assert_eq!(
        t.player_bets(&idle.id, 10).await.expect("ledger call"),
        vec![]
    );

    // Profit counts stakes, payouts and refunds; players who never bet are not listed.
    // a: -1000 +2000 -100 -700 +700 = +900, wagered 1800, 3 bets.
    // b: -500 -400 +1200 -50 = +250, wagered 950, 3 bets.
    let board = t.leaderboard(10).await.expect("ledger call");
    let rows: Vec<(&str, i64, i64, i64)> = board
        .iter()
        .map(|r| (r.username.as_str(), r.profit, r.wagered, r.bets))
        .collect();
    assert_eq!(
        rows,
        vec![("Olivia", 900, 1_800, 3), ("Peggy", 250, 950, 3)]
    );
    assert_eq!(t.leaderboard(1).await.expect("ledger call").len(), 1);

    let s = t.stats(TABLE).await.expect("ledger call");
    assert_eq!(s.table, TABLE);
    assert_eq!((s.rounds, s.voided_rounds, s.bets, s.players), (2, 1, 6, 2));
    assert_eq!(
        (s.wagered, s.paid_out, s.refunded, s.house_result),
        (2_750, 3_200, 700, -1_150)
    );
    let empty = t.stats("other").await.expect("ledger call");
    assert_eq!((empty.rounds, empty.bets, empty.wagered), (0, 0, 0));

    let audit = assert_balanced(t).await;
    assert_eq!(
        (audit.players, audit.bets, audit.credits, audit.withdrawals),
        (3, 6, 30_000, 0)
    );
    assert_eq!(
        (
            audit.stakes,
            audit.payouts,
            audit.refunds,
            audit.house_result
        ),
        (2_750, 3_200, 700, -1_150)
    );
    assert_eq!(audit.player_balances, 30_000 + 1_150);
    t.ping().await.expect("ledger call");
}

async fn audit_detects_tampering(t: &Ctx) {
    let p = player(t, "Rupert", 1_000).await;
    open(t, 1, 300).await;
    let b = bet(&p, 1, "k", 100, None);
    t.place_bet(&b).await.expect("ledger call");
    finish(t, 1, 300, &[won(&b, 200)]).await;
    assert_balanced(t).await;

    // Money from nowhere: one unit more than the entries say.
    assert_eq!(t.raw("UPDATE players SET balance = balance + 1").await, 1);
    let a = t.audit().await.expect("ledger call");
    assert!(
        !a.balanced,
        "[{}] tampered balance passed: {a:#?}",
        t.backend
    );
    assert!(
        a.violations.iter().any(|v| v.starts_with("conservation")),
        "{:?}",
        a.violations
    );
    assert!(
        a.violations
            .iter()
            .any(|v| v.contains("balance differs from the sum of their entries")),
        "{:?}",
        a.violations
    );
    assert_eq!(t.raw("UPDATE players SET balance = balance - 1").await, 1);
    assert_balanced(t).await;

    // A bet marked as paid more than its payout entry.
    assert_eq!(
        t.raw("UPDATE bets SET payout = payout + 5 WHERE status = 'won'")
            .await,
        1
    );
    let a = t.audit().await.expect("ledger call");
    assert!(!a.balanced);
    assert!(
        a.violations
            .iter()
            .any(|v| v.contains("won bet without exactly one payout entry")),
        "{:?}",
        a.violations
    );
}

// --- concurrency: three replicas on one database -----------------------------------------------

/// Three `SqlLedger`s on one database, as three fleet replicas would be. On PostgreSQL they connect
/// (and run the migrations) at once, as pods starting together do; SQLite is single-node, so its
/// instances connect one after the other.
async fn replicas(t: &Ctx) -> Vec<Arc<dyn Ledger>> {
    let ledgers: Vec<SqlLedger> = if t.backend == "postgres" {
        futures_util::future::join_all((0..3).map(|_| t.replica())).await
    } else {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(t.replica().await);
        }
        v
    };
    ledgers
        .into_iter()
        .map(|l| Arc::new(l) as Arc<dyn Ledger>)
        .collect()
}

async fn concurrent_bets_never_overdraw(t: &Ctx) {
    const STAKE: i64 = 100;
    const COVERED: usize = 12;
    const ATTEMPTS_PER_REPLICA: usize = 15;
    let p = player(t, "Sybil", STAKE * COVERED as i64).await;
    open(t, 1, 300).await;
    let replicas = replicas(t).await;

    let mut tasks = Vec::new();
    for (r, ledger) in replicas.iter().enumerate() {
        for n in 0..ATTEMPTS_PER_REPLICA {
            let ledger = ledger.clone();
            let b = bet(&p, 1, &format!("r{r}-{n}"), STAKE, None);
            tasks.push(tokio::spawn(async move { ledger.place_bet(&b).await }));
        }
    }
    let (mut ok, mut insufficient) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok((_, bal)) => {
                assert!(bal >= 0, "negative balance {bal}");
                ok += 1;
            }
            Err(Error::InsufficientFunds) => insufficient += 1,
            Err(e) => panic!(
                "[{}] unexpected error from a concurrent bet: {e:?}",
                t.backend
            ),
        }
    }
    assert_eq!(ok, COVERED, "[{}] accepted bets", t.backend);
    assert_eq!(insufficient, 3 * ATTEMPTS_PER_REPLICA - COVERED);
    assert_eq!(balance(&t.ledger, &p.id).await, 0);
    assert_eq!(
        t.round_bets(TABLE, 1).await.expect("ledger call").len(),
        COVERED
    );
    let a = assert_balanced(t).await;
    assert_eq!((a.bets, a.stakes), (COVERED as i64, STAKE * COVERED as i64));
    for r in &replicas {
        assert_eq!(r.audit().await.expect("ledger call").player_balances, 0);
    }
}

async fn concurrent_retries_of_one_bet_debit_once(t: &Ctx) {
    let p = player(t, "Trent", 1_000).await;
    open(t, 1, 300).await;
    let replicas = replicas(t).await;
    let mut tasks = Vec::new();
    for ledger in &replicas {
        for _ in 0..4 {
            let ledger = ledger.clone();
            // Each retry carries its own bet id, as separate requests would.
            let b = bet(&p, 1, "the-key", 250, None);
            tasks.push(tokio::spawn(async move { ledger.place_bet(&b).await }));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (stored, _) = task
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("[{}] a retry failed: {e:?}", t.backend));
        ids.insert(stored.bet_id);
    }
    assert_eq!(
        ids.len(),
        1,
        "[{}] every retry answers with one bet",
        t.backend
    );
    assert_eq!(balance(&t.ledger, &p.id).await, 750);
    assert_eq!(t.round_bets(TABLE, 1).await.expect("ledger call").len(), 1);
    assert_balanced(t).await;
}

/// A burst of concurrent bets and cash-outs on one ledger, as a busy node sends them (on SQLite
/// they share group commits, each in its own savepoint): refused ones (round closed, insufficient
/// funds), retries of one key and second cash-outs must each get their own answer and leave no
/// trace, while the rest commit exactly once.
async fn a_burst_of_mixed_writes_answers_each_alone(t: &Ctx) {
    const STAKE: i64 = 100;
    open(t, 1, 500).await;
    let mut bettors = Vec::new();
    let mut cashers = Vec::new();
    for k in 0..10 {
        // Three stakes each, for five fresh keys and one key retried three times.
        bettors.push(player(t, &format!("Bettor{k}"), 3 * STAKE).await);
        let c = player(t, &format!("Casher{k}"), STAKE).await;
        let b = bet(&c, 1, "early", STAKE, None);
        t.place_bet(&b).await.expect("an early bet");
        cashers.push(b);
    }
    let mut bets = Vec::new();
    for p in &bettors {
        for n in 0..5 {
            bets.push(("fresh", bet(p, 1, &format!("k{n}"), STAKE, None)));
        }
        for _ in 0..3 {
            bets.push(("retry", bet(p, 1, "again", STAKE, None)));
        }
        bets.push(("closed", bet(p, 2, "closed", STAKE, None)));
    }
    let placing = futures_util::future::join_all(
        bets.iter()
            .map(|(what, b)| async move { (*what, b.player_id.clone(), t.place_bet(b).await) }),
    );
    let cashing = futures_util::future::join_all(cashers.iter().flat_map(|b| {
        (0..2).map(move |_| async move {
            let c = cash_out(b, 200);
            (
                b.player_id.clone(),
                t.settle_cash_out(&c, Some("co"), c.at_ms).await,
            )
        })
    }));
    let (placed, cashed) = tokio::join!(placing, cashing);

    let mut accepted: std::collections::HashMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut retries: std::collections::HashMap<String, Vec<Option<String>>> = Default::default();
    for (what, player_id, r) in placed {
        match (what, r) {
            ("closed", r) => assert_err(r, &Error::BettingClosed, "a bet on a round not open"),
            (_, Ok((stored, balance))) => {
                assert!(balance >= 0, "[{}] negative balance {balance}", t.backend);
                accepted
                    .entry(player_id.clone())
                    .or_default()
                    .insert(stored.bet_id.clone());
                if what == "retry" {
                    retries
                        .entry(player_id)
                        .or_default()
                        .push(Some(stored.bet_id));
                }
            }
            (_, Err(Error::InsufficientFunds)) => {
                if what == "retry" {
                    retries.entry(player_id).or_default().push(None);
                }
            }
            (_, Err(e)) => panic!("[{}] unexpected answer in a burst: {e:?}", t.backend),
        }
    }
    for p in &bettors {
        let ids = accepted.get(&p.id).map_or(0, |s| s.len());
        assert_eq!(
            ids, 3,
            "[{}] {} placed {ids} bets with 3 stakes",
            t.backend, p.username
        );
        assert_eq!(balance(&t.ledger, &p.id).await, 0);
        // Retries of one key: all the same bet, or all refused (the funds were gone first).
        let r = &retries[&p.id];
        assert_eq!(r.len(), 3);
        assert!(
            r.iter().all(|x| x == &r[0]),
            "[{}] retries answered {r:?}",
            t.backend
        );
    }
    let mut paid: std::collections::HashMap<String, usize> = Default::default();
    for (player_id, r) in cashed {
        // One of the two cash-outs pays; the other finds the bet settled (`None`).
        if let Some(balance) = r.expect("a cash-out in the burst") {
            assert_eq!(
                balance, 200,
                "[{}] the casher's balance after 2.00x",
                t.backend
            );
            *paid.entry(player_id).or_default() += 1;
        }
    }
    assert_eq!(paid.len(), 10, "[{}] every early bet paid", t.backend);
    assert!(
        paid.values().all(|&n| n == 1),
        "[{}] a bet paid twice: {paid:?}",
        t.backend
    );
    assert_eq!(t.round_bets(TABLE, 1).await.expect("ledger call").len(), 40);
    let a = assert_balanced(t).await;
    assert_eq!((a.bets, a.stakes, a.payouts), (40, 40 * STAKE, 10 * 200));
}

async fn concurrent_finish_round_settles_once(t: &Ctx) {
    let replicas = replicas(t).await;
    let players = [
        player(t, "Uma", 1_000).await,
        player(t, "Victor", 1_000).await,
        player(t, "Walter", 1_000).await,
        player(t, "Xena", 1_000).await,
    ];
    open(t, 1, 400).await;
    let mut bets = Vec::new();
    for (i, p) in players.iter().enumerate() {
        let b = bet(p, 1, "k", 100 * (i as i64 + 1), None);
        t.place_bet(&b).await.expect("ledger call");
        bets.push(b);
    }
    // Two winners, two losers.
    let settlements = vec![
        won(&bets[0], 150),
        won(&bets[1], 399),
        lost(&bets[2]),
        lost(&bets[3]),
    ];
    let settlements = Arc::new(settlements);
    let mut tasks = Vec::new();
    // Two replicas, each twice (a leader retrying while a deposed-but-same-term one races it).
    for ledger in replicas.iter().take(2).chain(replicas.iter().take(2)) {
        let ledger = ledger.clone();
        let s = settlements.clone();
        tasks.push(tokio::spawn(async move {
            ledger
                .finish_round(TABLE, 1, 1, &reveal(1, 400), T0 + 99_000, &s)
                .await
        }));
    }
    let mut paid = Vec::new();
    let mut winners_calls = 0;
    for task in tasks {
        let changed = task
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("[{}] finish_round failed: {e:?}", t.backend));
        if !changed.is_empty() {
            winners_calls += 1;
        }
        paid.extend(changed);
    }
    assert_eq!(winners_calls, 1, "[{}] exactly one call settles", t.backend);
    paid.sort();
    let mut want = vec![
        (players[0].id.clone(), 1_050),
        (players[1].id.clone(), 1_000 - 200 + 798),
    ];
    want.sort();
    assert_eq!(paid, want);
    assert_eq!(balance(&t.ledger, &players[2].id).await, 700);
    assert_eq!(balance(&t.ledger, &players[3].id).await, 600);
    let a = assert_balanced(t).await;
    assert_eq!((a.stakes, a.payouts), (1_000, 150 + 798));
}

/// A new leader voids an interrupted round while other replicas are still paying cash-outs the
/// arbiter decided: every bet ends either won or refunded, never both.
async fn concurrent_void_and_cash_outs_pay_each_bet_once(t: &Ctx) {
    settle_during_cash_outs(t, true).await;
}

/// The leader finishes a round (its settlement lists every decided cash-out as won) while other
/// replicas are still paying those cash-outs: each bet is paid once, whoever gets there first.
async fn concurrent_finish_and_cash_outs_pay_each_bet_once(t: &Ctx) {
    settle_during_cash_outs(t, false).await;
}

/// One player with many bets in a round (so a settlement holds the player's row across bets),
/// every bet cashed out at 2.00x through two replicas, the round voided or finished through a third.
async fn settle_during_cash_outs(t: &Ctx, void: bool) {
    const BETS: usize = 40;
    let replicas = replicas(t).await;
    let p = player(t, "Yvonne", 100 * BETS as i64).await;
    open(t, 1, 500).await;
    let mut bets = Vec::new();
    for n in 0..BETS {
        let b = bet(&p, 1, &format!("k{n}"), 100, None);
        t.place_bet(&b).await.expect("ledger call");
        bets.push(b);
    }
    let settlements: Vec<Settlement> = bets.iter().map(|b| won(b, 200)).collect();
    let mut settlements = Some(settlements);
    let mut tasks = Vec::new();
    for (n, b) in bets.iter().enumerate() {
        let ledger = replicas[1 + n % 2].clone();
        let c = cash_out(b, 200);
        tasks.push(tokio::spawn(async move {
            ledger
                .settle_cash_out(&c, Some("co"), c.at_ms)
                .await
                .map(|_| ())
        }));
        if n == BETS / 3 {
            let ledger = replicas[0].clone();
            let s = settlements.take().unwrap_or_default();
            tasks.push(tokio::spawn(async move {
                if void {
                    ledger
                        .void_round(TABLE, 1, 1, &reveal(1, 500), T0 + 90_000)
                        .await
                        .map(|_| ())
                } else {
                    ledger
                        .finish_round(TABLE, 1, 1, &reveal(1, 500), T0 + 90_000, &s)
                        .await
                        .map(|_| ())
                }
            }));
        }
    }
    for task in tasks {
        task.await
            .expect("task")
            .unwrap_or_else(|e| panic!("[{}] {e:?}", t.backend));
    }
    let settled = t.round_bets(TABLE, 1).await.expect("ledger call");
    let won = settled
        .iter()
        .filter(|b| b.status == BetStatus::Won)
        .count();
    let refunded = settled
        .iter()
        .filter(|b| b.status == BetStatus::Refunded)
        .count();
    assert_eq!(won + refunded, BETS, "{settled:#?}");
    if !void {
        assert_eq!(won, BETS);
    }
    assert_eq!(
        balance(&t.ledger, &p.id).await,
        200 * won as i64 + 100 * refunded as i64,
        "[{}] {won} won, {refunded} refunded",
        t.backend
    );
    let status = if void {
        RoundStatus::Voided
    } else {
        RoundStatus::Crashed
    };
    assert_eq!(
        t.round(TABLE, 1)
            .await
            .expect("ledger call")
            .expect("stored")
            .status,
        status
    );
    assert_balanced(t).await;
}

/// Replicas claiming terms at once on a table that has none yet: the newest term always wins,
/// and a claim is refused only in favour of a newer one.
async fn concurrent_claims_keep_the_newest_term(t: &Ctx) {
    let replicas = replicas(t).await;
    for (round, table) in ["fresh-a", "fresh-b", "fresh-c", "fresh-d"]
        .iter()
        .enumerate()
    {
        let mut tasks = Vec::new();
        for term in 1..=6u64 {
            let ledger = replicas[term as usize % 3].clone();
            tasks.push(tokio::spawn(async move {
                (term, ledger.claim_term(table, term).await)
            }));
        }
        for task in tasks {
            match task.await.expect("task") {
                (_, Ok(())) => {}
                (stale, Err(Error::Fenced { stale: s, current })) => {
                    assert_eq!(s, stale);
                    assert!(
                        current > stale,
                        "[{}] attempt {round}: term {stale} refused for older term {current}",
                        t.backend
                    );
                }
                (term, Err(e)) => panic!("[{}] claim {term}: {e:?}", t.backend),
            }
        }
        assert_eq!(
            t.current_term(table).await.expect("ledger call"),
            6,
            "[{}] the newest term must win",
            t.backend
        );
    }
}

/// The same credit retried at once through several replicas moves money once, and every retry
/// gets the balance back (an idempotency conflict is for a *different* request under the key).
async fn concurrent_adjust_retries_move_money_once(t: &Ctx) {
    let replicas = replicas(t).await;
    let p = player(t, "Zed", 1_000).await;
    for (n, amount) in [(0, 500), (1, -300), (2, 250)] {
        let key = format!("retry-{n}");
        let mut tasks = Vec::new();
        for r in 0..9 {
            let ledger = replicas[r % 3].clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                ledger.adjust("Zed", amount, &key, T0).await
            }));
        }
        let mut balances = std::collections::BTreeSet::new();
        for task in tasks {
            balances.insert(
                task.await
                    .expect("task")
                    .unwrap_or_else(|e| panic!("[{}] retry of {key}: {e:?}", t.backend)),
            );
        }
        assert_eq!(balances.len(), 1, "[{}] {balances:?}", t.backend);
    }
    assert_eq!(balance(&t.ledger, &p.id).await, 1_000 + 500 - 300 + 250);
    assert_balanced(t).await;
}

// --- property: any sequence of money operations keeps the audit exact --------------------------

/// One step of a random ledger history. Indices pick among the players and bets made so far.
#[derive(Debug, Clone)]
enum Op {
    Register {
        credit: i64,
    },
    Adjust {
        player: usize,
        amount: i64,
    },
    Open {
        crash_x100: u64,
    },
    Bet {
        player: usize,
        stake: i64,
        auto: Option<u64>,
    },
    CashOut {
        bet: usize,
        multiplier_x100: u64,
    },
    Crash,
    Void,
    /// Repeats the previous money-moving call with the same idempotency key.
    Retry,
}

fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        2 => (0i64..5_000).prop_map(|credit| Op::Register { credit }),
        2 => (0usize..8, -3_000i64..3_000).prop_map(|(player, amount)| Op::Adjust { player, amount }),
        2 => (100u64..900).prop_map(|crash_x100| Op::Open { crash_x100 }),
        6 => (0usize..8, 1i64..2_500, proptest::option::of(101u64..600))
            .prop_map(|(player, stake, auto)| Op::Bet { player, stake, auto }),
        3 => (0usize..16, 101u64..800).prop_map(|(bet, multiplier_x100)| Op::CashOut { bet, multiplier_x100 }),
        2 => Just(Op::Crash),
        1 => Just(Op::Void),
        2 => Just(Op::Retry),
    ]
}

/// What the model expects of a bet.
#[derive(Debug, Clone)]
struct ModelBet {
    record: BetRecord,
    open: bool,
}

/// The last money-moving call, for `Op::Retry`.
#[derive(Debug, Clone)]
enum Last {
    Adjust {
        username: String,
        amount: i64,
        key: String,
    },
    Bet(BetRecord),
    CashOut(CashOut, String),
}

/// Runs `ops` against the ledger and a plain model of the money, checking after every step that
/// the ledger did what the model says (accepted or refused, same balances) and that the
/// conservation audit is exact. Each case plays on a table and players of its own.
async fn run_ops(t: &Ctx, case: u64, ops: &[Op]) -> Result<(), String> {
    let table = format!("prop{case}");
    let mut players: Vec<(PlayerRecord, i64)> = Vec::new();
    let mut bets: Vec<ModelBet> = Vec::new();
    // The open round and its crash point (fixed when it opens, as the chain fixes it).
    let mut round: Option<(u64, u64)> = None;
    let mut last_round = 0u64;
    let mut last: Option<Last> = None;
    let mut keys = 0u64;
    t.claim_term(&table, 1).await.map_err(|e| e.to_string())?;
    for (step, op) in ops.iter().enumerate() {
        let at = T0 + step as i64 * 100;
        match op.clone() {
            Op::Register { credit } => {
                let name = format!("p{case}_{}", players.len());
                let p = t
                    .register(&name, "h", credit, at)
                    .await
                    .map_err(|e| format!("{step}: {e}"))?;
                players.push((p, credit));
            }
            Op::Adjust { player, amount } if !players.is_empty() && amount != 0 => {
                let i = player % players.len();
                keys += 1;
                let key = format!("adj{keys}");
                let username = players[i].0.username.clone();
                let r = t.adjust(&username, amount, &key, at).await;
                let want = players[i].1 + amount;
                match r {
                    Ok(bal) if want >= 0 && bal == want => {
                        players[i].1 = want;
                        last = Some(Last::Adjust {
                            username,
                            amount,
                            key,
                        });
                    }
                    Err(Error::InsufficientFunds) if want < 0 => {}
                    other => {
                        return Err(format!(
                            "{step}: adjust {amount} on {}: {other:?}",
                            players[i].1
                        ));
                    }
                }
            }
            Op::Open { crash_x100 } if round.is_none() => {
                last_round += 1;
                t.open_round(&table, 1, &plan(last_round, crash_x100))
                    .await
                    .map_err(|e| format!("{step}: open: {e}"))?;
                round = Some((last_round, crash_x100));
            }
            Op::Bet {
                player,
                stake,
                auto,
            } if !players.is_empty() => {
                let i = player % players.len();
                keys += 1;
                let number = round.map_or(last_round + 1, |(n, _)| n);
                let mut b = bet(&players[i].0, number, &format!("bet{keys}"), stake, auto);
                b.table = table.clone();
                let r = t.place_bet(&b).await;
                match (r, round) {
                    (Ok((_, bal)), Some(_))
                        if stake <= players[i].1 && bal == players[i].1 - stake =>
                    {
                        players[i].1 = bal;
                        bets.push(ModelBet {
                            record: b.clone(),
                            open: true,
                        });
                        last = Some(Last::Bet(b));
                    }
                    (Err(Error::InsufficientFunds), Some(_)) if stake > players[i].1 => {}
                    (Err(Error::BettingClosed), None) => {}
                    (other, r) => {
                        return Err(format!(
                            "{step}: bet {stake} on {} (round {r:?}): {other:?}",
                            players[i].1
                        ));
                    }
                }
            }
            Op::CashOut {
                bet: j,
                multiplier_x100,
            } if !bets.is_empty() => {
                let j = j % bets.len();
                // The arbiter decides before the ledger pays: only a cash-out below the crash
                // point (and not past an auto target, which would have paid first) reaches it.
                let crash = match round {
                    Some((n, c)) if n == bets[j].record.round => c,
                    _ => u64::MAX,
                };
                if multiplier_x100 >= crash
                    || bets[j]
                        .record
                        .auto_cashout_x100
                        .is_some_and(|a| a <= multiplier_x100)
                {
                    continue;
                }
                let c = cash_out(&bets[j].record, multiplier_x100);
                keys += 1;
                let key = format!("co{keys}");
                let r = t
                    .settle_cash_out(&c, Some(&key), at)
                    .await
                    .map_err(|e| format!("{step}: {e}"))?;
                let i = players
                    .iter()
                    .position(|(p, _)| p.id == c.player_id)
                    .ok_or("unknown player")?;
                match r {
                    Some(bal) if bets[j].open && bal == players[i].1 + c.payout => {
                        players[i].1 = bal;
                        bets[j].open = false;
                        last = Some(Last::CashOut(c, key));
                    }
                    None if !bets[j].open => {}
                    other => return Err(format!("{step}: cash-out of {:?}: {other:?}", bets[j])),
                }
            }
            Op::Crash => {
                let Some((n, crash_x100)) = round.take() else {
                    continue;
                };
                let mut settlements = Vec::new();
                for b in bets.iter_mut().filter(|b| b.open && b.record.round == n) {
                    b.open = false;
                    match b.record.auto_cashout_x100 {
                        Some(a) if a <= crash_x100 => {
                            settlements.push(won(&b.record, a));
                            let i = players
                                .iter()
                                .position(|(p, _)| p.id == b.record.player_id)
                                .ok_or("player")?;
                            players[i].1 += payout(b.record.stake, a, rules().max_payout);
                        }
                        _ => settlements.push(lost(&b.record)),
                    }
                }
                t.finish_round(&table, 1, n, &reveal(n, crash_x100), at, &settlements)
                    .await
                    .map_err(|e| format!("{step}: finish: {e}"))?;
            }
            Op::Void => {
                let Some((n, crash_x100)) = round.take() else {
                    continue;
                };
                for b in bets.iter_mut().filter(|b| b.open && b.record.round == n) {
                    b.open = false;
                    let i = players
                        .iter()
                        .position(|(p, _)| p.id == b.record.player_id)
                        .ok_or("player")?;
                    players[i].1 += b.record.stake;
                }
                t.void_round(&table, 1, n, &reveal(n, crash_x100), at)
                    .await
                    .map_err(|e| format!("{step}: void: {e}"))?;
            }
            Op::Retry => match last.clone() {
                // Every retry must move nothing: same key, same request.
                Some(Last::Adjust {
                    username,
                    amount,
                    key,
                }) => {
                    let _ = t.adjust(&username, amount, &key, at).await;
                }
                Some(Last::Bet(b)) => {
                    let mut again = b.clone();
                    again.bet_id = uuid::Uuid::new_v4().to_string();
                    let _ = t.place_bet(&again).await;
                }
                Some(Last::CashOut(c, key)) => {
                    let _ = t.settle_cash_out(&c, Some(&key), at).await;
                }
                None => {}
            },
            _ => {}
        }
        for (p, want) in &players {
            let got = balance(&t.ledger, &p.id).await;
            if got != *want {
                return Err(format!(
                    "after step {step} ({op:?}): {} has {got}, the model {want}",
                    p.username
                ));
            }
        }
        let a = t.audit().await.map_err(|e| e.to_string())?;
        if !a.balanced
            || !a.violations.is_empty()
            || a.player_balances + a.house_result != a.credits - a.withdrawals
        {
            return Err(format!("after step {step} ({op:?}): audit {a:#?}"));
        }
    }
    Ok(())
}

/// A fresh database of `t`'s backend for one case (so a failing case cannot spill into the next,
/// and proptest's shrinking sees each case alone).
async fn fresh(t: &Ctx) -> Ctx {
    if t.backend == "sqlite" {
        Ctx::sqlite().await
    } else {
        Ctx::postgres("prop").await.expect("postgres is configured")
    }
}

async fn random_histories_keep_the_audit_exact(t: &Ctx) {
    use proptest::test_runner::{Config, TestRunner};
    // Fewer cases on PostgreSQL (each step is several round trips); override with PROPTEST_CASES.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if t.backend == "sqlite" { 48 } else { 24 });
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU64::new(0);
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..40), |ops| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let c = fresh(t).await;
                let r = run_ops(&c, n, &ops).await;
                c.finish().await;
                r
            })
        })
        .map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("[{}] {e}", t.backend);
    }
}
