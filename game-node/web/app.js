// crashfleet game page (/): account, betting, the live multiplier graph, the round's bets, history
// and the fairness commitment. ES modules with no build step, served by the node under a strict
// CSP (no inline code or styles; the graph is a <canvas>):
//
//   app.js     this file: wiring — REST calls, server messages to the model, player actions
//   state.js   the model and how each server message changes it (no DOM)
//   render.js  the view: DOM, toasts, the stage's live numbers
//   graph.js   the canvas graph
//   socket.js  the WebSocket: reconnects, commands retried by request id, pings, server clock
//   format.js  money and multiplier formatting and exact parsing (shared with the verifier)
//   errors.js  the player-facing text per error code, served by the node from its error table
//   receipts.js the player's signed receipts, kept in this browser
//
// The chat comes over the socket (`chat` events, the latest lines in each snapshot) and is shown
// as text only.
// The leaderboard and the table's totals come from GET /leaderboard and /stats once the page
// connects and after each round ends (they change only when bets settle).
//
// Money rules the page keeps: amounts are integers in minor units (100 = 1.00 credit) and
// multipliers integers in hundredths (250 = 2.50x). Typed amounts are parsed as decimal strings,
// never multiplied as floats; floats are only used to *draw* the curve between server ticks.

import { formatCredits, formatMult, newRequestId, parseHundredths, plainAmount } from './format.js';
import { drawGraph } from './graph.js';
import {
  MY_BETS_KEEP, bumpBalance, el, errorTitle, renderAll, renderAccount, renderBets, renderControls,
  renderChat, renderLeaderboard, renderMyBets, renderReceipts, renderStats, setConn, showAuthError, toast,
  toastError, updateStage,
} from './render.js';
import { loadReceipts, receiptsBlob, saveReceipt } from './receipts.js';
import { TableSocket } from './socket.js';
import * as model from './state.js';

const TOKEN_KEY = 'crashfleet.token';
const STAKE_KEY = 'crashfleet.stake';
const AUTO_KEY = 'crashfleet.auto';
const EXPIRED = 'Your session expired — please log in again';

const state = model.newState(localStorage.getItem(TOKEN_KEY));

const socket = new TableSocket(
  {
    token: () => state.token,
    message: onMessage,
    status: setConn,
    closed: () => {
      state.connected = false;
      renderControls(state);
    },
    // Refused before opening while we hold a token: an expired token is the one cause we can
    // find and fix; then watch the table anonymously right away.
    refused: async () => {
      const r = await api('/me', { auth: true });
      if (r.status !== 401) return false;
      setToken(null);
      state.you = null;
      renderAll(state);
      toast({ kind: 'info', title: EXPIRED });
      return true;
    },
    gaveUp: () => {
      toast({ kind: 'error', title: 'No answer from the table', msg: 'Check "My bets" — a retry never moves money twice.' });
    },
    changed: () => renderControls(state),
  },
  { pending: state.pending, clock: state.clock },
);

// ------------------------------------------------------------------------------------------
// REST.

async function api(path, { method = 'GET', body, auth = false } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && state.token) headers.Authorization = 'Bearer ' + state.token;
  let res;
  try {
    // Relative to the page, so the table works under a path prefix (a Gateway's route).
    res = await fetch('api/v1' + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    return { ok: false, status: 0, body: { code: 'unavailable', message: 'The node cannot be reached' } };
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  return { ok: res.ok, status: res.status, body: data };
}

// ------------------------------------------------------------------------------------------
// Account.

function setToken(token) {
  state.token = token;
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

function setYou(you) {
  const before = state.you ? state.you.balance : null;
  state.you = you;
  if (you && before != null && you.balance !== before) bumpBalance(you.balance - before);
  renderAccount(state);
  renderControls(state);
}

function setBalance(balance) {
  if (!state.you) return;
  setYou({ ...state.you, balance });
}

function logout(reason) {
  setToken(null);
  state.you = null;
  state.myRecent = [];
  state.pending.clear();
  renderAll(state);
  if (reason) toast({ kind: 'info', title: reason });
  socket.reconnectNow();
}

/** The logout button: ends every session of this player on the server, then forgets the token. */
async function logOut() {
  if (state.token) await api('/auth/logout', { method: 'POST', auth: true });
  logout('');
}

function validateCredentials(username, password) {
  if (!/^[A-Za-z0-9_.-]{3,32}$/.test(username)) return errorTitle('invalid_username');
  if (password.length < 8 || password.length > 128) return errorTitle('invalid_password');
  return null;
}

let authBusy = false;
async function authenticate(kind) {
  if (authBusy) return;
  const username = el.username.value.trim();
  const password = el.password.value;
  const problem = validateCredentials(username, password);
  if (problem) {
    showAuthError(problem);
    return;
  }
  authBusy = true;
  el.login.disabled = el.register.disabled = true;
  showAuthError('');
  const r = await api('/auth/' + kind, { method: 'POST', body: { username, password } });
  authBusy = false;
  el.login.disabled = el.register.disabled = false;
  if (!r.ok || !r.body || !r.body.token) {
    const code = r.body && r.body.code;
    showAuthError(errorTitle(code) + (code ? ' (' + code + ')' : ''));
    return;
  }
  setToken(r.body.token);
  el.password.value = '';
  setYou(r.body.player);
  if (kind === 'register') {
    toast({ kind: 'ok', title: 'Welcome, ' + r.body.player.username, msg: 'Your balance is ' + formatCredits(r.body.player.balance) + ' credits.' });
  }
  refreshMyBets();
  // Authenticate the open socket in place; if there is none, the next one does on opening.
  if (!socket.send({ type: 'auth', token: r.body.token })) socket.reconnectNow();
}

async function refreshMyBets() {
  if (!state.token) return;
  const r = await api('/me/bets?limit=' + MY_BETS_KEEP, { auth: true });
  if (r.ok && Array.isArray(r.body)) {
    state.myRecent = r.body;
    renderMyBets(state);
  } else if (r.status === 401) {
    logout(EXPIRED);
  }
}

/** Rows the page shows of GET /leaderboard. */
const LEADERBOARD_ROWS = 10;
/** How long after a crash or a void the page asks for the new totals: the settlement is written by
 * then, and every page of a table asking at once is spread over this much. */
const BOARD_DELAY_MS = 500;
let boardTimer = null;

/** The leaderboard and the table's totals, fetched once for a burst of calls. */
function refreshBoard(delay = 0) {
  if (boardTimer) return;
  boardTimer = setTimeout(async () => {
    boardTimer = null;
    const [board, stats] = await Promise.all([
      api('/leaderboard?limit=' + LEADERBOARD_ROWS),
      api('/stats'),
    ]);
    if (board.ok && Array.isArray(board.body)) renderLeaderboard(board.body);
    if (stats.ok && stats.body) renderStats(stats.body);
  }, delay + Math.floor(Math.random() * BOARD_DELAY_MS));
}

async function refreshMe() {
  if (!state.token) return;
  const r = await api('/me', { auth: true });
  if (r.ok && r.body) setYou(r.body);
  else if (r.status === 401) logout(EXPIRED);
}

// ------------------------------------------------------------------------------------------
// Server messages: the model changes, then the parts of the view that show it.

function betsChanged() {
  renderBets(state);
  renderMyBets(state);
  renderControls(state);
}

function onMessage(m) {
  switch (m.type) {
    case 'snapshot': {
      model.applySnapshot(state, m);
      // The socket authenticates with its first frame, so the snapshot is usually anonymous: the
      // `authenticated` answer (or an `unauthorized` error) follows.
      if (m.you) setYou(m.you);
      else if (!state.token) state.you = null;
      renderAll(state);
      if (state.you) refreshMyBets();
      refreshBoard();
      return;
    }
    case 'round_open':
      model.applyRoundOpen(state, m);
      return renderAll(state);
    case 'flying':
      model.applyFlying(state, m);
      return renderAll(state);
    case 'tick':
      if (model.applyTick(state, m)) renderAll(state);
      return undefined;
    case 'crashed':
      model.applyCrashed(state, m);
      renderAll(state);
      // Settlement is final now: pick up the ledger's view of my bets, and the new totals.
      if (state.you) setTimeout(refreshMyBets, 300);
      refreshBoard(300);
      return undefined;
    case 'round_voided':
      model.applyVoided(state, m);
      toast({ kind: 'info', title: 'Round #' + m.round + ' was voided', msg: 'Every stake was refunded. ' + (m.reason || '') });
      renderAll(state);
      if (state.you) setTimeout(refreshMyBets, 300);
      refreshBoard(300);
      return undefined;
    // Other players' bets arrive in batches (one message per 100 ms): render once per batch.
    case 'bets_placed':
      if (!Array.isArray(m.bets)) return undefined;
      model.applyBets(state, m.bets);
      return betsChanged();
    case 'cashed_out':
      return onCashedOut(m);
    case 'balance':
      return setBalance(m.balance);
    case 'authenticated':
      setYou(m.you);
      renderAll(state);
      return refreshMyBets();
    case 'bet_accepted':
      socket.answered(m.request_id);
      keepReceipt(m.receipt);
      if (m.bet) {
        model.applyBets(state, [m.bet]);
        betsChanged();
        el.betNote.textContent = 'Bet of ' + formatCredits(m.bet.stake) + ' placed on round #' + m.bet.round +
          (m.bet.auto_cashout_x100 ? ', auto cash-out at ' + formatMult(m.bet.auto_cashout_x100) : '') + '.';
      }
      return renderControls(state);
    case 'cash_out_accepted':
      socket.answered(m.request_id);
      keepReceipt(m.receipt);
      onCashedOut({ bet_id: m.bet_id, multiplier_x100: m.multiplier_x100, payout: m.payout, username: '', auto: false });
      if (state.you) {
        toast({ kind: 'ok', title: 'Cashed out at ' + formatMult(m.multiplier_x100), msg: 'You won ' + formatCredits(m.payout) + ' credits.' });
      }
      return undefined;
    case 'auto_cash_out':
      return keepReceipt(m.receipt);
    case 'chat':
      if (model.applyChat(state, m)) renderChat(state);
      return undefined;
    case 'error':
      socket.answered(m.request_id);
      if (m.code === 'unauthorized' && !m.request_id && state.token) return logout(EXPIRED);
      toastError(m.code, m.message);
      return renderControls(state);
    default:
      return undefined; // pong (the socket's), and types newer than this page
  }
}

/**
 * Sends a chat line. The line shows when the table sends it back (to everyone, in one order);
 * a refusal (too fast, muted, too long) comes back as an error toast.
 */
function sendChat(ev) {
  ev.preventDefault();
  const text = el.chatText.value.trim();
  if (!text || !state.you) return;
  if (socket.send({ type: 'chat', text })) el.chatText.value = '';
}

function keepReceipt(receipt) {
  if (receipt) renderReceipts(saveReceipt(receipt));
}

function onCashedOut(m) {
  model.applyCashedOut(state, m);
  if (state.you && m.username === state.you.username) {
    toast({
      kind: 'ok',
      title: (m.auto ? 'Auto cash-out at ' : 'Cashed out at ') + formatMult(m.multiplier_x100),
      msg: 'You won ' + formatCredits(m.payout) + ' credits.',
    });
  }
  betsChanged();
}

// ------------------------------------------------------------------------------------------
// Player actions.

function placeBet(ev) {
  ev.preventDefault();
  if (!state.you) return;
  const stake = parseHundredths(el.stake.value);
  el.stake.classList.toggle('invalid', stake == null || stake <= 0);
  if (stake == null || stake <= 0) {
    el.betNote.textContent = 'Enter a stake like 1.00';
    return;
  }
  let auto = null;
  if (el.auto.value.trim() !== '') {
    auto = parseHundredths(el.auto.value);
    const bad = auto == null || auto < 101;
    el.auto.classList.toggle('invalid', bad);
    if (bad) {
      el.betNote.textContent = 'Auto cash-out is a multiplier of at least 1.01, or empty for manual';
      return;
    }
  }
  el.auto.classList.remove('invalid');
  localStorage.setItem(STAKE_KEY, el.stake.value.trim());
  localStorage.setItem(AUTO_KEY, el.auto.value.trim());
  const msg = { type: 'bet', request_id: newRequestId(), stake };
  if (auto != null) msg.auto_cashout_x100 = auto;
  el.betNote.textContent = 'Placing bet…';
  socket.command('bet', msg);
}

function cashOut() {
  for (const b of model.myOpenBets(state)) {
    if (model.pendingCashOut(state, b.bet_id)) continue;
    socket.command('cash_out', { type: 'cash_out', request_id: newRequestId(), bet_id: b.bet_id });
  }
}

function adjustStake(factor) {
  const v = parseHundredths(el.stake.value);
  if (v == null) return;
  const next = factor === 2 ? v * 2 : Math.max(1, Math.floor(v / 2));
  el.stake.value = plainAmount(next);
  el.stake.classList.remove('invalid');
}

// ------------------------------------------------------------------------------------------
// The stage and the graph, every animation frame.

function frame() {
  const v = updateStage(state, socket.reconnectAt);
  drawGraph(el.canvas, v, {
    growthPerMs: state.growthPerMs,
    bets: state.bets.values(),
    mine: (b) => model.isMine(state, b),
  });
  requestAnimationFrame(frame);
}

// ------------------------------------------------------------------------------------------
// Wiring.

// A fresh file of every stored receipt each time the link is followed.
el.receiptsDownload.addEventListener('click', () => {
  if (el.receiptsDownload.href.startsWith('blob:')) URL.revokeObjectURL(el.receiptsDownload.href);
  el.receiptsDownload.href = URL.createObjectURL(receiptsBlob());
});
renderReceipts(loadReceipts());

el.authForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  authenticate('login');
});
el.register.addEventListener('click', () => authenticate('register'));
el.logout.addEventListener('click', logOut);
el.betForm.addEventListener('submit', placeBet);
el.chatForm.addEventListener('submit', sendChat);
el.cashout.addEventListener('click', cashOut);
el.stakeHalf.addEventListener('click', () => adjustStake(0.5));
el.stakeDouble.addEventListener('click', () => adjustStake(2));
el.autoTwo.addEventListener('click', () => {
  el.auto.value = '2.00';
  el.auto.classList.remove('invalid');
});
el.autoOff.addEventListener('click', () => {
  el.auto.value = '';
  el.auto.classList.remove('invalid');
});
el.stake.addEventListener('input', () => el.stake.classList.remove('invalid'));
el.auto.addEventListener('input', () => el.auto.classList.remove('invalid'));
window.addEventListener('online', () => {
  if (!socket.open) socket.reconnectNow();
});
window.addEventListener('storage', (ev) => {
  // Logged in or out in another tab: follow it.
  if (ev.key === TOKEN_KEY && ev.newValue !== state.token) {
    state.token = ev.newValue;
    state.you = null;
    renderAll(state);
    socket.reconnectNow();
  }
});

const savedStake = localStorage.getItem(STAKE_KEY);
if (savedStake && parseHundredths(savedStake) != null) el.stake.value = savedStake;
const savedAuto = localStorage.getItem(AUTO_KEY);
if (savedAuto != null && (savedAuto === '' || parseHundredths(savedAuto) != null)) el.auto.value = savedAuto;

renderAll(state);
if (state.token) refreshMe();
socket.connect();
requestAnimationFrame(frame);
