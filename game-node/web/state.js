// The game page's model: what the page knows of the table, and how each server message changes
// it. Everything shown is derived from this and re-derived from each `snapshot`. No DOM here, so
// Node runs these functions in the unit tests as they are.

import { ServerClock } from './socket.js';

export const HISTORY_KEEP = 50;
/** Interpolation never runs further ahead of the last tick than this many tick intervals. */
export const MAX_TICKS_AHEAD = 3;
/** The growth rate until the snapshot says otherwise: doubling every 11.5 s, the node's default. */
const DEFAULT_GROWTH_PER_MS = Math.LN2 / 11_500;

export function newState(token) {
  return {
    token,
    you: null,
    table: '',
    round: null, // RoundView-like; plus next_round_at_ms once crashed
    bets: new Map(), // bet_id → BetView, this round, in arrival order
    // Bets the snapshot counted but did not carry (it holds only the latest 200 and ours).
    unseen: { count: 0, wagered: 0 },
    history: [], // newest first: { number, crash_x100, hash, voided }
    fairness: null,
    growthPerMs: DEFAULT_GROWTH_PER_MS,
    tickMs: 100,
    lastTick: null, // { round, x100, elapsed }
    myRecent: [], // BetView[] from GET /me/bets, newest first
    pending: new Map(), // request_id → { msg, sentAt, kind }, shared with the socket
    connected: false,
    clock: new ServerClock(),
    chat: [], // { username, text, at_ms }, oldest first, at most CHAT_KEEP
  };
}

/** Chat lines the page keeps (the snapshot brings the table's latest 50). */
export const CHAT_KEEP = 100;

/** A `chat` event: appended, the oldest dropped past CHAT_KEEP. */
export function applyChat(st, m) {
  if (typeof m.text !== 'string' || typeof m.username !== 'string') return false;
  st.chat.push({ username: m.username, text: m.text, at_ms: m.at_ms });
  if (st.chat.length > CHAT_KEEP) st.chat.splice(0, st.chat.length - CHAT_KEEP);
  return true;
}

/** The multiplier (hundredths) the curve m(t) = e^(g·t) shows after `elapsedMs` of flight. */
export function curveX100(growthPerMs, elapsedMs) {
  const m = Math.floor(100 * Math.exp(growthPerMs * elapsedMs));
  return Number.isFinite(m) ? Math.max(100, m) : 100;
}

export function historyEntry(r) {
  if (!r || r.number == null) return null;
  const voided = r.phase === 'voided' || r.status === 'voided' || r.crash_x100 == null;
  return { number: r.number, crash_x100: voided ? null : r.crash_x100, hash: r.hash || null, voided };
}

function freshRound(st) {
  st.lastTick = null;
  st.bets = new Map();
  st.unseen = { count: 0, wagered: 0 };
}

export function applySnapshot(st, s) {
  st.connected = true;
  st.table = s.table || '';
  st.growthPerMs = typeof s.growth_per_ms === 'number' && s.growth_per_ms > 0 ? s.growth_per_ms : st.growthPerMs;
  st.tickMs = s.tick_interval_ms || 100;
  st.round = s.round ? { ...s.round } : null;
  st.lastTick = null;
  st.bets = new Map();
  for (const b of s.bets || []) st.bets.set(b.bet_id, b);
  let carried = 0;
  for (const b of st.bets.values()) carried += b.stake;
  st.unseen = {
    count: Math.max(0, (s.bets_total ?? st.bets.size) - st.bets.size),
    wagered: Math.max(0, (s.bets_wagered ?? carried) - carried),
  };
  st.history = (s.history || []).map(historyEntry).filter(Boolean).slice(0, HISTORY_KEEP);
  st.fairness = s.fairness || null;
  // Every snapshot is the whole truth, the chat's history included (a resync may skip lines).
  st.chat = [];
  for (const line of Array.isArray(s.chat) ? s.chat : []) applyChat(st, line);
}

export function applyRoundOpen(st, m) {
  st.round = {
    number: m.round,
    phase: 'betting',
    opened_at_ms: m.opened_at_ms,
    betting_closes_at_ms: m.betting_closes_at_ms,
    started_at_ms: m.betting_closes_at_ms,
    crashed_at_ms: null,
    crash_x100: null,
    hash: null,
  };
  freshRound(st);
}

/** The round `number`, started afresh if the page missed its opening (joined mid-flight). */
export function ensureRound(st, number) {
  if (!st.round || st.round.number !== number) {
    st.round = {
      number, phase: 'flying', opened_at_ms: null, betting_closes_at_ms: null,
      started_at_ms: null, crashed_at_ms: null, crash_x100: null, hash: null,
    };
    freshRound(st);
  }
  return st.round;
}

export function applyFlying(st, m) {
  const r = ensureRound(st, m.round);
  r.phase = 'flying';
  r.started_at_ms = m.started_at_ms;
}

/** A tick; true when it changed the phase (the page re-renders then, not on every tick). */
export function applyTick(st, m) {
  const r = ensureRound(st, m.round);
  if (r.phase === 'crashed' || r.phase === 'voided') return false;
  const flipped = r.phase !== 'flying';
  r.phase = 'flying';
  if (r.started_at_ms == null && typeof m.server_time_ms === 'number') r.started_at_ms = m.server_time_ms - m.elapsed_ms;
  st.lastTick = { round: m.round, x100: m.multiplier_x100, elapsed: m.elapsed_ms };
  return flipped;
}

function addHistory(st, entry) {
  st.history = [entry, ...st.history.filter((h) => h.number !== entry.number)].slice(0, HISTORY_KEEP);
}

export function applyCrashed(st, m) {
  const r = ensureRound(st, m.round);
  r.phase = 'crashed';
  r.crash_x100 = m.crash_x100;
  r.hash = m.hash;
  r.crashed_at_ms = m.crashed_at_ms;
  r.next_round_at_ms = m.next_round_at_ms;
  for (const b of st.bets.values()) {
    if (b.round === m.round && b.status === 'open') b.status = 'lost';
  }
  addHistory(st, { number: m.round, crash_x100: m.crash_x100, hash: m.hash, voided: false });
}

export function applyVoided(st, m) {
  const r = ensureRound(st, m.round);
  r.phase = 'voided';
  r.void_reason = m.reason;
  for (const b of st.bets.values()) {
    if (b.round === m.round && b.status === 'open') b.status = 'refunded';
  }
  addHistory(st, { number: m.round, crash_x100: null, hash: null, voided: true });
}

/** New bets of this round (a batch or one). A bet already settled here keeps its settlement. */
export function applyBets(st, bets) {
  for (const bet of bets) {
    if (!bet || (st.round && bet.round !== st.round.number)) continue;
    const known = st.bets.get(bet.bet_id);
    st.bets.set(bet.bet_id, known && known.status !== 'open' ? known : bet);
  }
}

export function applyCashedOut(st, m) {
  const b = st.bets.get(m.bet_id);
  if (!b) return;
  b.status = 'won';
  b.cashout_x100 = m.multiplier_x100;
  b.payout = m.payout;
  b.justWon = true;
}

export function isMine(st, bet) {
  return !!st.you && bet.username === st.you.username;
}

export function myOpenBets(st) {
  if (!st.you || !st.round) return [];
  const out = [];
  for (const b of st.bets.values()) {
    if (isMine(st, b) && b.round === st.round.number && b.status === 'open') out.push(b);
  }
  return out;
}

export function pendingCashOut(st, betId) {
  for (const p of st.pending.values()) if (p.kind === 'cash_out' && p.msg.bet_id === betId) return true;
  return false;
}

export function pendingBet(st) {
  for (const p of st.pending.values()) if (p.kind === 'bet') return true;
  return false;
}

/** Milliseconds of flight to draw at server time `now`, clamped to just ahead of the last tick. */
export function flightElapsed(st, now) {
  const r = st.round;
  let e = r && r.started_at_ms != null ? now - r.started_at_ms : 0;
  const t = st.lastTick;
  if (t && r && t.round === r.number) {
    const ahead = MAX_TICKS_AHEAD * st.tickMs;
    e = Math.min(Math.max(e, t.elapsed), t.elapsed + ahead);
  }
  return Math.max(0, e);
}

/** What the stage shows at server time `now`: { phase, x100, elapsed }. */
export function liveView(st, now) {
  const r = st.round;
  if (!st.connected && !r) return { phase: 'connecting', x100: 100, elapsed: 0 };
  if (!r || r.phase === 'idle') return { phase: 'idle', x100: 100, elapsed: 0 };
  if (r.phase === 'betting') return { phase: 'betting', x100: 100, elapsed: 0 };
  if (r.phase === 'flying') {
    const elapsed = flightElapsed(st, now);
    let x100 = curveX100(st.growthPerMs, elapsed);
    if (st.lastTick && st.lastTick.round === r.number) x100 = Math.max(x100, st.lastTick.x100);
    return { phase: 'flying', x100, elapsed };
  }
  if (r.phase === 'crashed') {
    const x100 = r.crash_x100 || 100;
    let elapsed = r.crashed_at_ms != null && r.started_at_ms != null ? r.crashed_at_ms - r.started_at_ms : null;
    if (elapsed == null || elapsed < 0) elapsed = Math.log(x100 / 100) / st.growthPerMs;
    return { phase: 'crashed', x100, elapsed };
  }
  return { phase: r.phase, x100: 100, elapsed: 0 };
}
