// The table's WebSocket: connect, reconnect with backoff, commands retried with their request id,
// keep-alive pings and the server clock. It knows the protocol's framing (JSON text frames, the
// `auth` first frame, `ping`/`pong`) but nothing of the page: what a message means is the caller's.

/** Reconnect backoff: 0.5 s doubling to 10 s, with jitter so a restarted node is not stampeded. */
export const BACKOFF_MIN_MS = 500;
export const BACKOFF_MAX_MS = 10_000;
/** Keep-alive and clock probe period: NAT and proxy idle timers are often 30–60 s, and the node
 * closes a socket it heard nothing from for 45 s (its default). */
export const PING_EVERY_MS = 15_000;
/** A command with no answer after this long is given up (it is idempotent, so a late answer is harmless). */
export const COMMAND_TIMEOUT_MS = 15_000;

/** The reconnect delay before attempt `attempt` (0-based), with `random` in [0, 1). */
export function backoffMs(attempt, random) {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.8 + random * 0.4);
}

/**
 * now() ≈ the node's Date.now(). Every server_time_ms we receive is a lower bound on the node's
 * clock (it was stamped before transit), so plain samples only ever move the offset forward; a
 * pong gives an RTT-corrected estimate, smoothed over successive pongs.
 */
export class ServerClock {
  constructor(localNow = () => Date.now()) {
    this.localNow = localNow;
    this.reset();
  }

  reset() {
    this.offset = 0;
    this.have = false;
    this.fromPong = false;
  }

  sample(serverMs, rttMs) {
    if (typeof serverMs !== 'number') return;
    const local = this.localNow();
    if (rttMs != null) {
      const s = serverMs + rttMs / 2 - local;
      this.offset = this.fromPong ? this.offset * 0.7 + s * 0.3 : s;
      this.fromPong = true;
      this.have = true;
      return;
    }
    const s = serverMs - local;
    if (!this.have || s > this.offset) this.offset = s;
    this.have = true;
  }

  now() {
    return this.localNow() + this.offset;
  }
}

/**
 * One connection at a time to the page's own node.
 *
 * The token never goes in the URL (URLs end up in proxy logs and history): the socket opens
 * anonymously and authenticates with its first frame.
 *
 * hooks:
 *   token()          the session token to authenticate with, or null
 *   message(m)       every parsed server message (pongs included, after the clock took them)
 *   status(kind, t)  connection state for the page: 'connecting' | 'live' | 'down', with a text
 *   closed()         the socket dropped (the page is no longer live)
 *   refused()        async; a socket refused before opening while we hold a token: true when the
 *                    cause was found and handled (an expired token), so we retry at once
 *   gaveUp(p)        a command got no answer within COMMAND_TIMEOUT_MS
 *   changed()        the set of pending commands changed
 */
export class TableSocket {
  constructor(hooks, { pending = new Map(), clock = new ServerClock() } = {}) {
    this.hooks = hooks;
    /** request_id → { msg, kind, sentAt }: money-moving commands not answered yet. */
    this.pending = pending;
    this.clock = clock;
    this.ws = null;
    this.attempt = 0;
    this.reconnectTimer = null;
    /** When the next attempt starts (Date.now() ms), for the page's countdown; 0 when none. */
    this.reconnectAt = 0;
    this.pingTimer = null;
    this.pingNonce = 0;
    this.pingSent = new Map();
  }

  /** `ws` beside the page (`/ws`, or `/crash/ws` under a path prefix), over ws: or wss:. */
  url() {
    const u = new URL('ws', location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = '';
    u.hash = '';
    return u.href;
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.reconnectAt = 0;
    this.hooks.status('connecting', 'Connecting…');
    let sock;
    try {
      sock = new WebSocket(this.url());
    } catch (e) {
      this.scheduleReconnect(false);
      return;
    }
    this.ws = sock;
    let opened = false;
    sock.addEventListener('open', () => {
      opened = true;
      const token = this.hooks.token();
      if (token) sock.send(JSON.stringify({ type: 'auth', token }));
    });
    sock.addEventListener('message', (ev) => {
      if (this.ws !== sock) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      this.receive(msg);
    });
    sock.addEventListener('close', () => {
      if (this.ws !== sock) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      this.hooks.closed();
      this.scheduleReconnect(opened);
    });
  }

  /** Drops the current socket (if any) and opens a new one now: after a log-in or log-out. */
  reconnectNow() {
    this.attempt = 0;
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.close();
    }
    this.connect();
  }

  get open() {
    return !!this.ws;
  }

  async scheduleReconnect(wasOpen) {
    if (!wasOpen && this.attempt >= 1 && this.hooks.token() && (await this.hooks.refused())) {
      // The cause is known and gone: reconnect right away.
      this.attempt = 0;
      this.connect();
      return;
    }
    const delay = backoffMs(this.attempt, Math.random());
    this.attempt += 1;
    this.reconnectAt = Date.now() + delay;
    this.hooks.status('down', 'Reconnecting…');
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  receive(m) {
    if (m.type === 'pong') {
      const sent = this.pingSent.get(m.nonce);
      this.pingSent.delete(m.nonce);
      if (sent != null) this.clock.sample(m.server_time_ms, performance.now() - sent);
    } else if (m.type === 'snapshot') {
      this.live(m);
    } else if (typeof m.server_time_ms === 'number') {
      this.clock.sample(m.server_time_ms);
    }
    this.hooks.message(m);
  }

  /** A snapshot opens a live session: fresh clock and backoff, pending commands re-sent, pings. */
  live(snapshot) {
    this.attempt = 0;
    this.clock.reset();
    this.clock.sample(snapshot.server_time_ms);
    this.hooks.status('live', 'Live');
    // Re-send commands that were in flight when the previous socket dropped (idempotent).
    for (const p of this.pending.values()) this.send(p.msg);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    this.ping();
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Sends a money-moving command; it is re-sent (same request_id) after a reconnect until answered. */
  command(kind, msg) {
    this.pending.set(msg.request_id, { msg, kind, sentAt: Date.now() });
    this.send(msg);
    setTimeout(() => {
      const p = this.pending.get(msg.request_id);
      if (p && this.pending.delete(msg.request_id)) {
        this.hooks.gaveUp(p);
        this.hooks.changed();
      }
    }, COMMAND_TIMEOUT_MS);
    this.hooks.changed();
  }

  /** An answer (or an error) arrived for this request: it is no longer pending. */
  answered(requestId) {
    if (requestId) this.pending.delete(requestId);
  }

  ping() {
    this.pingNonce += 1;
    this.pingSent.set(this.pingNonce, performance.now());
    this.send({ type: 'ping', nonce: this.pingNonce });
  }
}
