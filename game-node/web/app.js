// crashfleet game page (/): account, betting, the live multiplier graph, the round's bets, history
// and the fairness commitment. Vanilla JS with no build step, served by the node under a strict CSP
// (no inline code or styles; the graph is a <canvas>).
//
// Money rules the page keeps: amounts are integers in minor units (100 = 1.00 credit) and
// multipliers integers in hundredths (250 = 2.50x). Typed amounts are parsed as decimal strings,
// never multiplied as floats; floats are only used to *draw* the curve between server ticks.
'use strict';

(() => {
  const TOKEN_KEY = 'crashfleet.token';
  const STAKE_KEY = 'crashfleet.stake';
  const AUTO_KEY = 'crashfleet.auto';
  /** Reconnect backoff: 0.5 s doubling to 10 s, with jitter so a restarted node is not stampeded. */
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10_000;
  /** Keep-alive and clock probe period. */
  const PING_EVERY_MS = 15_000;
  /** A command with no answer after this long is given up (it is idempotent, so a late answer is harmless). */
  const COMMAND_TIMEOUT_MS = 15_000;
  /** Interpolation never runs further ahead of the last tick than this many tick intervals. */
  const MAX_TICKS_AHEAD = 3;
  const HISTORY_KEEP = 50;
  const ROUND_BETS_SHOWN = 100; // rows in the round's bet table
  const MY_BETS_KEEP = 12;

  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $('conn'), connText: $('conn-text'), tableName: $('table-name'),
    account: $('account'), accountName: $('account-name'), balance: $('balance'), logout: $('logout'),
    strip: $('strip'), canvas: $('canvas'), roundTag: $('round-tag'),
    phase: $('phase'), multiplier: $('multiplier'), statusLine: $('status-line'),
    progress: $('progress'), progressBar: $('progress-bar'),
    authPanel: $('auth-panel'), authForm: $('auth-form'), username: $('username'), password: $('password'),
    authError: $('auth-error'), login: $('login'), register: $('register'),
    betPanel: $('bet-panel'), betForm: $('bet-form'), stake: $('stake'), auto: $('auto'),
    stakeHalf: $('stake-half'), stakeDouble: $('stake-double'),
    bet: $('bet'), cashout: $('cashout'), betNote: $('bet-note'),
    myBets: $('my-bets'), myBetsEmpty: $('my-bets-empty'),
    roundBets: $('round-bets'), roundBetsEmpty: $('round-bets-empty'), betsSummary: $('bets-summary'),
    history: $('history'), historyEmpty: $('history-empty'),
    fairTerminating: $('fair-terminating'), fairSalt: $('fair-salt'), fairEdge: $('fair-edge'),
    fairMax: $('fair-max'), fairLength: $('fair-length'),
    toasts: $('toasts'),
  };

  // ------------------------------------------------------------------------------------------
  // Formatting and exact parsing of money and multipliers.

  const pad2 = (n) => String(n).padStart(2, '0');
  const groupInt = (n) => n.toLocaleString('en-US');

  /** Minor units → "1,234.56". Integer arithmetic only. */
  function formatCredits(minor) {
    const v = Math.trunc(Number(minor));
    const abs = Math.abs(v);
    return (v < 0 ? '-' : '') + groupInt(Math.floor(abs / 100)) + '.' + pad2(abs % 100);
  }
  /** Minor units → "+0.01" / "-1.00" / "0.00". */
  function formatSigned(minor) {
    return (minor > 0 ? '+' : '') + formatCredits(minor);
  }
  /** Hundredths → "2.59×". */
  function formatMult(x100) {
    const v = Math.trunc(Number(x100));
    return groupInt(Math.floor(v / 100)) + '.' + pad2(v % 100) + '×';
  }
  /** Hundredths → "2.59" (for inputs). */
  function plainAmount(minor) {
    return Math.floor(minor / 100) + '.' + pad2(minor % 100);
  }
  /**
   * A decimal string with at most two decimals ("1", "1.5", "1.00", ".5") → integer hundredths,
   * or null. Parsed digit by digit with BigInt: "0.29" is 29, never 28.999….
   */
  function parseHundredths(text) {
    const s = String(text).trim();
    const m = /^(\d*)(?:\.(\d{0,2}))?$/.exec(s);
    if (!m || (m[1] === '' && (m[2] === undefined || m[2] === ''))) return null;
    const value = BigInt(m[1] || '0') * 100n + BigInt((m[2] || '').padEnd(2, '0'));
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    return Number(value);
  }
  /** floor(stake × x100 / 100), exactly. */
  function payoutOf(stake, x100) {
    return Number((BigInt(stake) * BigInt(x100)) / 100n);
  }
  function shortHash(h) {
    return h && h.length > 16 ? h.slice(0, 8) + '…' + h.slice(-6) : (h || '');
  }
  function pillClass(x100) {
    if (x100 == null) return 'void';
    if (x100 < 200) return 'low';
    if (x100 < 1000) return 'mid';
    return 'high';
  }
  /** 1–64 printable ASCII characters; also the idempotency key of the command. */
  function newRequestId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // Player-facing text per error code, served by the node from its error table (/errors.js),
  // so the page and the server never disagree on the codes.
  const ERROR_TEXT = window.CRASHFLEET_ERROR_TEXT || {};

  function errorTitle(code) {
    return ERROR_TEXT[code] || (code ? code.replace(/_/g, ' ') : 'Error');
  }

  // ------------------------------------------------------------------------------------------
  // State. Everything shown is derived from this and re-derived from each `snapshot`.

  const state = {
    token: localStorage.getItem(TOKEN_KEY),
    you: null,
    table: '',
    round: null, // RoundView-like; plus next_round_at_ms once crashed
    bets: new Map(), // bet_id → BetView, this round, in arrival order
    // Bets the snapshot counted but did not carry (it holds only the latest 200 and ours).
    unseen: { count: 0, wagered: 0 },
    history: [], // newest first: { number, crash_x100, hash, voided }
    fairness: null,
    growthPerMs: Math.LN2 / 11_500,
    tickMs: 100,
    lastTick: null, // { round, x100, elapsed }
    myRecent: [], // BetView[] from GET /me/bets, newest first
    pending: new Map(), // request_id → { msg, sentAt, kind }
    connected: false,
  };

  // Server clock: serverNow() ≈ the node's Date.now(). Every server_time_ms we receive is a lower
  // bound (it was stamped before transit); pongs give an RTT-corrected estimate.
  const clock = { offset: 0, have: false, fromPong: false };
  function clockSample(serverMs, rttMs) {
    if (typeof serverMs !== 'number') return;
    const local = Date.now();
    if (rttMs != null) {
      const s = serverMs + rttMs / 2 - local;
      clock.offset = clock.fromPong ? clock.offset * 0.7 + s * 0.3 : s;
      clock.fromPong = true;
      clock.have = true;
      return;
    }
    const s = serverMs - local;
    if (!clock.have || s > clock.offset) clock.offset = s;
    clock.have = true;
  }
  const serverNow = () => Date.now() + clock.offset;

  // ------------------------------------------------------------------------------------------
  // Toasts.

  let toastSeq = 0;
  function toast({ kind = 'info', title, msg = '', code = '', timeout }) {
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
  function toastError(code, message) {
    toast({ kind: 'error', title: errorTitle(code), msg: message, code });
  }

  // ------------------------------------------------------------------------------------------
  // REST.

  async function api(path, { method = 'GET', body, auth = false } = {}) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth && state.token) headers.Authorization = 'Bearer ' + state.token;
    let res;
    try {
      res = await fetch('/api/v1' + path, {
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
    renderAccount();
    renderControls();
  }

  function setBalance(balance) {
    if (!state.you) return;
    setYou({ ...state.you, balance });
  }

  function bumpBalance(delta) {
    el.balance.classList.remove('bump-up', 'bump-down');
    void el.balance.offsetWidth; // restart the animation
    el.balance.classList.add(delta > 0 ? 'bump-up' : 'bump-down');
  }

  function logout(reason) {
    setToken(null);
    state.you = null;
    state.myRecent = [];
    state.pending.clear();
    renderAll();
    if (reason) toast({ kind: 'info', title: reason });
    reconnectNow();
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
    if (!send({ type: 'auth', token: r.body.token })) reconnectNow();
  }

  function showAuthError(text) {
    el.authError.textContent = text;
    el.authError.hidden = !text;
  }

  async function refreshMyBets() {
    if (!state.token) return;
    const r = await api('/me/bets?limit=' + MY_BETS_KEEP, { auth: true });
    if (r.ok && Array.isArray(r.body)) {
      state.myRecent = r.body;
      renderMyBets();
    } else if (r.status === 401) {
      logout('Your session expired — please log in again');
    }
  }

  async function refreshMe() {
    if (!state.token) return;
    const r = await api('/me', { auth: true });
    if (r.ok && r.body) setYou(r.body);
    else if (r.status === 401) logout('Your session expired — please log in again');
  }

  // ------------------------------------------------------------------------------------------
  // WebSocket: connect, reconnect with backoff, commands with idempotent retry.

  let ws = null;
  let attempt = 0;
  let reconnectTimer = null;
  let reconnectAt = 0;
  let pingTimer = null;
  let pingNonce = 0;
  const pingSent = new Map();

  // The token never goes in the URL (URLs end up in proxy logs and history): the socket opens
  // anonymously and authenticates with its first frame.
  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return proto + '//' + location.host + '/ws';
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    setConn('connecting', 'Connecting…');
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      scheduleReconnect(false);
      return;
    }
    ws = sock;
    let opened = false;
    sock.addEventListener('open', () => {
      opened = true;
      if (state.token) sock.send(JSON.stringify({ type: 'auth', token: state.token }));
    });
    sock.addEventListener('message', (ev) => {
      if (ws !== sock) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      onMessage(msg);
    });
    sock.addEventListener('close', () => {
      if (ws !== sock) return;
      ws = null;
      state.connected = false;
      clearInterval(pingTimer);
      scheduleReconnect(opened);
    });
  }

  function reconnectNow() {
    attempt = 0;
    if (ws) {
      const old = ws;
      ws = null;
      old.close();
    }
    connect();
  }

  async function scheduleReconnect(wasOpen) {
    // A socket refused before opening while we hold a token may mean the token expired.
    if (!wasOpen && state.token && attempt >= 1) {
      const r = await api('/me', { auth: true });
      if (r.status === 401) {
        setToken(null);
        state.you = null;
        renderAll();
        toast({ kind: 'info', title: 'Your session expired — please log in again' });
        // The cause is known and gone: watch the table anonymously right away.
        attempt = 0;
        connect();
        return;
      }
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.8 + Math.random() * 0.4);
    attempt += 1;
    reconnectAt = Date.now() + delay;
    setConn('down', 'Reconnecting…');
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, delay);
    renderControls();
  }

  function setConn(kind, text) {
    el.conn.setAttribute('data-state', kind);
    el.connText.textContent = text;
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** Sends a money-moving command; it is re-sent (same request_id) after a reconnect until answered. */
  function command(kind, msg) {
    state.pending.set(msg.request_id, { msg, kind, sentAt: Date.now() });
    send(msg);
    setTimeout(() => {
      if (state.pending.delete(msg.request_id)) {
        toast({ kind: 'error', title: 'No answer from the table', msg: 'Check "My bets" — a retry never moves money twice.' });
        renderControls();
      }
    }, COMMAND_TIMEOUT_MS);
    renderControls();
  }

  function ping() {
    pingNonce += 1;
    pingSent.set(pingNonce, performance.now());
    send({ type: 'ping', nonce: pingNonce });
  }

  // ------------------------------------------------------------------------------------------
  // Server messages.

  function onMessage(m) {
    if (typeof m.server_time_ms === 'number' && m.type !== 'pong') clockSample(m.server_time_ms);
    switch (m.type) {
      case 'snapshot': return onSnapshot(m);
      case 'round_open': return onRoundOpen(m);
      case 'flying': return onFlying(m);
      case 'tick': return onTick(m);
      case 'crashed': return onCrashed(m);
      case 'round_voided': return onVoided(m);
      case 'bets_placed': return onBets(m.bets);
      case 'cashed_out': return onCashedOut(m);
      case 'balance': return setBalance(m.balance);
      case 'authenticated': return onAuthenticated(m);
      case 'bet_accepted': return onBetAccepted(m);
      case 'cash_out_accepted': return onCashOutAccepted(m);
      case 'pong': return onPong(m);
      case 'error': return onError(m);
      default: return undefined;
    }
  }

  function onSnapshot(s) {
    attempt = 0;
    state.connected = true;
    clock.have = false;
    clock.fromPong = false;
    clockSample(s.server_time_ms);
    setConn('live', 'Live');
    state.table = s.table || '';
    state.growthPerMs = typeof s.growth_per_ms === 'number' && s.growth_per_ms > 0 ? s.growth_per_ms : state.growthPerMs;
    state.tickMs = s.tick_interval_ms || 100;
    state.round = s.round ? { ...s.round } : null;
    state.lastTick = null;
    state.bets = new Map();
    for (const b of s.bets || []) state.bets.set(b.bet_id, b);
    let carried = 0;
    for (const b of state.bets.values()) carried += b.stake;
    state.unseen = {
      count: Math.max(0, (s.bets_total ?? state.bets.size) - state.bets.size),
      wagered: Math.max(0, (s.bets_wagered ?? carried) - carried),
    };
    state.history = (s.history || []).map(historyEntry).filter(Boolean).slice(0, HISTORY_KEEP);
    state.fairness = s.fairness || null;
    // The socket authenticates with its first frame, so the snapshot is usually anonymous: the
    // `authenticated` answer (or an `unauthorized` error) follows.
    if (s.you) setYou(s.you);
    else if (!state.token) state.you = null;
    renderAll();
    // Re-send commands that were in flight when the previous socket dropped (idempotent).
    for (const p of state.pending.values()) send(p.msg);
    clearInterval(pingTimer);
    pingTimer = setInterval(ping, PING_EVERY_MS);
    ping();
    if (state.you) refreshMyBets();
  }

  function historyEntry(r) {
    if (!r || r.number == null) return null;
    const voided = r.phase === 'voided' || r.status === 'voided' || r.crash_x100 == null;
    return { number: r.number, crash_x100: voided ? null : r.crash_x100, hash: r.hash || null, voided };
  }

  function onRoundOpen(m) {
    state.round = {
      number: m.round,
      phase: 'betting',
      opened_at_ms: m.opened_at_ms,
      betting_closes_at_ms: m.betting_closes_at_ms,
      started_at_ms: m.betting_closes_at_ms,
      crashed_at_ms: null,
      crash_x100: null,
      hash: null,
    };
    state.lastTick = null;
    state.bets = new Map();
    state.unseen = { count: 0, wagered: 0 };
    renderAll();
  }

  function ensureRound(number) {
    if (!state.round || state.round.number !== number) {
      state.round = {
        number, phase: 'flying', opened_at_ms: null, betting_closes_at_ms: null,
        started_at_ms: null, crashed_at_ms: null, crash_x100: null, hash: null,
      };
      state.bets = new Map();
      state.unseen = { count: 0, wagered: 0 };
      state.lastTick = null;
    }
    return state.round;
  }

  function onFlying(m) {
    const r = ensureRound(m.round);
    r.phase = 'flying';
    r.started_at_ms = m.started_at_ms;
    renderAll();
  }

  function onTick(m) {
    const r = ensureRound(m.round);
    if (r.phase === 'crashed' || r.phase === 'voided') return;
    if (r.phase !== 'flying') {
      r.phase = 'flying';
      renderAll();
    }
    if (r.started_at_ms == null && typeof m.server_time_ms === 'number') r.started_at_ms = m.server_time_ms - m.elapsed_ms;
    state.lastTick = { round: m.round, x100: m.multiplier_x100, elapsed: m.elapsed_ms };
  }

  function onCrashed(m) {
    const r = ensureRound(m.round);
    r.phase = 'crashed';
    r.crash_x100 = m.crash_x100;
    r.hash = m.hash;
    r.crashed_at_ms = m.crashed_at_ms;
    r.next_round_at_ms = m.next_round_at_ms;
    for (const b of state.bets.values()) {
      if (b.round === m.round && b.status === 'open') b.status = 'lost';
    }
    addHistory({ number: m.round, crash_x100: m.crash_x100, hash: m.hash, voided: false });
    renderAll();
    // Settlement is final now: pick up the ledger's view of my bets.
    if (state.you) setTimeout(refreshMyBets, 300);
  }

  function onVoided(m) {
    const r = ensureRound(m.round);
    r.phase = 'voided';
    r.void_reason = m.reason;
    for (const b of state.bets.values()) {
      if (b.round === m.round && b.status === 'open') b.status = 'refunded';
    }
    addHistory({ number: m.round, crash_x100: null, hash: null, voided: true });
    toast({ kind: 'info', title: 'Round #' + m.round + ' was voided', msg: 'Every stake was refunded. ' + (m.reason || '') });
    renderAll();
    if (state.you) setTimeout(refreshMyBets, 300);
  }

  function addHistory(entry) {
    state.history = [entry, ...state.history.filter((h) => h.number !== entry.number)].slice(0, HISTORY_KEEP);
  }

  // Other players' bets arrive in batches (one message per 100 ms): render once per batch.
  function onBets(bets) {
    if (!Array.isArray(bets)) return;
    for (const bet of bets) {
      if (!bet || (state.round && bet.round !== state.round.number)) continue;
      const known = state.bets.get(bet.bet_id);
      state.bets.set(bet.bet_id, known && known.status !== 'open' ? known : bet);
    }
    renderBets();
    renderMyBets();
    renderControls();
  }

  function onBet(bet) {
    if (!bet) return;
    if (state.round && bet.round !== state.round.number) return;
    const known = state.bets.get(bet.bet_id);
    state.bets.set(bet.bet_id, known && known.status !== 'open' ? known : bet);
    renderBets();
    renderMyBets();
    renderControls();
  }

  function onCashedOut(m) {
    const b = state.bets.get(m.bet_id);
    if (b) {
      b.status = 'won';
      b.cashout_x100 = m.multiplier_x100;
      b.payout = m.payout;
      b.justWon = true;
    }
    if (state.you && m.username === state.you.username) {
      toast({
        kind: 'ok',
        title: (m.auto ? 'Auto cash-out at ' : 'Cashed out at ') + formatMult(m.multiplier_x100),
        msg: 'You won ' + formatCredits(m.payout) + ' credits.',
      });
    }
    renderBets();
    renderMyBets();
    renderControls();
  }

  function onAuthenticated(m) {
    setYou(m.you);
    renderAll();
    refreshMyBets();
  }

  function onBetAccepted(m) {
    state.pending.delete(m.request_id);
    if (m.bet) onBet(m.bet);
    el.betNote.textContent = 'Bet of ' + formatCredits(m.bet.stake) + ' placed on round #' + m.bet.round +
      (m.bet.auto_cashout_x100 ? ', auto cash-out at ' + formatMult(m.bet.auto_cashout_x100) : '') + '.';
    renderControls();
  }

  function onCashOutAccepted(m) {
    state.pending.delete(m.request_id);
    onCashedOut({ bet_id: m.bet_id, multiplier_x100: m.multiplier_x100, payout: m.payout, username: '', auto: false });
    if (state.you) {
      toast({ kind: 'ok', title: 'Cashed out at ' + formatMult(m.multiplier_x100), msg: 'You won ' + formatCredits(m.payout) + ' credits.' });
    }
  }

  function onPong(m) {
    const sent = pingSent.get(m.nonce);
    pingSent.delete(m.nonce);
    if (sent != null) clockSample(m.server_time_ms, performance.now() - sent);
  }

  function onError(m) {
    if (m.request_id) state.pending.delete(m.request_id);
    if (m.code === 'unauthorized' && !m.request_id && state.token) {
      logout('Your session expired — please log in again');
      return;
    }
    toastError(m.code, m.message);
    renderControls();
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
    command('bet', msg);
  }

  function cashOut() {
    for (const b of myOpenBets()) {
      if (pendingCashOut(b.bet_id)) continue;
      command('cash_out', { type: 'cash_out', request_id: newRequestId(), bet_id: b.bet_id });
    }
  }

  function pendingCashOut(betId) {
    for (const p of state.pending.values()) if (p.kind === 'cash_out' && p.msg.bet_id === betId) return true;
    return false;
  }
  function pendingBet() {
    for (const p of state.pending.values()) if (p.kind === 'bet') return true;
    return false;
  }

  function myOpenBets() {
    if (!state.you || !state.round) return [];
    const out = [];
    for (const b of state.bets.values()) {
      if (b.username === state.you.username && b.round === state.round.number && b.status === 'open') out.push(b);
    }
    return out;
  }

  function adjustStake(factor) {
    const v = parseHundredths(el.stake.value);
    if (v == null) return;
    const next = factor === 2 ? v * 2 : Math.max(1, Math.floor(v / 2));
    el.stake.value = plainAmount(next);
    el.stake.classList.remove('invalid');
  }

  // ------------------------------------------------------------------------------------------
  // Rendering (DOM). The canvas and the live numbers are drawn every animation frame below.

  function renderAll() {
    renderAccount();
    renderControls();
    renderBets();
    renderMyBets();
    renderHistory();
    renderFairness();
    el.tableName.textContent = state.table ? 'table ' + state.table : '';
  }

  function renderAccount() {
    const you = state.you;
    el.account.hidden = !you;
    el.authPanel.hidden = !!you;
    el.betPanel.hidden = !you;
    if (you) {
      el.accountName.textContent = you.username;
      el.balance.textContent = formatCredits(you.balance);
      el.balance.setAttribute('data-minor', String(you.balance));
    }
  }

  function renderControls() {
    if (!state.you) return;
    const r = state.round;
    const open = myOpenBets();
    const betting = !!r && r.phase === 'betting' && serverNow() < r.betting_closes_at_ms;
    const flying = !!r && r.phase === 'flying';
    if (flying && open.length > 0) {
      el.bet.hidden = true;
      el.cashout.hidden = false;
      el.cashout.disabled = open.every((b) => pendingCashOut(b.bet_id)) || !state.connected;
    } else {
      el.bet.hidden = false;
      el.cashout.hidden = true;
      const busy = pendingBet();
      el.bet.disabled = !betting || busy || !state.connected;
      let label = 'Place bet';
      if (!state.connected) label = 'Reconnecting…';
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

  function renderBets() {
    const bets = Array.from(state.bets.values()).reverse();
    // A busy round holds thousands of bets: the table shows the latest ones, the summary counts all.
    const rows = bets.slice(0, ROUND_BETS_SHOWN).map((b) => {
      const tr = document.createElement('tr');
      tr.setAttribute('data-testid', 'round-bet-row');
      tr.setAttribute('data-status', b.status);
      if (state.you && b.username === state.you.username) tr.className = 'me';
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
    let wagered = state.unseen.wagered;
    for (const b of bets) wagered += b.stake;
    const count = bets.length + state.unseen.count;
    el.betsSummary.textContent = count
      ? count + (count === 1 ? ' bet · ' : ' bets · ') + formatCredits(wagered) + ' wagered'
      : '';
  }

  function renderMyBets() {
    const merged = new Map();
    if (state.you) {
      const live = Array.from(state.bets.values()).filter((b) => b.username === state.you.username).reverse();
      for (const b of live) merged.set(b.bet_id, b);
      for (const b of state.myRecent) if (!merged.has(b.bet_id)) merged.set(b.bet_id, b);
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
    el.myBetsEmpty.textContent = state.you ? 'No bets yet. Place one during the betting window.' : 'Log in to see your bets.';
  }

  function verifyHref(hash) {
    return '/verify?hash=' + encodeURIComponent(hash);
  }

  function renderHistory() {
    const rows = state.history.map((h) => {
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

    const pills = state.history.slice(0, 24).map((h) => {
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

  function renderFairness() {
    const f = state.fairness;
    if (!f) return;
    el.fairTerminating.textContent = f.terminating_hash;
    el.fairSalt.textContent = f.salt;
    const bp = f.house_edge_bp;
    el.fairEdge.textContent = Math.floor(bp / 100) + '.' + pad2(bp % 100) + '% (' + bp + ' bp)';
    el.fairMax.textContent = formatMult(f.max_x100);
    el.fairLength.textContent = groupInt(f.chain_length) + ' rounds';
  }

  // ------------------------------------------------------------------------------------------
  // Live numbers and the graph, every animation frame.

  /** Milliseconds of flight to draw now: server clock, clamped to just ahead of the last tick. */
  function flightElapsed() {
    const r = state.round;
    let e = r && r.started_at_ms != null ? serverNow() - r.started_at_ms : 0;
    const t = state.lastTick;
    if (t && r && t.round === r.number) {
      const ahead = MAX_TICKS_AHEAD * state.tickMs;
      e = Math.min(Math.max(e, t.elapsed), t.elapsed + ahead);
    }
    return Math.max(0, e);
  }

  function curveX100(elapsedMs) {
    const m = Math.floor(100 * Math.exp(state.growthPerMs * elapsedMs));
    return Number.isFinite(m) ? Math.max(100, m) : 100;
  }

  /** What the stage shows right now. */
  function liveView() {
    const r = state.round;
    if (!state.connected && !r) return { phase: 'connecting', x100: 100, elapsed: 0 };
    if (!r || r.phase === 'idle') return { phase: 'idle', x100: 100, elapsed: 0 };
    if (r.phase === 'betting') return { phase: 'betting', x100: 100, elapsed: 0 };
    if (r.phase === 'flying') {
      const elapsed = flightElapsed();
      let x100 = curveX100(elapsed);
      if (state.lastTick && state.lastTick.round === r.number) x100 = Math.max(x100, state.lastTick.x100);
      return { phase: 'flying', x100, elapsed };
    }
    if (r.phase === 'crashed') {
      const x100 = r.crash_x100 || 100;
      let elapsed = r.crashed_at_ms != null && r.started_at_ms != null ? r.crashed_at_ms - r.started_at_ms : null;
      if (elapsed == null || elapsed < 0) elapsed = Math.log(x100 / 100) / state.growthPerMs;
      return { phase: 'crashed', x100, elapsed };
    }
    return { phase: r.phase, x100: 100, elapsed: 0 };
  }

  let lastControlsPhase = '';
  function updateStage() {
    const r = state.round;
    const v = liveView();
    const now = serverNow();
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
        status = state.connected ? 'No round is running right now' : '';
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
        const open = myOpenBets();
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
    if (!state.connected && v.phase !== 'connecting') {
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
      const open = myOpenBets();
      let total = 0;
      for (const b of open) total += payoutOf(b.stake, v.x100);
      setText(el.cashout, 'Cash out ' + formatCredits(total));
    }
    // The bet button depends on the clock (the window closes) — refresh it when the phase flips.
    const key = v.phase + (v.phase === 'betting' && now >= r.betting_closes_at_ms ? '-closed' : '');
    if (key !== lastControlsPhase) {
      lastControlsPhase = key;
      renderControls();
    }
    if (el.conn.getAttribute('data-state') === 'down' && reconnectAt) {
      const s = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
      setText(el.connText, s > 0 ? 'Reconnecting in ' + s + ' s' : 'Reconnecting…');
    }
    return v;
  }

  const ctx = el.canvas.getContext('2d');

  function niceStep(range, target) {
    const raw = range / target;
    const mag = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
    return 10 * mag;
  }

  function draw(v) {
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const w = el.canvas.clientWidth;
    const h = el.canvas.clientHeight;
    if (!w || !h) return;
    if (el.canvas.width !== Math.round(w * dpr) || el.canvas.height !== Math.round(h * dpr)) {
      el.canvas.width = Math.round(w * dpr);
      el.canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const pad = { l: 54, r: 22, t: 22, b: 32 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const g = state.growthPerMs;
    const elapsed = v.elapsed || 0;
    const mult = v.x100 / 100;
    // The time axis ends on a labelled step, so its right edge always has a number.
    const xStep = niceStep(Math.max(10_000, elapsed * 1.1) / 1000, 6) * 1000;
    const xMax = Math.max(10_000, Math.ceil((elapsed * 1.1) / xStep) * xStep);
    const yMax = Math.max(2, 1 + (mult - 1) * 1.2);
    const px = (t) => pad.l + (t / xMax) * pw;
    const py = (m) => pad.t + ph - ((m - 1) / (yMax - 1)) * ph;

    // Grid and axis labels.
    ctx.font = '600 11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    ctx.lineWidth = 1;
    const yStep = niceStep(yMax - 1, 5);
    ctx.textAlign = 'right';
    for (let m = 1; m <= yMax + 1e-9; m += yStep) {
      const y = Math.round(py(m)) + 0.5;
      ctx.strokeStyle = m === 1 ? 'rgba(180,191,211,0.22)' : 'rgba(180,191,211,0.07)';
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(w - pad.r, y);
      ctx.stroke();
      ctx.fillStyle = 'rgba(125,137,161,0.9)';
      ctx.fillText((m >= 100 ? Math.round(m) : m.toFixed(m < 10 ? (yStep < 0.1 ? 2 : 1) : 0)) + '×', pad.l - 10, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let t = 0; t <= xMax + 1; t += xStep) {
      const x = Math.round(px(t)) + 0.5;
      ctx.strokeStyle = 'rgba(180,191,211,0.05)';
      ctx.beginPath();
      ctx.moveTo(x, pad.t);
      ctx.lineTo(x, pad.t + ph);
      ctx.stroke();
      ctx.fillStyle = 'rgba(125,137,161,0.9)';
      ctx.fillText(Math.round(t / 1000) + 's', x, pad.t + ph + 10);
    }

    if (v.phase !== 'flying' && v.phase !== 'crashed') return;

    // The curve m(t) = e^(g·t), sampled densely enough to look smooth at any scale.
    const crashed = v.phase === 'crashed';
    const steps = 160;
    const pts = [];
    for (let i = 0; i <= steps; i += 1) {
      const t = (elapsed * i) / steps;
      pts.push([px(t), py(Math.min(Math.exp(g * t), mult))]);
    }
    const [tipX, tipY] = pts[pts.length - 1];
    const base = py(1);

    const fill = ctx.createLinearGradient(0, tipY, 0, base);
    fill.addColorStop(0, crashed ? 'rgba(255,77,97,0.28)' : 'rgba(47,214,127,0.30)');
    fill.addColorStop(1, crashed ? 'rgba(255,77,97,0.02)' : 'rgba(47,214,127,0.02)');
    ctx.beginPath();
    ctx.moveTo(pts[0][0], base);
    for (const [x, y] of pts) ctx.lineTo(x, y);
    ctx.lineTo(tipX, base);
    ctx.closePath();
    ctx.fillStyle = fill;
    ctx.fill();

    const stroke = ctx.createLinearGradient(pad.l, 0, tipX + 1, 0);
    stroke.addColorStop(0, crashed ? '#b8323f' : '#1fb86a');
    stroke.addColorStop(1, crashed ? '#ff4d61' : '#5dffa8');
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (const [x, y] of pts) ctx.lineTo(x, y);
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 4;
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    ctx.shadowColor = crashed ? 'rgba(255,77,97,0.6)' : 'rgba(47,214,127,0.7)';
    ctx.shadowBlur = 18;
    ctx.stroke();
    ctx.shadowBlur = 0;

    // The tip: a glowing dot while flying, a burst when crashed.
    ctx.beginPath();
    ctx.arc(tipX, tipY, crashed ? 7 : 6, 0, Math.PI * 2);
    ctx.fillStyle = crashed ? '#ff4d61' : '#eafff3';
    ctx.shadowColor = crashed ? '#ff4d61' : '#2fd67f';
    ctx.shadowBlur = 24;
    ctx.fill();
    ctx.shadowBlur = 0;
    if (crashed) {
      ctx.strokeStyle = 'rgba(255,77,97,0.55)';
      ctx.lineWidth = 2;
      for (let i = 0; i < 8; i += 1) {
        const a = (Math.PI * 2 * i) / 8;
        ctx.beginPath();
        ctx.moveTo(tipX + Math.cos(a) * 11, tipY + Math.sin(a) * 11);
        ctx.lineTo(tipX + Math.cos(a) * 19, tipY + Math.sin(a) * 19);
        ctx.stroke();
      }
    }

    // Cash-out markers of this round.
    for (const b of state.bets.values()) {
      if (b.status !== 'won' || !b.cashout_x100) continue;
      const m = b.cashout_x100 / 100;
      const t = Math.log(m) / g;
      if (t > elapsed) continue;
      const mine = state.you && b.username === state.you.username;
      ctx.beginPath();
      ctx.arc(px(t), py(m), mine ? 5 : 3.5, 0, Math.PI * 2);
      ctx.fillStyle = mine ? '#5b9dff' : 'rgba(246,197,68,0.9)';
      ctx.fill();
    }
  }

  function frame() {
    const v = updateStage();
    draw(v);
    requestAnimationFrame(frame);
  }

  // ------------------------------------------------------------------------------------------
  // Wiring.

  el.authForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    authenticate('login');
  });
  el.register.addEventListener('click', () => authenticate('register'));
  el.logout.addEventListener('click', logOut);
  el.betForm.addEventListener('submit', placeBet);
  el.cashout.addEventListener('click', cashOut);
  el.stakeHalf.addEventListener('click', () => adjustStake(0.5));
  el.stakeDouble.addEventListener('click', () => adjustStake(2));
  $('auto-2').addEventListener('click', () => {
    el.auto.value = '2.00';
    el.auto.classList.remove('invalid');
  });
  $('auto-off').addEventListener('click', () => {
    el.auto.value = '';
    el.auto.classList.remove('invalid');
  });
  el.stake.addEventListener('input', () => el.stake.classList.remove('invalid'));
  el.auto.addEventListener('input', () => el.auto.classList.remove('invalid'));
  window.addEventListener('online', () => {
    if (!ws) reconnectNow();
  });
  window.addEventListener('storage', (ev) => {
    // Logged in or out in another tab: follow it.
    if (ev.key === TOKEN_KEY && ev.newValue !== state.token) {
      state.token = ev.newValue;
      state.you = null;
      renderAll();
      reconnectNow();
    }
  });

  const savedStake = localStorage.getItem(STAKE_KEY);
  if (savedStake && parseHundredths(savedStake) != null) el.stake.value = savedStake;
  const savedAuto = localStorage.getItem(AUTO_KEY);
  if (savedAuto != null && (savedAuto === '' || parseHundredths(savedAuto) != null)) el.auto.value = savedAuto;

  renderAll();
  renderMyBets();
  if (state.token) refreshMe();
  connect();
  requestAnimationFrame(frame);
})();
