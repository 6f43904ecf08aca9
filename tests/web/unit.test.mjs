// Unit tests of the page's ES modules, run by Node as the browser loads them (no build step, no
// bundler): money formatting and parsing, the fairness math on the known answers on both hashing
// engines, the model's handling of server messages, the server clock and the reconnect backoff.
//   node --test tests/web/unit.test.mjs
// The Rust test `pages::the_page_modules_pass_their_unit_tests_in_node` runs this file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import * as format from '../../game-node/web/format.js';
import * as fairness from '../../game-node/web/fairness.js';
import * as model from '../../game-node/web/state.js';
import { ServerClock, backoffMs, BACKOFF_MAX_MS, BACKOFF_MIN_MS } from '../../game-node/web/socket.js';
import { niceStep } from '../../game-node/web/graph.js';
import * as lobby from '../../game-node/web/lobby-model.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// Known answers computed outside the project (Python hashlib/hmac, exact integers). Integers
// beyond 2^53 (the r edge cases) would lose digits as JS numbers: they are kept as text.
const vectors = JSON.parse(
  readFileSync(path.join(HERE, '../../game-node/tests/data/fairness.json'), 'utf8').replace(/:\s*(\d{16,})\b/g, ': "$1"'),
);

test('amounts parse digit by digit, never through floats', () => {
  assert.equal(format.parseHundredths('0.29'), 29);
  assert.equal(format.parseHundredths('1'), 100);
  assert.equal(format.parseHundredths('1.5'), 150);
  assert.equal(format.parseHundredths('.5'), 50);
  assert.equal(format.parseHundredths(' 12.34 '), 1234);
  assert.equal(format.parseHundredths('90071992547409.91'), 9007199254740991);
  for (const bad of ['', '.', '1.234', '-1', '1e3', '0x10', 'abc', '1,00', '90071992547409.92']) {
    assert.equal(format.parseHundredths(bad), null, JSON.stringify(bad));
  }
});

test('credits and multipliers format with integer arithmetic', () => {
  assert.equal(format.formatCredits(123456), '1,234.56');
  assert.equal(format.formatCredits(5), '0.05');
  assert.equal(format.formatCredits(-100), '-1.00');
  assert.equal(format.formatSigned(1), '+0.01');
  assert.equal(format.formatSigned(0), '0.00');
  assert.equal(format.formatSigned(-250), '-2.50');
  assert.equal(format.formatMult(259), '2.59×');
  assert.equal(format.formatMult(100000), '1,000.00×');
  // The verifier's BigInt crash points, beyond 2^53, keep every digit.
  assert.equal(format.formatMult(123456789012345678901n), '1,234,567,890,123,456,789.01×');
  assert.equal(format.plainAmount(150), '1.50');
  assert.equal(format.formatBp(100), '1.00% (100 bp)');
});

test('a payout is floor(stake × x100 / 100), exactly', () => {
  assert.equal(format.payoutOf(100, 187), 187);
  assert.equal(format.payoutOf(33, 150), 49); // 49.5 rounds down: the house never pays a fraction
  assert.equal(format.payoutOf(9007199254740991, 100), 9007199254740991);
});

test('crash points fall in the right pill, and a voided round has none', () => {
  assert.equal(format.pillClass(null), 'void');
  assert.equal(format.pillClass(199), 'low');
  assert.equal(format.pillClass(200), 'mid');
  assert.equal(format.pillClass(999n), 'mid');
  assert.equal(format.pillClass(1000), 'high');
});

test('request ids are printable ASCII of at most 64 characters, and differ', () => {
  const a = format.newRequestId();
  const b = format.newRequestId();
  assert.match(a, /^web-[0-9a-f]{24}$/);
  assert.notEqual(a, b);
});

test('the page computes every known crash point on both hashing engines', async () => {
  const edges = [[0, 'crash_x100_edge_0bp'], [100, 'crash_x100_edge_100bp'], [250, 'crash_x100_edge_250bp']];
  let checked = 0;
  for (const r of vectors.rounds) {
    for (const [edge, key] of edges) {
      if (r[key] == null) continue;
      for (const engine of ['webcrypto', 'js']) {
        const got = await fairness.crashForHash(r.hash, vectors.salt, edge, null, engine);
        assert.equal(String(got), String(r[key]), `round ${r.round} edge ${edge} on ${engine}`);
        checked += 1;
      }
    }
  }
  assert.ok(checked >= 6, `only ${checked} answers checked`);
  for (const c of vectors.r_cases) {
    assert.equal(fairness.crashX100FromR(BigInt(c.r), c.edge_bp).toString(), String(c.crash_x100), `r=${c.r}`);
  }
});

test('the table cap applies after the formula', () => {
  const top = (1n << 52n) - 1n;
  assert.equal(fairness.crashX100FromR(top, 100) > 1_000_000n, true);
  assert.equal(fairness.capped(fairness.crashX100FromR(top, 100), 1_000_000n), 1_000_000n);
  assert.equal(fairness.capped(250n, 1_000_000n), 250n);
});

test('the chain of the known answers ends at its commitment on both engines', async () => {
  const { h0, length, terminating_hash: end, h500 } = vectors.chain;
  for (const engine of ['webcrypto', 'js']) {
    let h = h0;
    for (let i = 1; i <= length; i += 1) {
      h = await fairness.sha256Hex(h, engine);
      // round k uses h(L-k): round 500 of a 1,000-link chain is h(500)
      if (i === length - 500) assert.equal(h, h500, `h(500) on ${engine}`);
    }
    assert.equal(h, end, `h(L) on ${engine}`);
  }
});

test('the plain-JS SHA-256 agrees with Web Crypto on every block-boundary length', async () => {
  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 200]) {
    const data = new Uint8Array(n).map((_, i) => (i * 31 + 7) & 0xff);
    const js = fairness.toHex(fairness.sha256Js(data));
    const wc = fairness.toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', data)));
    assert.equal(js, wc, `length ${n}`);
  }
});

function snapshot(over = {}) {
  return {
    type: 'snapshot', table: 'main', server_time_ms: 1_000_000, tick_interval_ms: 100,
    growth_per_ms: Math.LN2 / 2000,
    round: { number: 7, phase: 'flying', started_at_ms: 999_000, crash_x100: null },
    bets: [
      { bet_id: 'a', round: 7, username: 'ann', stake: 100, status: 'open' },
      { bet_id: 'b', round: 7, username: 'bob', stake: 250, status: 'open' },
    ],
    bets_total: 5, bets_wagered: 1000,
    history: [{ number: 6, crash_x100: 150, hash: 'h6' }, { number: 5, phase: 'voided', crash_x100: null }],
    fairness: { salt: 's' },
    ...over,
  };
}

test('a snapshot replaces what the page knew, and counts the bets it did not carry', () => {
  const st = model.newState(null);
  st.bets.set('old', { bet_id: 'old', round: 3 });
  model.applySnapshot(st, snapshot());
  assert.equal(st.connected, true);
  assert.equal(st.round.number, 7);
  assert.deepEqual([...st.bets.keys()], ['a', 'b']);
  assert.deepEqual(st.unseen, { count: 3, wagered: 650 });
  assert.deepEqual(st.history.map((h) => [h.number, h.crash_x100, h.voided]), [[6, 150, false], [5, null, true]]);
});

test('the chat: the snapshot history, then each line appended, the oldest dropped past the cap', () => {
  const st = model.newState(null);
  model.applySnapshot(st, snapshot({ chat: [{ username: 'ann', text: 'hi', at_ms: 1 }] }));
  assert.deepEqual(st.chat.map((l) => l.text), ['hi']);
  assert.equal(model.applyChat(st, { type: 'chat', username: 'bob', text: '<b>x</b>', at_ms: 2 }), true);
  assert.equal(model.applyChat(st, { type: 'chat', username: 'bob' }), false, 'a line without text is ignored');
  assert.deepEqual(st.chat.map((l) => l.text), ['hi', '<b>x</b>']);
  for (let i = 0; i < model.CHAT_KEEP; i += 1) model.applyChat(st, { username: 'c', text: String(i), at_ms: 3 });
  assert.equal(st.chat.length, model.CHAT_KEEP);
  assert.equal(st.chat[0].text, '0');
  // A later snapshot (a resync) is the whole truth again.
  model.applySnapshot(st, snapshot());
  assert.deepEqual(st.chat, []);
});

test('a crash settles the open bets as lost and heads the history; a void refunds', () => {
  const st = model.newState(null);
  model.applySnapshot(st, snapshot());
  model.applyCashedOut(st, { bet_id: 'a', multiplier_x100: 140, payout: 140 });
  model.applyCrashed(st, { round: 7, crash_x100: 187, hash: 'h7', crashed_at_ms: 1_001_000, next_round_at_ms: 1_004_000 });
  assert.equal(st.bets.get('a').status, 'won');
  assert.equal(st.bets.get('b').status, 'lost');
  assert.equal(st.history[0].number, 7);
  assert.equal(st.history[0].crash_x100, 187);
  assert.equal(model.liveView(st, 1_002_000).phase, 'crashed');
  assert.equal(model.liveView(st, 1_002_000).x100, 187);

  model.applyRoundOpen(st, { round: 8, opened_at_ms: 1_004_000, betting_closes_at_ms: 1_009_000 });
  assert.equal(st.bets.size, 0);
  model.applyBets(st, [{ bet_id: 'c', round: 8, username: 'ann', stake: 100, status: 'open' }, { bet_id: 'x', round: 7 }]);
  assert.deepEqual([...st.bets.keys()], ['c'], 'a bet of another round is not this round\'s');
  model.applyVoided(st, { round: 8, reason: 'leader lost' });
  assert.equal(st.bets.get('c').status, 'refunded');
  assert.equal(st.history[0].voided, true);
});

test('a late copy of a settled bet does not reopen it', () => {
  const st = model.newState(null);
  model.applySnapshot(st, snapshot());
  model.applyCashedOut(st, { bet_id: 'a', multiplier_x100: 140, payout: 140 });
  model.applyBets(st, [{ bet_id: 'a', round: 7, username: 'ann', stake: 100, status: 'open' }]);
  assert.equal(st.bets.get('a').status, 'won');
});

test('my open bets and pending commands are the model\'s, per player', () => {
  const st = model.newState('t');
  model.applySnapshot(st, snapshot());
  st.you = { username: 'ann', balance: 0 };
  assert.deepEqual(model.myOpenBets(st).map((b) => b.bet_id), ['a']);
  assert.equal(model.pendingBet(st), false);
  st.pending.set('r1', { kind: 'cash_out', msg: { bet_id: 'a' } });
  assert.equal(model.pendingCashOut(st, 'a'), true);
  assert.equal(model.pendingCashOut(st, 'b'), false);
});

test('the drawn curve never runs more than three ticks ahead of the last tick', () => {
  const st = model.newState(null);
  model.applySnapshot(st, snapshot());
  model.applyTick(st, { round: 7, multiplier_x100: 141, elapsed_ms: 1000, server_time_ms: 1_000_000 });
  // The clock says 10 s of flight, but the last tick was at 1 s: draw at most 1.3 s.
  assert.equal(model.flightElapsed(st, 1_009_000), 1000 + model.MAX_TICKS_AHEAD * 100);
  const v = model.liveView(st, 1_009_000);
  assert.equal(v.phase, 'flying');
  assert.equal(v.x100, model.curveX100(st.growthPerMs, 1300));
  // …and never shows less than the tick the node sent.
  assert.equal(model.liveView(st, 999_000).x100, 141);
  assert.equal(model.curveX100(Math.LN2 / 2000, 2000), 200);
  assert.equal(model.curveX100(1, 1e6), 100, 'an overflowing curve falls back to 1.00×');
});

test('a tick reports a phase change only once', () => {
  const st = model.newState(null);
  model.applyRoundOpen(st, { round: 9, opened_at_ms: 0, betting_closes_at_ms: 10 });
  assert.equal(model.applyTick(st, { round: 9, multiplier_x100: 101, elapsed_ms: 100 }), true);
  assert.equal(model.applyTick(st, { round: 9, multiplier_x100: 102, elapsed_ms: 200 }), false);
  model.applyCrashed(st, { round: 9, crash_x100: 102, hash: 'h' });
  assert.equal(model.applyTick(st, { round: 9, multiplier_x100: 103, elapsed_ms: 300 }), false);
  assert.equal(st.round.phase, 'crashed', 'a late tick does not revive a crashed round');
});

test('the server clock only moves forward on plain samples and follows pongs', () => {
  let local = 1000;
  const c = new ServerClock(() => local);
  c.sample(5000);
  assert.equal(c.now(), 5000);
  c.sample(4000); // an older stamp, delayed in transit: a lower bound, ignored
  assert.equal(c.now(), 5000);
  c.sample(6000);
  assert.equal(c.now(), 6000);
  c.sample(10_000, 200); // a pong: server time + half the round trip
  assert.equal(c.now(), 10_100);
  local = 2000;
  assert.equal(c.now(), 11_100);
  c.reset();
  assert.equal(c.have, false);
});

test('reconnect backoff doubles from 0.5 s to 10 s with ±20% jitter', () => {
  assert.equal(backoffMs(0, 0.5), BACKOFF_MIN_MS);
  assert.equal(backoffMs(1, 0.5), 2 * BACKOFF_MIN_MS);
  assert.equal(backoffMs(30, 0.5), BACKOFF_MAX_MS);
  assert.equal(backoffMs(0, 0), 0.8 * BACKOFF_MIN_MS);
  assert.ok(backoffMs(0, 0.999999) < 1.2 * BACKOFF_MIN_MS);
});

test('graph axes step on round numbers', () => {
  assert.equal(niceStep(10, 5), 2);
  assert.equal(niceStep(12.5, 5), 2.5);
  assert.equal(niceStep(1, 5), 0.2);
  assert.equal(niceStep(60, 6), 10);
});

test('the lobby: socket URLs, join URLs, the median ping and the nearest table', () => {
  assert.equal(lobby.wsUrlOf('https://eu.example.com/crash/'), 'wss://eu.example.com/crash/ws');
  assert.equal(lobby.wsUrlOf('http://127.0.0.1:8080/'), 'ws://127.0.0.1:8080/ws');
  const here = 'http://127.0.0.1:9000/lobby';
  assert.equal(lobby.joinUrlOf({ table: 'a', public_url: 'https://x/' }, 'b', here), 'https://x/');
  assert.equal(lobby.joinUrlOf({ table: 'b', public_url: null }, 'b', here), 'http://127.0.0.1:9000/');
  assert.equal(lobby.joinUrlOf({ table: 'c', public_url: null }, 'b', here), null);
  assert.equal(lobby.median([30, 10, 20]), 20);
  assert.equal(lobby.median([10, 20]), 15);
  assert.equal(lobby.median([]), null);
  const rows = [
    { table: 'far', url: 'u1', players_online: 9 },
    { table: 'near', url: 'u2', players_online: 1 },
    { table: 'down', url: 'u3', players_online: 50 },
    { table: 'tie', url: 'u4', players_online: 2 },
    { table: 'nolink', url: null, players_online: 99 },
  ];
  const rtts = new Map([['u1', 80], ['u2', 12], ['u3', null], ['u4', 12]]);
  assert.equal(lobby.nearest(rows, rtts).row.table, 'tie', 'a tie goes to the livelier table');
  rtts.set('u4', 40);
  assert.equal(lobby.nearest(rows, rtts).row.table, 'near');
  assert.equal(lobby.nearest(rows, new Map()), null);
});
