//! Whole round timelines under paused tokio time: the real round leader (`runner`), the real
//! in-process arbiter and bus, and the fairness chain from the known-answer vectors, so every
//! event's instant and every payout is checked to the millisecond and the hundredth.
//!
//! The ledger here is an in-memory implementation of the leader's part of the ledger (the
//! `RoundBook` port, all the runner uses): paused time and real
//! database I/O cannot be combined (tokio auto-advances the paused clock while a query waits on
//! SQLite's worker thread, firing the pool's timeouts), and the money rules themselves are proven
//! against the real SQLite ledger in `money.rs`, `bad_input.rs` and `websocket.rs`. This fake keeps
//! just enough of those rules (open → won/lost once, fencing) for the timing under test.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use game_node::engine::{BetRequest, CashOut, Curve, Outcome, RoundPlan, Rules, Settlement};
use game_node::error::{Error, Result};
use game_node::fairness::{Chain, CrashCalculator, parse_hash};
use game_node::ports::*;
use game_node::protocol::RoundStatus;
use game_node::runner::{self, Ports, TableSpec};
use game_node::standalone::{AlwaysLeader, LocalArbiter, LocalBus};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Mem {
    term: u64,
    rounds: BTreeMap<u64, RoundRecord>,
    /// bet id → (status, multiplier, settled at).
    bets: BTreeMap<String, (String, Option<u64>, Option<i64>)>,
}

#[derive(Default)]
struct MemoryLedger(Mutex<Mem>);

impl MemoryLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_bet(&self, id: &str) {
        self.lock()
            .bets
            .insert(id.to_string(), ("open".into(), None, None));
    }

    fn bet_state(&self, id: &str) -> (String, Option<u64>, Option<i64>) {
        self.lock().bets.get(id).cloned().unwrap_or_default()
    }

    /// A decided cash-out paid once: `open → won`, a no-op (`None`) on a settled bet.
    fn settle_cash_out(&self, c: &CashOut, now_ms: i64) -> Option<i64> {
        let mut m = self.lock();
        match m.bets.get_mut(&c.bet_id) {
            Some(b) if b.0 == "open" => {
                *b = ("won".into(), Some(c.multiplier_x100), Some(now_ms));
                Some(0)
            }
            _ => None,
        }
    }

    fn fence(&self, term: u64) -> Result<()> {
        let m = self.lock();
        if term < m.term {
            return Err(Error::Fenced {
                stale: term,
                current: m.term,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl RoundBook for MemoryLedger {
    async fn claim_term(&self, _: &str, term: u64) -> Result<()> {
        self.fence(term)?;
        self.lock().term = term;
        Ok(())
    }

    async fn current_term(&self, _: &str) -> Result<u64> {
        Ok(self.lock().term)
    }

    async fn last_round(&self, _: &str) -> Result<Option<RoundRecord>> {
        Ok(self.lock().rounds.values().next_back().cloned())
    }

    async fn open_rounds(&self, _: &str) -> Result<Vec<RoundRecord>> {
        Ok(self
            .lock()
            .rounds
            .values()
            .filter(|r| r.status == RoundStatus::Open)
            .cloned()
            .collect())
    }

    async fn open_round(&self, table: &str, term: u64, plan: &RoundPlan) -> Result<()> {
        self.fence(term)?;
        let mut m = self.lock();
        if m.rounds.contains_key(&plan.number) {
            return Err(Error::Internal("round number reused".into()));
        }
        m.rounds.insert(
            plan.number,
            RoundRecord {
                table: table.into(),
                number: plan.number,
                status: RoundStatus::Open,
                hash: game_node::fairness::to_hex(&plan.hash),
                crash_x100: plan.crash_x100,
                opened_at_ms: plan.opened_at_ms,
                started_at_ms: plan.started_at_ms,
                crashed_at_ms: None,
                term,
                settlement: None,
            },
        );
        Ok(())
    }

    async fn settle_leader_cash_out(
        &self,
        _: &str,
        term: u64,
        c: &CashOut,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        self.fence(term)?;
        Ok(self.settle_cash_out(c, now_ms))
    }

    async fn finish_round(
        &self,
        _: &str,
        term: u64,
        number: u64,
        _: &Reveal,
        crashed_at_ms: i64,
        settlements: &[Settlement],
    ) -> Result<Vec<(String, i64)>> {
        self.fence(term)?;
        let mut m = self.lock();
        if let Some(r) = m.rounds.get_mut(&number) {
            r.status = RoundStatus::Crashed;
            r.crashed_at_ms = Some(crashed_at_ms);
        }
        for s in settlements {
            if let Some(b) = m.bets.get_mut(&s.bet_id)
                && b.0 == "open"
            {
                *b = match s.outcome {
                    Outcome::Won {
                        multiplier_x100, ..
                    } => ("won".into(), Some(multiplier_x100), Some(crashed_at_ms)),
                    Outcome::Lost => ("lost".into(), None, Some(crashed_at_ms)),
                };
            }
        }
        Ok(Vec::new())
    }

    async fn void_round(
        &self,
        _: &str,
        term: u64,
        number: u64,
        _: &Reveal,
        _: i64,
    ) -> Result<Vec<(String, i64)>> {
        self.fence(term)?;
        if let Some(r) = self.lock().rounds.get_mut(&number) {
            r.status = RoundStatus::Voided;
        }
        Ok(Vec::new())
    }
}

const T0: i64 = 1_000_000;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../data/fairness.json")).expect("vectors")
}

fn bet(id: &str, auto: Option<u64>) -> BetRequest {
    BetRequest {
        bet_id: id.into(),
        player_id: format!("player-{id}"),
        username: id.into(),
        stake: 1_000,
        auto_cashout_x100: auto,
    }
}

#[tokio::test(start_paused = true)]
async fn a_whole_round_happens_at_exact_instants_and_pays_exact_multipliers() {
    let v = vectors();
    let seed = parse_hash(v["chain"]["h0"].as_str().expect("h0")).expect("hex");
    let chain = Chain::new(seed, 1000).expect("chain");
    let salt = v["salt"].as_str().expect("salt");
    let calculator = CrashCalculator::new(salt, 100, 100_000_000).expect("calc");
    let expected_crash = v["rounds"][0]["crash_x100_edge_100bp"]
        .as_u64()
        .expect("crash");
    assert_eq!(expected_crash, 259);

    let rules = Rules {
        min_stake: 10,
        max_stake: 1_000_000,
        max_payout: 100_000_000,
        bets_per_player: 2,
        max_x100: 100_000_000,
        betting_ms: 5_000,
        pause_ms: 3_000,
    };
    let curve = Curve::from_doubling_ms(11_500);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(T0));
    let ledger = Arc::new(MemoryLedger::default());
    let arbiter = Arc::new(LocalArbiter::new(clock.clone(), curve, rules.clone()));
    let bus = Arc::new(LocalBus::new());
    let mut events = bus.subscribe();
    let table = TableSpec {
        id: "t".into(),
        node_id: "n".into(),
        chain: Arc::new(chain),
        calculator,
        curve,
        rules,
        tick_ms: 100,
        paused: false,
        notary: Arc::new(game_node::receipts::Notary::new(
            crashfleet_core::settlement::signing::SigningKey::from_seed(&[3; 32]),
            "t",
        )),
    };
    let shutdown = CancellationToken::new();
    let leader = tokio::spawn(runner::run(
        table,
        Ports {
            ledger: ledger.clone(),
            arbiter: arbiter.clone(),
            bus: bus.clone(),
            elector: Arc::new(AlwaysLeader::new(1)),
        },
        shutdown.clone(),
    ));

    let mut next = async || -> Value {
        let e = tokio::time::timeout(Duration::from_secs(600), events.recv())
            .await
            .expect("an event")
            .expect("bus open");
        serde_json::from_str(&e.json).expect("json")
    };

    let open = next().await;
    assert_eq!(
        (open["type"].as_str(), open["round"].as_u64()),
        (Some("round_open"), Some(1))
    );
    assert_eq!(open["opened_at_ms"], T0);
    let started = T0 + 5_000;
    assert_eq!(open["betting_closes_at_ms"], started);
    // Bets at the very start of the window: auto at 1.50 (wins), at exactly the crash point
    // 2.59 (wins), at 2.60 (loses), and a manual one cashed out at 1.30 s of flight.
    for (id, auto) in [
        ("a150", Some(150)),
        ("a259", Some(259)),
        ("a260", Some(260)),
        ("manual", None),
    ] {
        arbiter
            .place_bet(1, bet(id, auto))
            .await
            .expect("in the window");
        ledger.add_bet(id);
    }
    let crash_at = started + curve.elapsed_for(259) as i64;
    let mut ticks = Vec::new();
    let mut cashed = Vec::new();
    let mut manual_done = false;
    let crashed = loop {
        let e = next().await;
        match e["type"].as_str() {
            Some("flying") => assert_eq!(e["started_at_ms"], started),
            Some("tick") => {
                let t = e["server_time_ms"].as_i64().expect("t");
                assert_eq!(e["elapsed_ms"].as_i64(), Some(t - started));
                assert_eq!(
                    e["multiplier_x100"].as_u64(),
                    Some(curve.multiplier_x100((t - started) as u64))
                );
                ticks.push(t);
                if !manual_done && t >= started + 1_300 {
                    let c = arbiter
                        .cash_out("manual", "player-manual", "ck")
                        .await
                        .expect("in time");
                    assert_eq!(
                        (c.at_ms, c.multiplier_x100),
                        (t, curve.multiplier_x100(1_300))
                    );
                    assert!(ledger.settle_cash_out(&c, c.at_ms).is_some(), "paid");
                    manual_done = true;
                }
            }
            Some("cashed_out") => cashed.push((
                e["bet_id"].as_str().expect("id").to_string(),
                e["multiplier_x100"].as_u64().expect("m"),
            )),
            Some("crashed") => break e,
            other => panic!("unexpected event {other:?}: {e}"),
        }
    };
    // Ticks exactly every 100 ms from the start of the flight until the crash.
    assert_eq!(ticks.first(), Some(&started));
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 100), "{ticks:?}");
    assert!(*ticks.last().expect("ticks") < crash_at);
    assert_eq!(crashed["crash_x100"].as_u64(), Some(259));
    assert_eq!(crashed["crashed_at_ms"], crash_at);
    assert_eq!(crashed["server_time_ms"], crash_at);
    assert_eq!(crashed["hash"], v["rounds"][0]["hash"]);
    assert_eq!(crashed["next_round_at_ms"], crash_at + 3_000);
    // Auto-cash-outs win exactly their targets iff target <= crash point, at their own instants.
    assert_eq!(
        cashed,
        vec![("a150".to_string(), 150), ("a259".to_string(), 259)]
    );
    assert_eq!(
        ledger.bet_state("a150"),
        (
            "won".into(),
            Some(150),
            Some(started + curve.elapsed_for(150) as i64)
        )
    );
    assert_eq!(
        ledger.bet_state("a259"),
        ("won".into(), Some(259), Some(crash_at))
    );
    assert_eq!(ledger.bet_state("a260").0, "lost");
    assert_eq!(
        ledger.bet_state("manual").1,
        Some(curve.multiplier_x100(1_300))
    );
    // The next round opens exactly after the pause, with the next number.
    let open2 = next().await;
    assert_eq!(
        (open2["type"].as_str(), open2["round"].as_u64()),
        (Some("round_open"), Some(2))
    );
    assert_eq!(open2["opened_at_ms"], crash_at + 3_000);

    shutdown.cancel();
    leader.await.expect("leader ends");
    // Shutting down mid-round voids it; round 1 stays crashed.
    assert_eq!(ledger.lock().rounds[&1].status, RoundStatus::Crashed);
    assert_eq!(ledger.lock().rounds[&2].status, RoundStatus::Voided);
}

#[tokio::test(start_paused = true)]
async fn an_instant_crash_round_takes_no_cash_out_and_bets_close_on_time() {
    // Find a round of the vectors chain that crashes at 1.00x.
    let v = vectors();
    let seed = parse_hash(v["chain"]["h0"].as_str().expect("h0")).expect("hex");
    let chain = Chain::new(seed, 1000).expect("chain");
    let calc =
        CrashCalculator::new(v["salt"].as_str().expect("salt"), 100, 100_000_000).expect("calc");
    let instant = (1..=1000)
        .find(|&k| calc.crash_x100(&chain.round_hash(k).expect("hash")) == 100)
        .expect("a 1% edge chain of 1000 has an instant crash");
    let curve = Curve::from_doubling_ms(11_500);
    let rules = Rules {
        min_stake: 10,
        max_stake: 1_000_000,
        max_payout: 100_000_000,
        bets_per_player: 2,
        max_x100: 100_000_000,
        betting_ms: 1_000,
        pause_ms: 500,
    };
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::starting_at(T0));
    let arbiter = LocalArbiter::new(clock.clone(), curve, rules.clone());
    let plan = RoundPlan::new(
        instant,
        chain.round_hash(instant).expect("h"),
        100,
        clock.now_ms(),
        &rules,
        &curve,
    );
    arbiter.open_round(1, plan.clone()).await.expect("open");
    arbiter
        .place_bet(instant, bet("x", Some(101)))
        .await
        .expect("bet");
    tokio::time::sleep(Duration::from_millis(999)).await;
    arbiter
        .place_bet(instant, bet("y", None))
        .await
        .expect("last millisecond of the window");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        arbiter.place_bet(instant, bet("z", None)).await,
        Err(Error::BettingClosed)
    );
    assert_eq!(
        plan.crash_at_ms, plan.started_at_ms,
        "1.00x crashes the instant it starts"
    );
    assert_eq!(
        arbiter.cash_out("y", "player-y", "ck").await,
        Err(Error::TooLate)
    );
    let (late, settled) = arbiter.crash(1).await.expect("crash");
    assert!(late.is_empty());
    assert!(settled.iter().all(|s| s.outcome == Outcome::Lost));
}
