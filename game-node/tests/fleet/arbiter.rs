//! The Redis arbiter against a real `redis-server`, with several `RedisArbiter`s on one Redis
//! standing for the replicas of a fleet. What it must guarantee:
//! - a cash-out is accepted only at or after lift-off and strictly before the crash instant, by
//!   Redis `TIME`, whichever replica it reaches; each bet is cashed out at most once;
//! - bets only inside the window; the per-player limit is fleet-wide;
//! - auto-cash-outs pay exactly their target, once, including ones the leader was late for;
//! - a stale term's leader writes are refused (fencing);
//! - a void honours the cash-outs already accepted; an adopted round keeps its plan.

use std::sync::Arc;
use std::time::Duration;

use game_node::engine::{BetRequest, CashOut, Curve, Outcome, RoundPlan, Rules};
use game_node::error::Error;
use game_node::fleet::arbiter::RedisArbiter;
use game_node::fleet::redis::{self as r, Keys, RedisClock, RedisConn, Scripts};
use game_node::ports::{Arbiter, Clock, Reveal};

const DOUBLING_MS: u64 = 1_000;

fn rules(betting_ms: u64) -> Rules {
    Rules {
        min_stake: 1,
        max_stake: 1_000_000,
        max_payout: 100_000_000,
        bets_per_player: 2,
        max_x100: 100_000,
        betting_ms,
        pause_ms: 100,
    }
}

struct Setup {
    _redis: crashfleet_tests::redis::TestRedis,
    _dir: tempfile::TempDir,
    conn: RedisConn,
    keys: Keys,
    scripts: Arc<Scripts>,
    replicas: Vec<Arc<RedisArbiter>>,
    clock: Arc<RedisClock>,
}

impl Setup {
    async fn new(table: &str, replicas: usize, betting_ms: u64) -> Option<Setup> {
        // Needs redis-server only (no PostgreSQL).
        crashfleet_tests::require::redis(&format!("arbiter {table}"))?;
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = crashfleet_tests::redis::TestRedis::start(dir.path());
        let conn = r::connect(&redis.url()).await.expect("connect");
        let keys = Keys::new(table);
        let scripts = Arc::new(Scripts::new());
        let clock = Arc::new(RedisClock::new());
        clock.calibrate(&conn.client).await.expect("calibrate");
        let replicas = (0..replicas)
            .map(|_| {
                Arc::new(RedisArbiter::new(
                    conn.client.clone(),
                    keys.clone(),
                    scripts.clone(),
                    clock.clone(),
                    rules(betting_ms),
                    DOUBLING_MS,
                ))
            })
            .collect();
        Some(Setup {
            _redis: redis,
            _dir: dir,
            conn,
            keys,
            scripts,
            replicas,
            clock,
        })
    }

    /// Acquires leadership the way the elector does; returns the term.
    async fn lead(&self, node: &str) -> u64 {
        // Let any previous holder's lock go (as if it expired), then take it.
        let _: i64 = fred::interfaces::KeysInterface::del(&self.conn.client, self.keys.leader())
            .await
            .expect("del");
        let reply = r::run(
            &self.conn.client,
            &self.scripts.acquire,
            vec![
                self.keys.leader(),
                self.keys.term(),
                self.keys.fence(),
                self.keys.paused(),
            ],
            vec![node.into(), "60000".into(), "1".into()],
        )
        .await
        .expect("acquire");
        assert_eq!(r::int(reply.first()), 1, "acquire");
        r::int(reply.get(1)) as u64
    }

    fn plan(&self, number: u64, crash_x100: u64, betting_ms: u64) -> RoundPlan {
        RoundPlan::new(
            number,
            [number as u8; 32],
            crash_x100,
            self.clock.now_ms(),
            &rules(betting_ms),
            &Curve::from_doubling_ms(DOUBLING_MS),
        )
    }
}

fn bet(id: &str, player: &str, stake: i64, auto: Option<u64>) -> BetRequest {
    BetRequest {
        bet_id: id.into(),
        player_id: player.into(),
        username: player.into(),
        stake,
        auto_cashout_x100: auto,
    }
}

async fn sleep_until(clock: &RedisClock, at_ms: i64) {
    let wait = (at_ms - clock.now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cash_outs_racing_the_crash_across_replicas_are_decided_once_and_before_it() {
    let Some(s) = Setup::new("race", 3, 400).await else {
        return;
    };
    let term = s.lead("leader").await;
    // 1.80x with a 1 s doubling: about 850 ms of flight.
    let plan = s.plan(1, 180, 400);
    s.replicas[0]
        .open_round(term, plan.clone())
        .await
        .expect("open");
    let players = 40;
    for p in 0..players {
        let replica = &s.replicas[p % 3];
        replica
            .place_bet(1, bet(&format!("b{p}"), &format!("p{p}"), 100, None))
            .await
            .expect("bet inside the window");
    }
    // Every bet is cashed out by two replicas at once, at instants spread over the whole flight
    // and past the crash.
    let flight = plan.crash_at_ms - plan.started_at_ms;
    let mut tasks = Vec::new();
    for p in 0..players {
        for k in 0..2 {
            let replica = s.replicas[(p + k) % 3].clone();
            let clock = s.clock.clone();
            let at = plan.started_at_ms - 50 + (flight + 150) * p as i64 / players as i64;
            tasks.push(tokio::spawn(async move {
                sleep_until(&clock, at).await;
                let before = clock.now_ms();
                let res = replica
                    .cash_out(&format!("b{p}"), &format!("p{p}"), &format!("ck{k}"))
                    .await;
                (p, before, res)
            }));
        }
    }
    let mut won: Vec<Option<CashOut>> = vec![None; players];
    let mut too_late = 0;
    let mut not_flying = 0;
    let mut duplicates = Vec::new();
    for t in tasks {
        let (p, _, res) = t.await.expect("join");
        match res {
            Ok(c) => {
                assert!(
                    c.at_ms >= plan.started_at_ms && c.at_ms < plan.crash_at_ms,
                    "a cash-out at {} outside [{}, {})",
                    c.at_ms,
                    plan.started_at_ms,
                    plan.crash_at_ms
                );
                assert!(c.multiplier_x100 < 180, "{c:?}");
                assert!(won[p].is_none(), "bet {p} cashed out twice");
                won[p] = Some(c);
            }
            // The other replica's attempt on the same bet won (checked below).
            Err(Error::AlreadySettled) => duplicates.push(p),
            Err(Error::TooLate) => too_late += 1,
            Err(Error::NotFlying) => not_flying += 1,
            Err(e) => panic!("unexpected refusal: {e:?}"),
        }
    }
    for p in duplicates {
        assert!(
            won[p].is_some(),
            "bet {p} refused as settled but nobody cashed it out"
        );
    }
    let accepted = won.iter().filter(|w| w.is_some()).count();
    assert!(accepted > 10, "only {accepted} cash-outs accepted");
    assert!(too_late > 0, "no attempt landed after the crash");
    assert!(not_flying > 0, "no attempt landed before lift-off");
    sleep_until(&s.clock, plan.crash_at_ms).await;
    let (late, settlements) = s.replicas[1].crash(term).await.expect("crash");
    assert!(late.is_empty());
    assert_eq!(settlements.len(), players);
    for st in settlements {
        let p: usize = st.bet_id[1..].parse().expect("index");
        match (&won[p], st.outcome) {
            (
                Some(c),
                Outcome::Won {
                    multiplier_x100,
                    payout,
                },
            ) => {
                assert_eq!((c.multiplier_x100, c.payout), (multiplier_x100, payout));
            }
            (None, Outcome::Lost) => {}
            (w, o) => panic!("bet {p}: decided {w:?} but settled {o:?}"),
        }
    }
    // After the crash nothing is accepted anywhere.
    let late = s.replicas[2].cash_out("b39", "p39", "ck").await;
    assert!(
        matches!(late, Err(Error::TooLate | Error::AlreadySettled)),
        "{late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bets_only_inside_the_window_and_the_limit_is_fleet_wide() {
    let Some(s) = Setup::new("window", 3, 600).await else {
        return;
    };
    let term = s.lead("leader").await;
    let plan = s.plan(1, 500, 600);
    // Before the round exists: closed.
    let early = s.replicas[0].place_bet(1, bet("x", "p", 10, None)).await;
    assert_eq!(early, Err(Error::BettingClosed));
    s.replicas[0]
        .open_round(term, plan.clone())
        .await
        .expect("open");
    assert_eq!(s.replicas[2].betting_round().await, Ok(Some(1)));
    // One player, 15 concurrent bets through 3 replicas, limit 2: exactly 2 accepted.
    let mut tasks = Vec::new();
    for k in 0..15 {
        let replica = s.replicas[k % 3].clone();
        tasks.push(tokio::spawn(async move {
            replica
                .place_bet(1, bet(&format!("b{k}"), "greedy", 10, None))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(Error::BetLimit(2)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 2, "the per-player limit must hold across replicas");
    // A refused bet withdrawn frees its slot (the ledger refused it: no money moved).
    let (_, bets) = s.replicas[0].current().await.expect("a round");
    s.replicas[1].cancel_bet(1, &bets[0].bet_id).await;
    s.replicas[2]
        .place_bet(1, bet("again", "greedy", 10, None))
        .await
        .expect("a slot freed by the withdrawal");
    // A bet for another round number is refused.
    assert_eq!(
        s.replicas[0].place_bet(2, bet("y", "q", 10, None)).await,
        Err(Error::BettingClosed)
    );
    // After the window: closed, by Redis time.
    sleep_until(&s.clock, plan.started_at_ms + 5).await;
    assert_eq!(
        s.replicas[1].place_bet(1, bet("z", "q", 10, None)).await,
        Err(Error::BettingClosed)
    );
    assert_eq!(s.replicas[1].betting_round().await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_cash_outs_pay_their_target_once_even_when_the_leader_is_late() {
    let Some(s) = Setup::new("auto", 2, 300).await else {
        return;
    };
    let term = s.lead("leader").await;
    let plan = s.plan(1, 200, 300);
    s.replicas[0]
        .open_round(term, plan.clone())
        .await
        .expect("open");
    let a = &s.replicas[0];
    a.place_bet(1, bet("at120", "p1", 1_000, Some(120)))
        .await
        .expect("bet");
    a.place_bet(1, bet("at190", "p2", 1_000, Some(190)))
        .await
        .expect("bet");
    a.place_bet(1, bet("at200", "p3", 1_000, Some(200)))
        .await
        .expect("bet");
    a.place_bet(1, bet("at250", "p4", 1_000, Some(250)))
        .await
        .expect("bet");
    // Past 1.20x: the leader marks the first one; a manual cash-out of it is a duplicate.
    let curve = Curve::from_doubling_ms(DOUBLING_MS);
    sleep_until(&s.clock, plan.started_at_ms + curve.elapsed_for(125) as i64).await;
    let (due, next) = a.due_auto_cashouts(term).await.expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(
        (
            due[0].bet_id.as_str(),
            due[0].multiplier_x100,
            due[0].payout
        ),
        ("at120", 120, 1_200)
    );
    assert_eq!(
        next,
        plan.auto_instant(&curve, 190),
        "the next instant to wake for"
    );
    assert_eq!(
        s.replicas[1]
            .cash_out("at120", "p1", "ck")
            .await
            .map(|c| c.bet_id),
        Err(Error::AlreadySettled)
    );
    // Marking is exactly-once: asking again returns nothing new.
    assert!(a.due_auto_cashouts(term).await.expect("due").0.is_empty());
    // The leader is late for 1.90x and 2.00x (= the crash point: it pays); 2.50x never comes.
    sleep_until(&s.clock, plan.crash_at_ms + 20).await;
    let (late, settlements) = s.replicas[1].crash(term).await.expect("crash");
    let mut late_ids: Vec<_> = late
        .iter()
        .map(|c| (c.bet_id.as_str(), c.multiplier_x100))
        .collect();
    late_ids.sort();
    assert_eq!(late_ids, [("at190", 190), ("at200", 200)]);
    for st in settlements {
        let expect = match st.bet_id.as_str() {
            "at120" => Some(120),
            "at190" => Some(190),
            "at200" => Some(200),
            _ => None,
        };
        match (expect, st.outcome) {
            (
                Some(m),
                Outcome::Won {
                    multiplier_x100,
                    payout,
                },
            ) => {
                assert_eq!(
                    (multiplier_x100, payout),
                    (m, 10 * m as i64),
                    "{}",
                    st.bet_id
                )
            }
            (None, Outcome::Lost) => {}
            (e, o) => panic!("{}: expected {e:?}, settled {o:?}", st.bet_id),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_term_is_fenced_and_an_adopted_round_keeps_its_plan() {
    let Some(s) = Setup::new("fence", 2, 300).await else {
        return;
    };
    let old = s.lead("old").await;
    let plan = s.plan(1, 300, 300);
    s.replicas[0]
        .open_round(old, plan.clone())
        .await
        .expect("open");
    s.replicas[0]
        .place_bet(1, bet("b", "p", 100, Some(150)))
        .await
        .expect("bet");
    let new = s.lead("new").await;
    assert!(new > old);
    // The new leader adopts the round: same plan, its term from now on.
    let adopted = s.replicas[1]
        .adopt(new, 1)
        .await
        .expect("adopt")
        .expect("held");
    assert_eq!(
        (
            adopted.number,
            adopted.hash,
            adopted.crash_x100,
            adopted.started_at_ms,
            adopted.crash_at_ms
        ),
        (
            plan.number,
            plan.hash,
            plan.crash_x100,
            plan.started_at_ms,
            plan.crash_at_ms
        )
    );
    // Every leader write of the old term is refused.
    let fenced = |r: Result<(), Error>| matches!(r, Err(Error::Fenced { stale, current }) if stale == old && current == new);
    assert!(fenced(
        s.replicas[0].open_round(old, s.plan(2, 300, 300)).await
    ));
    assert!(fenced(s.replicas[0].crash(old).await.map(|_| ())));
    assert!(fenced(
        s.replicas[0].due_auto_cashouts(old).await.map(|_| ())
    ));
    assert!(fenced(s.replicas[0].adopt(old, 1).await.map(|_| ())));
    assert!(fenced(s.replicas[0].void(old, 1).await.map(|_| ())));
    // A round that is not held (wrong number) is not adopted.
    assert!(matches!(s.replicas[1].adopt(new, 7).await, Ok(None)));
    // The new term crashes it normally.
    sleep_until(&s.clock, plan.crash_at_ms).await;
    let (_, settlements) = s.replicas[1]
        .crash(new)
        .await
        .expect("crash by the new term");
    assert_eq!(settlements.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_honours_accepted_cash_outs_and_then_refuses_everything() {
    let Some(s) = Setup::new("void", 2, 300).await else {
        return;
    };
    let term = s.lead("leader").await;
    let plan = s.plan(1, 1_000, 300);
    s.replicas[0]
        .open_round(term, plan.clone())
        .await
        .expect("open");
    let a = &s.replicas[0];
    a.place_bet(1, bet("manual", "p1", 1_000, None))
        .await
        .expect("bet");
    a.place_bet(1, bet("auto", "p2", 1_000, Some(110)))
        .await
        .expect("bet");
    a.place_bet(1, bet("open", "p3", 1_000, None))
        .await
        .expect("bet");
    a.place_bet(1, bet("later", "p4", 1_000, Some(900)))
        .await
        .expect("bet");
    let curve = Curve::from_doubling_ms(DOUBLING_MS);
    sleep_until(&s.clock, plan.started_at_ms + curve.elapsed_for(130) as i64).await;
    let manual = s.replicas[1]
        .cash_out("manual", "p1", "ck")
        .await
        .expect("cash-out");
    // Its answer may have been lost: a retry with the same key, on any replica, gets the same
    // decision (not `already_settled`); another key is refused; the key travels with it.
    assert_eq!(manual.key.as_deref(), Some("ck"));
    let again = s.replicas[0]
        .cash_out("manual", "p1", "ck")
        .await
        .expect("replayed");
    assert_eq!(again, manual);
    assert_eq!(
        s.replicas[0].cash_out("manual", "p1", "other").await,
        Err(Error::AlreadySettled)
    );
    // The leader dies here without marking the 1.10x auto-cash-out; the next term voids.
    let accepted = s.replicas[1].void(term, 1).await.expect("void");
    let mut got: Vec<_> = accepted
        .iter()
        .map(|c| (c.bet_id.clone(), c.multiplier_x100, c.auto, c.key.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("auto".to_string(), 110, true, None),
            (
                "manual".to_string(),
                manual.multiplier_x100,
                false,
                Some("ck".to_string())
            )
        ]
    );
    // From the void on, nothing is decided on the round.
    assert!(s.replicas[0].cash_out("open", "p3", "ck").await.is_err());
    assert_eq!(
        s.replicas[0].place_bet(1, bet("new", "p5", 10, None)).await,
        Err(Error::BettingClosed)
    );
    assert!(
        s.replicas[0].current().await.is_none(),
        "a voided round is not shown as current"
    );
}

/// The windows between the Redis decision and the PostgreSQL write (README, "Order of the steps"):
/// a node dies after Redis accepted a bet but before the ledger debited it, and another dies
/// after Redis accepted a cash-out but before the ledger paid it. The leader's settlement from
/// Redis pays the cash-out exactly once, the phantom bet moves no money, and the audit is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settlement_closes_the_windows_between_redis_and_the_ledger() {
    use game_node::ledger::SqlLedger;
    use game_node::ports::BetRecord;
    use game_node::ports::ledger_parts::*;
    let Some(s) = Setup::new("windows", 2, 300).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = SqlLedger::connect(
        &format!("sqlite://{}", dir.path().join("ledger.db").display()),
        2,
    )
    .await
    .expect("ledger");
    let table = "windows";
    let term = s.lead("leader").await;
    ledger.claim_term(table, term).await.expect("claim");
    let now = s.clock.now_ms();
    let alice = ledger
        .register("alice", "h", 10_000, now)
        .await
        .expect("alice");
    let bob = ledger.register("bob", "h", 10_000, now).await.expect("bob");
    let plan = s.plan(1, 400, 300);
    ledger
        .open_round(table, term, &plan)
        .await
        .expect("open in the ledger");
    s.replicas[0]
        .open_round(term, plan.clone())
        .await
        .expect("open in Redis");
    let record = |p: &game_node::ports::PlayerRecord, id: &str, stake: i64, at: i64| BetRecord {
        bet_id: id.into(),
        table: table.into(),
        round: 1,
        player_id: p.id.clone(),
        username: p.username.clone(),
        stake,
        auto_cashout_x100: None,
        status: game_node::protocol::BetStatus::Open,
        cashout_x100: None,
        payout: None,
        placed_at_ms: at,
        idempotency_key: format!("k-{id}"),
        cashout_key: None,
        settled_at_ms: None,
    };
    // Alice's bet goes through both steps.
    let at = s.replicas[0]
        .place_bet(1, bet("alice-1", &alice.id, 1_000, None))
        .await
        .expect("redis");
    ledger
        .place_bet(&record(&alice, "alice-1", 1_000, at))
        .await
        .expect("ledger");
    // Bob's is accepted by Redis, then his node dies before the ledger debit.
    s.replicas[1]
        .place_bet(1, bet("bob-1", &bob.id, 2_000, None))
        .await
        .expect("redis");
    // In flight, Alice cashes out through a node that dies before paying.
    let curve = Curve::from_doubling_ms(DOUBLING_MS);
    sleep_until(&s.clock, plan.started_at_ms + curve.elapsed_for(150) as i64).await;
    let decision = s.replicas[1]
        .cash_out("alice-1", &alice.id, "ck")
        .await
        .expect("decided in Redis");
    assert_eq!(
        ledger
            .player(&alice.id)
            .await
            .expect("p")
            .expect("a")
            .balance,
        9_000,
        "not paid yet"
    );
    // The leader crashes the round and settles from Redis.
    sleep_until(&s.clock, plan.crash_at_ms).await;
    let (_, settlements) = s.replicas[0].crash(term).await.expect("crash");
    assert_eq!(settlements.len(), 2, "Redis knows both bets");
    ledger
        .finish_round(
            table,
            term,
            1,
            &Reveal::of(&plan),
            plan.crash_at_ms,
            &settlements,
        )
        .await
        .expect("finish");
    let alice_now = ledger
        .player(&alice.id)
        .await
        .expect("p")
        .expect("a")
        .balance;
    assert_eq!(
        alice_now,
        9_000 + decision.payout,
        "the decided cash-out is paid"
    );
    assert_eq!(
        ledger.player(&bob.id).await.expect("p").expect("b").balance,
        10_000,
        "a bet the ledger never debited moves no money"
    );
    // A late retry of the dead node's payment pays nothing more.
    assert_eq!(
        ledger
            .settle_cash_out(&decision, Some("late"), decision.at_ms)
            .await
            .expect("retry"),
        None
    );
    assert_eq!(
        ledger
            .player(&alice.id)
            .await
            .expect("p")
            .expect("a")
            .balance,
        alice_now
    );
    let audit = ledger.audit().await.expect("audit");
    assert!(audit.balanced, "{audit:?}");
    assert!(audit.violations.is_empty(), "{audit:?}");
}
