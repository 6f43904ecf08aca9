// The game page's view: the DOM it writes (account, controls, tables, toasts) and the stage's live
// numbers. It reads the model and never changes it, except for one-shot display flags (a bet's
// `justWon` flash).

import { ERROR_TEXT } from './errors.js';
import {
  formatBp, formatCredits, formatMult, formatSigned, groupInt, payoutOf, pillClass, shortHash,
} from './format.js';
import { isMine, liveView, myOpenBets, pendingBet, pendingCashOut } from './state.js';

/** Rows in the round's bet table; the summary line counts every bet. */
const ROUND_BETS_SHOWN = 100;
/** Rows in "My bets", and how many the page asks GET /me/bets for. */
export const MY_BETS_KEEP = 12;

const $ = (id) => document.getElementById(id);
/** Every element the page writes, looked up once: a module runs after the document is parsed. */
export const el = {
  conn: $('conn'), connText: $('conn-text'), tableName: $('table-name'),
  account: $('account'), accountName: $('account-name'), balance: $('balance'), logout: $('logout'),
  strip: $('strip'), canvas: $('canvas'), roundTag: $('round-tag'),
  phase: $('phase'), multiplier: $('multiplier'), statusLine: $('status-line'),
  progress: $('progress'), progressBar: $('progress-bar'),
  authPanel: $('auth-panel'), authForm: $('auth-form'), username: $('username'), password: $('password'),
  authError: $('auth-error'), login: $('login'), register: $('register'),
  betPanel: $('bet-panel'), betForm: $('bet-form'), stake: $('stake'), auto: $('auto'),
  stakeHalf: $('stake-half'), stakeDouble: $('stake-double'), autoTwo: $('auto-2'), autoOff: $('auto-off'),
  bet: $('bet'), cashout: $('cashout'), betNote: $('bet-note'),
  myBets: $('my-bets'), myBetsEmpty: $('my-bets-empty'),
  receipts: $('receipts'), receiptsEmpty: $('receipts-empty'), receiptsDownload: $('receipts-download'),
  roundBets: $('round-bets'), roundBetsEmpty: $('round-bets-empty'), betsSummary: $('bets-summary'),
  history: $('history'), historyEmpty: $('history-empty'),
  fairTerminating: $('fair-terminating'), fairSalt: $('fair-salt'), fairEdge: $('fair-edge'),
  fairMax: $('fair-max'), fairLength: $('fair-length'),
  leaderboard: $('leaderboard'), leaderboardEmpty: $('leaderboard-empty'),
  statRounds: $('stat-rounds'), statBets: $('stat-bets'), statPlayers: $('stat-players'),
  statWagered: $('stat-wagered'), statPaid: $('stat-paid'), statHouse: $('stat-house'),
  chat: $('chat'), chatEmpty: $('chat-empty'), chatForm: $('chat-form'), chatText: $('chat-text'),
  chatSend: $('chat-send'), chatNote: $('chat-note'),
  toasts: $('toasts'),
};

// Player-facing text per error code, served by the node from its error table (/errors.js),
// so the page and the server never disagree on the codes.
export function errorTitle(code) {
  return ERROR_TEXT[code] || (code ? code.replace(/_/g, ' ') : 'Error');
}

let toastSeq = 0;
export function toast({ kind = 'info', title, msg = '', code = '', timeout }) {
  const t = document.createElement('div');
  t.className = 'toast ' + kind;
  t.setAttribute('data-testid', 'toast');
  toastSeq += 1;
  t.setAttribute('data-seq', String(toastSeq));
  document.body.setAttribute('data-toast-seq', String(toastSeq));
  if (code) t.setAttribute('data-code', code);
  t.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const body = document.createElement('div');
  body.className = 't-body';
  const tt = document.createElement('div');
  tt.className = 't-title';
  tt.textContent = title;
  body.append(tt);
  if (msg && msg !== title) {
    const m = document.createElement('div');
    m.className = 't-msg';
    m.textContent = msg;
    body.append(m);
  }
  if (code) {
    const c = document.createElement('div');
    c.className = 'code';
    c.textContent = code;
    body.append(c);
  }
  const close = document.createElement('button');
  close.type = 'button';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  const dismiss = () => {
    t.classList.add('leaving');
    setTimeout(() => t.remove(), 260);
  };
  close.addEventListener('click', dismiss);
  t.append(body, close);
  el.toasts.append(t);
  while (el.toasts.children.length > 4) el.toasts.firstElementChild.remove();
  setTimeout(dismiss, timeout || (kind === 'error' ? 8000 : 4500));
}
export function toastError(code, message) {
  toast({ kind: 'error', title: errorTitle(code), msg: message, code });
}

export function bumpBalance(delta) {
  el.balance.classList.remove('bump-up', 'bump-down');
  void el.balance.offsetWidth; // restart the animation
  el.balance.classList.add(delta > 0 ? 'bump-up' : 'bump-down');
}

export function showAuthError(text) {
  el.authError.textContent = text;
  el.authError.hidden = !text;
}

export function setConn(kind, text) {
  el.conn.setAttribute('data-state', kind);
  el.connText.textContent = text;
}

export function renderAll(st) {
  renderAccount(st);
  renderControls(st);
  renderBets(st);
  renderMyBets(st);
  renderHistory(st);
  renderFairness(st);
  renderChat(st);
  el.tableName.textContent = st.table ? 'table ' + st.table : '';
}

export function renderAccount(st) {
  const you = st.you;
  el.account.hidden = !you;
  el.authPanel.hidden = !!you;
  el.betPanel.hidden = !you;
  if (you) {
    el.accountName.textContent = you.username;
    el.balance.textContent = formatCredits(you.balance);
    el.balance.setAttribute('data-minor', String(you.balance));
  }
}

export function renderControls(st) {
  if (!st.you) return;
  const r = st.round;
  const open = myOpenBets(st);
  const betting = !!r && r.phase === 'betting' && st.clock.now() < r.betting_closes_at_ms;
  const flying = !!r && r.phase === 'flying';
  if (flying && open.length > 0) {
    el.bet.hidden = true;
    el.cashout.hidden = false;
    el.cashout.disabled = open.every((b) => pendingCashOut(st, b.bet_id)) || !st.connected;
  } else {
    el.bet.hidden = false;
    el.cashout.hidden = true;
    const busy = pendingBet(st);
    el.bet.disabled = !betting || busy || !st.connected;
    let label = 'Place bet';
    if (!st.connected) label = 'Reconnecting…';
    else if (busy) label = 'Placing bet…';
    else if (!betting) label = flying || (r && r.phase === 'crashed') ? 'Waiting for next round' : 'Waiting for the table';
    else if (open.length > 0) label = 'Place another bet';
    setText(el.bet, label);
  }
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function td(text, cls) {
  const c = document.createElement('td');
  if (cls) c.className = cls;
  if (text instanceof Node) c.append(text);
  else c.textContent = text;
  return c;
}
function span(text, cls) {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}

export function renderBets(st) {
  const bets = Array.from(st.bets.values()).reverse();
  // A busy round holds thousands of bets: the table shows the latest ones, the summary counts all.
  const rows = bets.slice(0, ROUND_BETS_SHOWN).map((b) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'round-bet-row');
    tr.setAttribute('data-status', b.status);
    if (isMine(st, b)) tr.className = 'me';
    if (b.justWon) {
      tr.classList.add('flash');
      b.justWon = false;
    }
    tr.append(td(span(b.username, 'player-name')));
    tr.append(td(formatCredits(b.stake), 'r'));
    let co;
    if (b.status === 'won') co = span(formatMult(b.cashout_x100), 'status won');
    else if (b.status === 'lost') co = span('lost', 'status lost');
    else if (b.status === 'refunded') co = span('refunded', 'status refunded');
    else co = span(b.auto_cashout_x100 ? 'auto ' + formatMult(b.auto_cashout_x100) : '—', 'muted');
    tr.append(td(co, 'r'));
    tr.append(td(b.status === 'won' ? span(formatCredits(b.payout), 'status won') : span('—', 'muted'), 'r'));
    return tr;
  });
  el.roundBets.replaceChildren(...rows);
  el.roundBetsEmpty.hidden = rows.length > 0;
  let wagered = st.unseen.wagered;
  for (const b of bets) wagered += b.stake;
  const count = bets.length + st.unseen.count;
  el.betsSummary.textContent = count
    ? count + (count === 1 ? ' bet · ' : ' bets · ') + formatCredits(wagered) + ' wagered'
    : '';
}

export function renderMyBets(st) {
  const merged = new Map();
  if (st.you) {
    const live = Array.from(st.bets.values()).filter((b) => isMine(st, b)).reverse();
    for (const b of live) merged.set(b.bet_id, b);
    for (const b of st.myRecent) if (!merged.has(b.bet_id)) merged.set(b.bet_id, b);
  }
  const list = Array.from(merged.values())
    .sort((a, b) => b.round - a.round)
    .slice(0, MY_BETS_KEEP);
  const rows = list.map((b) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'my-bet-row');
    tr.setAttribute('data-bet-id', b.bet_id);
    tr.setAttribute('data-round', String(b.round));
    tr.setAttribute('data-status', b.status);
    tr.append(td('#' + b.round, 'muted'));
    tr.append(td(formatCredits(b.stake), 'r'));
    tr.append(td(b.auto_cashout_x100 ? formatMult(b.auto_cashout_x100) : '—', 'r muted'));
    let result;
    let profit = null;
    if (b.status === 'won') {
      result = span('Won @ ' + formatMult(b.cashout_x100), 'status won');
      profit = (b.payout || 0) - b.stake;
    } else if (b.status === 'lost') {
      result = span('Lost', 'status lost');
      profit = -b.stake;
    } else if (b.status === 'refunded') {
      result = span('Refunded', 'status refunded');
      profit = 0;
    } else {
      result = span('In play', 'status open');
    }
    tr.append(td(result));
    tr.append(td(profit == null ? span('—', 'muted') : span(formatSigned(profit), 'status ' + (profit > 0 ? 'won' : profit < 0 ? 'lost' : 'refunded')), 'r'));
    return tr;
  });
  el.myBets.replaceChildren(...rows);
  el.myBetsEmpty.hidden = rows.length > 0;
  el.myBetsEmpty.textContent = st.you ? 'No bets yet. Place one during the betting window.' : 'Log in to see your bets.';
}

function verifyHref(hash) {
  return 'verify?hash=' + encodeURIComponent(hash);
}

export function renderHistory(st) {
  const rows = st.history.map((h) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'history-row');
    tr.setAttribute('data-round', String(h.number));
    if (h.crash_x100 != null) tr.setAttribute('data-crash-x100', String(h.crash_x100));
    if (h.hash) tr.setAttribute('data-hash', h.hash);
    tr.append(td('#' + h.number, 'muted'));
    tr.append(td(span(h.voided ? 'voided' : formatMult(h.crash_x100), 'pill ' + pillClass(h.voided ? null : h.crash_x100)), 'r'));
    if (h.hash) {
      const a = document.createElement('a');
      a.className = 'hash-link';
      a.href = verifyHref(h.hash);
      a.title = 'Verify round #' + h.number + ': ' + h.hash;
      a.setAttribute('data-testid', 'verify-link');
      a.textContent = shortHash(h.hash);
      tr.append(td(a));
    } else {
      tr.append(td(span('refunded', 'muted')));
    }
    return tr;
  });
  el.history.replaceChildren(...rows);
  el.historyEmpty.hidden = rows.length > 0;

  const pills = st.history.slice(0, 24).map((h) => {
    const a = document.createElement(h.hash ? 'a' : 'span');
    a.className = 'pill ' + pillClass(h.voided ? null : h.crash_x100);
    a.textContent = h.voided ? 'void' : formatMult(h.crash_x100);
    if (h.hash) {
      a.href = verifyHref(h.hash);
      a.title = 'Round #' + h.number + ' — verify';
    }
    return a;
  });
  el.strip.replaceChildren(...pills);
}

export function renderFairness(st) {
  const f = st.fairness;
  if (!f) return;
  el.fairTerminating.textContent = f.terminating_hash;
  el.fairSalt.textContent = f.salt;
  el.fairEdge.textContent = formatBp(f.house_edge_bp);
  el.fairMax.textContent = formatMult(f.max_x100);
  el.fairLength.textContent = groupInt(f.chain_length) + ' rounds';
}

let lastControlsPhase = '';
/**
 * The stage's live numbers at this animation frame; returns the view the graph draws.
 * `reconnectAt`: when the socket's next attempt starts (0 when connected), for the countdown.
 */
export function updateStage(st, reconnectAt) {
  const r = st.round;
  const now = st.clock.now();
  const v = liveView(st, now);
  el.phase.setAttribute('data-phase', v.phase);
  el.multiplier.setAttribute('data-phase', v.phase);
  el.multiplier.setAttribute('data-x100', String(v.x100));
  setText(el.roundTag, r ? 'Round #' + r.number : '');
  el.phase.setAttribute('data-round', r ? String(r.number) : '');
  let phaseText = '';
  let status = '';
  let crashLine = false;
  let progress = null;
  switch (v.phase) {
    case 'connecting':
      phaseText = 'Connecting';
      break;
    case 'idle':
      phaseText = 'Waiting for the table';
      status = st.connected ? 'No round is running right now' : '';
      break;
    case 'betting': {
      const remaining = Math.max(0, r.betting_closes_at_ms - now);
      const total = Math.max(1, r.betting_closes_at_ms - (r.opened_at_ms || r.betting_closes_at_ms - 5000));
      phaseText = 'Place your bets';
      status = remaining > 0 ? 'Starts in ' + (remaining / 1000).toFixed(1) + ' s' : 'Starting…';
      progress = remaining / total;
      el.phase.setAttribute('data-remaining-ms', String(Math.round(remaining)));
      break;
    }
    case 'flying': {
      phaseText = 'In flight';
      const open = myOpenBets(st);
      if (open.length) {
        let total = 0;
        for (const b of open) total += payoutOf(b.stake, b.auto_cashout_x100 ? Math.min(v.x100, b.auto_cashout_x100) : v.x100);
        status = 'Cash out now for ' + formatCredits(total);
      }
      break;
    }
    case 'crashed': {
      crashLine = true;
      status = 'CRASHED @ ' + formatMult(v.x100);
      const next = r.next_round_at_ms != null ? Math.max(0, r.next_round_at_ms - now) : null;
      phaseText = next != null && next > 0 ? 'Next round in ' + Math.ceil(next / 1000) + ' s' : 'Round over';
      break;
    }
    case 'voided':
      phaseText = 'Round voided';
      status = 'All stakes refunded';
      break;
    default:
      phaseText = v.phase;
  }
  if (!st.connected && v.phase !== 'connecting') {
    // Frozen state from before the drop: say so instead of counting down to nothing.
    phaseText = 'Connection lost · reconnecting';
    if (!crashLine) status = '';
    progress = null;
  }
  if (v.phase !== 'betting') el.phase.removeAttribute('data-remaining-ms');
  setText(el.phase, phaseText);
  setText(el.multiplier, formatMult(v.x100));
  setText(el.statusLine, status);
  el.statusLine.classList.toggle('crash', crashLine);
  el.progress.hidden = progress == null;
  if (progress != null) el.progressBar.style.transform = 'scaleX(' + Math.min(1, Math.max(0, progress)).toFixed(4) + ')';
  if (el.cashout.hidden === false && v.phase === 'flying') {
    const open = myOpenBets(st);
    let total = 0;
    for (const b of open) total += payoutOf(b.stake, v.x100);
    setText(el.cashout, 'Cash out ' + formatCredits(total));
  }
  // The bet button depends on the clock (the window closes) — refresh it when the phase flips.
  const key = v.phase + (v.phase === 'betting' && now >= r.betting_closes_at_ms ? '-closed' : '');
  if (key !== lastControlsPhase) {
    lastControlsPhase = key;
    renderControls(st);
  }
  if (el.conn.getAttribute('data-state') === 'down' && reconnectAt) {
    const s = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
    setText(el.connText, s > 0 ? 'Reconnecting in ' + s + ' s' : 'Reconnecting…');
  }
  return v;
}

const RECEIPT_KINDS = { bet: 'Bet', cash_out: 'Cash-out', auto_cash_out: 'Auto cash-out' };

/** The receipts this browser keeps (newest first), as rows; every value is set as text. */
export function renderReceipts(list) {
  const rows = list.slice(0, 100).map((r) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'receipt-row');
    tr.setAttribute('data-bet-id', String(r.bet_id));
    tr.setAttribute('data-kind', String(r.kind));
    tr.append(td('#' + r.round, 'muted'));
    tr.append(td(RECEIPT_KINDS[r.kind] || String(r.kind)));
    tr.append(td(formatCredits(r.stake), 'r'));
    tr.append(td(r.multiplier_x100 ? formatMult(r.multiplier_x100) : '—', 'r muted'));
    tr.append(td(r.payout != null ? formatCredits(r.payout) : '—', 'r'));
    tr.append(td(span(shortHash(r.signature), 'mono muted')));
    return tr;
  });
  el.receipts.replaceChildren(...rows);
  el.receiptsEmpty.hidden = rows.length > 0;
}

/** The leaderboard (GET /leaderboard rows, best first). Names are set as text, never as HTML. */
export function renderLeaderboard(rows) {
  const trs = rows.map((r, i) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'leaderboard-row');
    tr.setAttribute('data-username', r.username);
    tr.setAttribute('data-profit', String(r.profit));
    tr.append(td(String(i + 1), 'r muted'));
    tr.append(td(r.username));
    tr.append(td(span(formatSigned(r.profit), 'status ' + (r.profit > 0 ? 'won' : r.profit < 0 ? 'lost' : 'refunded')), 'r'));
    tr.append(td(formatCredits(r.wagered), 'r'));
    tr.title = groupInt(r.bets) + (r.bets === 1 ? ' bet' : ' bets');
    return tr;
  });
  el.leaderboard.replaceChildren(...trs);
  el.leaderboardEmpty.hidden = trs.length > 0;
}

/** The table's totals (GET /stats). */
export function renderStats(s) {
  el.statRounds.textContent = groupInt(s.rounds) + (s.voided_rounds ? ' (' + groupInt(s.voided_rounds) + ' voided)' : '');
  el.statBets.textContent = groupInt(s.bets);
  el.statPlayers.textContent = groupInt(s.players);
  el.statWagered.textContent = formatCredits(s.wagered);
  el.statPaid.textContent = formatCredits(s.paid_out);
  el.statHouse.textContent = formatSigned(s.house_result);
  el.statHouse.dataset.minor = String(s.house_result);
}

/**
 * The table chat. Every name and line is set as text, never parsed as HTML: a line reading
 * `<img src=x onerror=…>` shows those characters and runs nothing.
 */
export function renderChat(st) {
  const atBottom = el.chat.scrollHeight - el.chat.scrollTop - el.chat.clientHeight < 24;
  const items = st.chat.map((line) => {
    const li = document.createElement('li');
    li.setAttribute('data-testid', 'chat-line');
    const who = document.createElement('span');
    who.className = 'chat-who';
    who.textContent = line.username;
    const text = document.createElement('span');
    text.className = 'chat-text';
    text.textContent = line.text;
    li.append(who, text);
    if (line.at_ms) li.title = new Date(line.at_ms).toLocaleTimeString();
    return li;
  });
  el.chat.replaceChildren(...items);
  el.chatEmpty.hidden = items.length > 0;
  if (atBottom) el.chat.scrollTop = el.chat.scrollHeight;
  const canPost = Boolean(st.you) && st.connected;
  el.chatText.disabled = !canPost;
  el.chatSend.disabled = !canPost;
  el.chatNote.textContent = st.you ? '' : 'Log in to chat.';
}
