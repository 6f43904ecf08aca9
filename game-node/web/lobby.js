// The lobby page (/lobby): every live table across regions (GET api/v1/lobby and
// api/v1/regions, refreshed every few seconds), the player's own round-trip time to each table and
// a suggestion of the nearest. A round trip is measured the way the game feels it: a short-lived
// WebSocket to the table's /ws, three `ping`s answered by `pong`, the median kept (the first
// frame, the snapshot, is not timed, so connection set-up does not count). Tables are measured
// one at a time so the measurements do not compete with each other. Names and regions come from
// the servers and are set as text only.

import { formatMult, groupInt } from './format.js';
import { joinUrlOf, median, nearest, wsUrlOf } from './lobby-model.js';

const REFRESH_MS = 3_000;
const REMEASURE_MS = 30_000;
const PINGS = 3;
const PING_TIMEOUT_MS = 4_000;

const $ = (id) => document.getElementById(id);
const el = {
  suggest: $('suggest'), updated: $('updated'), regions: $('regions'), tables: $('tables'),
  tablesEmpty: $('tables-empty'),
};

/** Join URL → median round trip (ms), or null when the table could not be reached. */
const rtts = new Map();
/** Join URL → when it was last measured (ms since the page opened). */
const measuredAt = new Map();
let rows = [];
let ownTable = null;
let measuring = false;

function td(content, cls) {
  const c = document.createElement('td');
  if (cls) c.className = cls;
  if (content instanceof Node) c.append(content);
  else c.textContent = content;
  return c;
}

/** Pings a table over a short-lived WebSocket; resolves to the median round trip or null. */
function measure(url) {
  return new Promise((resolve) => {
    let ws;
    try {
      ws = new WebSocket(wsUrlOf(url));
    } catch (e) {
      resolve(null);
      return;
    }
    const samples = [];
    let sentAt = 0;
    const done = (v) => {
      clearTimeout(timer);
      try { ws.close(); } catch (e) { /* already closed */ }
      resolve(v);
    };
    const timer = setTimeout(() => done(median(samples)), PING_TIMEOUT_MS);
    const ping = () => {
      sentAt = performance.now();
      ws.send(JSON.stringify({ type: 'ping', nonce: samples.length + 1 }));
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === 'snapshot' && samples.length === 0 && sentAt === 0) return ping();
      if (m.type !== 'pong' || m.nonce !== samples.length + 1) return undefined;
      samples.push(performance.now() - sentAt);
      return samples.length >= PINGS ? done(median(samples)) : ping();
    };
    ws.onerror = () => done(median(samples));
    ws.onclose = () => done(median(samples));
  });
}

async function measureAll() {
  if (measuring) return;
  measuring = true;
  try {
    const now = performance.now();
    const urls = [...new Set(rows.map((r) => r.url).filter(Boolean))]
      .filter((u) => !measuredAt.has(u) || now - measuredAt.get(u) > REMEASURE_MS);
    for (const url of urls) {
      rtts.set(url, await measure(url));
      measuredAt.set(url, performance.now());
      render();
    }
  } finally {
    measuring = false;
  }
}

function render() {
  const best = nearest(rows, rtts);
  const trs = rows.map((r) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'lobby-row');
    tr.dataset.table = r.table;
    tr.dataset.region = r.region;
    const rtt = r.url ? rtts.get(r.url) : undefined;
    if (rtt != null) tr.dataset.rtt = String(Math.round(rtt));
    if (best && best.row === r) tr.classList.add('nearest');
    tr.append(td(r.table));
    tr.append(td(r.region));
    tr.append(td(r.phase));
    tr.append(td(r.multiplier_x100 != null ? formatMult(r.multiplier_x100) : '—', 'r num'));
    tr.append(td(groupInt(r.players_online), 'r num'));
    let ping = '—';
    if (!r.url) ping = 'no public URL';
    else if (rtt === null) ping = 'unreachable';
    else if (rtt !== undefined) ping = rtt < 1 ? '<1 ms' : Math.round(rtt) + ' ms';
    tr.append(td(ping, 'r num'));
    if (r.url) {
      const a = document.createElement('a');
      a.href = r.url;
      a.textContent = 'Join';
      a.setAttribute('data-testid', 'join');
      tr.append(td(a, 'r'));
    } else {
      tr.append(td(''));
    }
    return tr;
  });
  el.tables.replaceChildren(...trs);
  el.tablesEmpty.hidden = trs.length > 0;
  if (best) {
    const a = document.createElement('a');
    a.href = best.row.url;
    a.textContent = 'Join ' + best.row.table;
    a.setAttribute('data-testid', 'join-nearest');
    a.className = 'btn-primary';
    const text = document.createElement('span');
    text.textContent = 'Nearest: ' + best.row.table + ' in ' + best.row.region + ' (' + Math.round(best.rtt) + ' ms). ';
    el.suggest.replaceChildren(text, a);
    el.suggest.dataset.table = best.row.table;
  } else {
    el.suggest.textContent = rows.length ? 'Measuring your round trip to each table…' : 'No live tables right now.';
    delete el.suggest.dataset.table;
  }
}

function renderRegions(regions) {
  el.regions.replaceChildren(...regions.map((g) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'region-row');
    tr.dataset.region = g.region;
    tr.append(td(g.region), td(groupInt(g.tables), 'r num'), td(groupInt(g.nodes), 'r num'),
      td(groupInt(g.players_online), 'r num'));
    return tr;
  }));
}

async function getJson(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(path + ' answered ' + r.status);
  return r.json();
}

async function refresh() {
  try {
    if (ownTable === null) ownTable = (await getJson('api/v1/fleet')).table || '';
    const [lobby, regions] = await Promise.all([getJson('api/v1/lobby'), getJson('api/v1/regions')]);
    rows = (lobby.tables || []).map((t) => ({ ...t, url: joinUrlOf(t, ownTable, location.href) }));
    renderRegions(regions.regions || []);
    el.updated.textContent = 'updated ' + new Date().toLocaleTimeString();
    render();
    measureAll();
  } catch (e) {
    el.updated.textContent = 'the lobby is unavailable right now';
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
