// crashfleet verifier (/verify): recomputes crash points in the browser from revealed round hashes
// and checks them against the table's published commitment. The math lives in fairness.js; the
// server's own numbers are fetched only to be compared with what is computed here.

import { formatMult, pillClass } from './format.js';
import * as math from './fairness.js';
import { checkBet } from './proofs.js';
import { loadReceipts } from './receipts.js';

const { HEX64, engine, fromHex, toHex, sameBytes, crashOf } = math;
/** Most rows one run shows, and most links walked looking for the commitment. */
const MAX_ROWS = 1000;
const MAX_WALK = 5_000_000;

// For tests and curious readers: the same functions the page uses, on either engine.
window.crashfleetVerify = {
  crashX100FromR: (r, edgeBp) => math.crashX100FromR(BigInt(r), edgeBp).toString(),
  crashForHash: math.crashForHash,
  sha256Hex: math.sha256Hex,
  engine: math.engineName,
};

// ------------------------------------------------------------------------------------------
// The page.

const $ = (id) => document.getElementById(id);
const f = {
  form: $('v-form'), hash: $('v-hash'), salt: $('v-salt'), edge: $('v-edge'), max: $('v-max'),
  count: $('v-count'), terminating: $('v-terminating'), round: $('v-round'), run: $('v-run'),
  reset: $('v-reset'), engine: $('v-engine'), source: $('v-source'),
  status: $('v-status'), summary: $('v-summary'), results: $('v-results'), empty: $('v-empty'),
};
let fairness = null;
let runId = 0;

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

function setStatus(parts) {
  f.status.replaceChildren(...parts.map((p) => {
    if (typeof p === 'string') return document.createTextNode(p);
    const s = document.createElement('span');
    s.className = p.cls || '';
    if (p.testid) s.setAttribute('data-testid', p.testid);
    if (p.attrs) for (const [k, v] of Object.entries(p.attrs)) s.setAttribute(k, v);
    s.textContent = p.text;
    return s;
  }));
}

function fillDefaults(overwrite) {
  if (!fairness) return;
  if (overwrite || !f.salt.value) f.salt.value = fairness.salt;
  if (overwrite || !f.edge.dataset.touched) f.edge.value = String(fairness.house_edge_bp);
  if (overwrite || !f.max.dataset.touched) f.max.value = String(fairness.max_x100);
  if (overwrite || !f.terminating.dataset.touched) f.terminating.value = fairness.terminating_hash;
  f.source.textContent = 'defaults from this table';
}

function readInputs() {
  const problems = [];
  const hash = f.hash.value.trim().toLowerCase();
  if (!HEX64.test(hash)) problems.push('The round hash must be 64 hex digits.');
  const salt = f.salt.value;
  if (!salt) problems.push('The salt is required.');
  const edgeText = f.edge.value.trim();
  const edge = /^\d{1,5}$/.test(edgeText) ? Number(edgeText) : NaN;
  if (!(edge >= 0 && edge <= 10000)) problems.push('The house edge is a whole number of basis points, 0–10000.');
  const maxText = f.max.value.trim();
  const max = /^\d{3,19}$/.test(maxText) ? BigInt(maxText) : null;
  if (max == null || max < 100n) problems.push('The cap is a whole number of hundredths, at least 100.');
  const countText = f.count.value.trim() || '1';
  const count = /^\d{1,4}$/.test(countText) ? Number(countText) : NaN;
  if (!(count >= 1 && count <= MAX_ROWS)) problems.push('Rounds back is 1–' + MAX_ROWS + '.');
  const terminating = f.terminating.value.trim().toLowerCase();
  if (terminating && !HEX64.test(terminating)) problems.push('The terminating hash must be 64 hex digits, or empty.');
  const roundText = f.round.value.trim();
  const round = roundText === '' ? null : /^\d{1,15}$/.test(roundText) ? Number(roundText) : NaN;
  if (round !== null && !(round >= 1 && round <= MAX_WALK)) problems.push('The round number is a whole number from 1 to ' + MAX_WALK.toLocaleString('en-US') + ', or empty.');
  return { problems, hash, salt, edge, max, count, terminating, round };
}

async function run() {
  const id = ++runId;
  const inp = readInputs();
  for (const [node, bad] of [
    [f.hash, !HEX64.test(inp.hash)],
    [f.salt, !inp.salt],
  ]) node.classList.toggle('invalid', bad);
  if (inp.problems.length) {
    setStatus([{ text: '✗', cls: 'badge bad' }, ' ' + inp.problems.join(' ')]);
    return;
  }
  const params = new URLSearchParams({ hash: inp.hash });
  if (fairness) {
    if (inp.salt !== fairness.salt) params.set('salt', inp.salt);
    if (inp.edge !== fairness.house_edge_bp) params.set('edge', String(inp.edge));
    if (String(inp.max) !== String(fairness.max_x100)) params.set('max', String(inp.max));
    if (inp.terminating && inp.terminating !== fairness.terminating_hash) params.set('terminating', inp.terminating);
  }
  if (inp.count !== 10) params.set('count', String(inp.count));
  if (inp.round != null) params.set('round', String(inp.round));
  history.replaceState(null, '', 'verify?' + params.toString());

  f.run.disabled = true;
  setStatus(['Computing…']);
  try {
    await compute(id, inp);
  } catch (e) {
    if (id === runId) setStatus([{ text: '✗', cls: 'badge bad' }, ' Could not compute: ' + (e && e.message ? e.message : String(e))]);
  } finally {
    if (id === runId) f.run.disabled = false;
  }
}

async function compute(id, inp) {
  const hmac = await engine.hmac(inp.salt);
  // 1. The chain check: does hashing this hash k times give the commitment?
  let round = inp.round;
  let chain = null; // { ok, steps } or null when not checked
  const start = fromHex(inp.hash);
  if (inp.terminating) {
    const target = fromHex(inp.terminating);
    const limit = round != null
      ? round
      : Math.min(MAX_WALK, fairness && fairness.chain_length ? fairness.chain_length : MAX_WALK,
        Math.max(1000, ((fairness && fairness.rounds_played) || 0) + 1000));
    let h = start;
    let found = null;
    if (sameBytes(h, target)) found = 0;
    for (let i = 1; found == null && i <= limit; i += 1) {
      h = await engine.sha256(h);
      if (round == null && sameBytes(h, target)) found = i;
      if (i % 4000 === 0) {
        setStatus(['Walking the chain… ' + i.toLocaleString('en-US') + ' links']);
        await nextFrame();
        if (id !== runId) return;
      }
    }
    if (round != null) chain = { ok: sameBytes(h, target), steps: round };
    else chain = { ok: found != null && found > 0, steps: found, searched: limit, isCommitment: found === 0 };
    if (round == null && found != null && found > 0) round = found;
  }

  // 2. The crash points: this round and the ones before it.
  const rows = [];
  let h = start;
  for (let i = 0; i < inp.count; i += 1) {
    const number = round != null ? round - i : null;
    if (number != null && number < 1) break;
    const hex = toHex(h);
    const { crash } = await crashOf(hmac, h, inp.edge, inp.max);
    rows.push({ number, offset: i, hash: hex, crash });
    h = await engine.sha256(h);
    if (i % 200 === 199) {
      await nextFrame();
      if (id !== runId) return;
    }
  }

  // 3. What the server published, for comparison only.
  const server = new Map();
  try {
    const res = await fetch('api/v1/rounds?limit=' + Math.min(500, Math.max(50, inp.count + 20)), { cache: 'no-store' });
    if (res.ok) for (const r of await res.json()) if (r.hash) server.set(r.hash.toLowerCase(), r);
  } catch (e) {
    // Offline or another origin: the computed values stand on their own.
  }
  if (id !== runId) return;
  render(inp, rows, chain, round, server);
}

function render(inp, rows, chain, round, server) {
  const trs = rows.map((row) => {
    const tr = document.createElement('tr');
    tr.setAttribute('data-testid', 'v-row');
    tr.setAttribute('data-hash', row.hash);
    tr.setAttribute('data-crash-x100', row.crash.toString());
    if (row.number != null) tr.setAttribute('data-round', String(row.number));
    const c1 = document.createElement('td');
    c1.className = row.offset === 0 ? '' : 'muted';
    c1.textContent = row.number != null ? '#' + row.number : row.offset === 0 ? 'this round' : row.offset + ' before';
    const c2 = document.createElement('td');
    c2.className = 'mono';
    c2.textContent = row.hash;
    const c3 = document.createElement('td');
    c3.className = 'r';
    const pill = document.createElement('span');
    pill.className = 'pill ' + pillClass(row.crash);
    pill.setAttribute('data-testid', 'v-crash');
    pill.textContent = formatMult(row.crash);
    c3.append(pill);
    const c4 = document.createElement('td');
    c4.className = 'r';
    const s = server.get(row.hash);
    if (s && s.crash_x100 != null) {
      const same = BigInt(s.crash_x100) === row.crash && (row.number == null || s.number === row.number);
      const m = document.createElement('span');
      m.className = 'match ' + (same ? 'ok' : 'bad');
      m.setAttribute('data-testid', 'v-server');
      m.textContent = (same ? '✓ ' : '✗ ') + formatMult(s.crash_x100) + (row.number == null ? ' (#' + s.number + ')' : '');
      m.title = same ? 'The server published the same crash point' : 'The server published something else for this hash';
      c4.append(m);
    } else {
      c4.className = 'r muted';
      c4.textContent = '—';
    }
    tr.append(c1, c2, c3, c4);
    return tr;
  });
  f.results.replaceChildren(...trs);
  f.empty.hidden = trs.length > 0;
  f.summary.textContent = rows.length + (rows.length === 1 ? ' round' : ' rounds') + ' · computed with ' + engine.label;

  const first = rows[0];
  const parts = [];
  if (first) {
    parts.push({ text: (round != null ? 'Round #' + round : 'This round') + ' crashed at ', cls: '' });
    parts.push({ text: formatMult(first.crash), cls: 'crash-big', testid: 'v-crash-main', attrs: { 'data-crash-x100': first.crash.toString() } });
    parts.push('·');
  }
  if (!chain) {
    parts.push({ text: 'chain not checked', cls: 'badge neutral', testid: 'v-chain', attrs: { 'data-chain': 'unchecked' } });
    parts.push('Give the terminating hash to prove this hash belongs to the committed chain.');
  } else if (chain.isCommitment) {
    parts.push({ text: 'this is the commitment itself', cls: 'badge neutral', testid: 'v-chain', attrs: { 'data-chain': 'commitment' } });
    parts.push('h(L) is published, never played.');
  } else if (chain.ok) {
    parts.push({ text: '✓ in the committed chain', cls: 'badge', testid: 'v-chain', attrs: { 'data-chain': 'ok' } });
    parts.push('SHA-256 applied ' + chain.steps.toLocaleString('en-US') + (chain.steps === 1 ? ' time' : ' times') + ' to this hash gives the terminating hash.');
  } else {
    parts.push({ text: '✗ not in the committed chain', cls: 'badge bad', testid: 'v-chain', attrs: { 'data-chain': 'bad' } });
    parts.push(inp.round != null
      ? 'Hashing it ' + inp.round.toLocaleString('en-US') + ' times does not give the terminating hash: wrong round number, or a forged hash.'
      : 'The terminating hash was not reached within ' + chain.searched.toLocaleString('en-US') + ' links.');
  }
  setStatus(parts);
}

// ------------------------------------------------------------------------------------------
// Start: prefill from the URL and from the table, then run if a hash was given.

f.engine.textContent = 'Runs in your browser with ' + engine.label + '.';
for (const node of [f.edge, f.max, f.terminating]) {
  node.addEventListener('input', () => {
    node.dataset.touched = '1';
  });
}
f.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  run();
});
f.reset.addEventListener('click', () => {
  fillDefaults(true);
});

async function start() {
  const q = new URLSearchParams(location.search);
  try {
    const res = await fetch('api/v1/fairness', { cache: 'no-store' });
    if (res.ok) fairness = await res.json();
  } catch (e) {
    fairness = null;
  }
  fillDefaults(false);
  if (!fairness) f.source.textContent = 'table defaults unavailable — fill in the salt';
  const set = (node, key) => {
    const v = q.get(key);
    if (v != null) {
      node.value = v;
      node.dataset.touched = '1';
    }
  };
  set(f.hash, 'hash');
  set(f.salt, 'salt');
  set(f.edge, 'edge');
  set(f.max, 'max');
  set(f.count, 'count');
  set(f.terminating, 'terminating');
  set(f.round, 'round');
  if (q.get('hash')) run();
}
start();

// ------------------------------------------------------------------------------------------
// The player's receipts (kept by the game page), checked against the table's proofs.

/** Bets checked per run: the newest ones (each needs one proof request). */
const RECEIPT_BETS_CHECKED = 20;
const r = {
  run: $('r-run'), status: $('r-status'), summary: $('r-summary'), results: $('r-results'), empty: $('r-empty'),
};

async function getJson(path, token) {
  const res = await fetch(path, { cache: 'no-store', headers: token ? { Authorization: 'Bearer ' + token } : {} });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${path}: ${res.status} ${(body && body.code) || ''}`);
  return body;
}

function receiptRow(betId, check) {
  const tr = document.createElement('tr');
  tr.setAttribute('data-testid', 'r-row');
  tr.dataset.betId = betId;
  tr.dataset.ok = check.ok === null ? 'unchecked' : String(check.ok);
  const cells = [betId.slice(0, 8) + '…', check.what, check.ok === null ? 'not checked here' : check.ok ? 'ok' : 'FAILED'];
  cells.forEach((text, i) => {
    const td = document.createElement('td');
    td.textContent = text;
    if (i === 2) td.className = 'r status ' + (check.ok === null ? 'open' : check.ok ? 'won' : 'lost');
    tr.append(td);
  });
  return tr;
}

async function checkReceipts() {
  const token = localStorage.getItem('crashfleet.token');
  const byBet = new Map();
  for (const rec of loadReceipts()) {
    if (!byBet.has(rec.bet_id)) byBet.set(rec.bet_id, []);
    byBet.get(rec.bet_id).push(rec);
  }
  const bets = Array.from(byBet.keys()).slice(0, RECEIPT_BETS_CHECKED);
  if (bets.length === 0) { r.status.textContent = 'no receipts in this browser'; return; }
  if (!token) { r.status.textContent = 'log in on the game page first: proofs are served to the bet’s owner only'; return; }
  r.run.disabled = true;
  r.status.textContent = `checking ${bets.length} bets…`;
  const rows = [];
  let failed = 0;
  let pending = 0;
  try {
    const proofs = new Map();
    for (const id of bets) {
      try { proofs.set(id, await getJson(`api/v1/bets/${encodeURIComponent(id)}/proof`, token)); } catch (e) {
        if (String(e.message).includes('not_found')) pending += 1;
        else rows.push(receiptRow(id, { ok: false, what: `no proof: ${e.message}` }));
      }
    }
    const table = await getJson('api/v1/fairness');
    const head = await getJson('api/v1/log/head');
    for (const [id, proof] of proofs) {
      let consistency = null;
      if (proof.log.tree_size < head.size) {
        consistency = await getJson(`api/v1/log/consistency?from=${proof.log.tree_size}&to=${head.size}`);
      }
      for (const c of await checkBet(byBet.get(id), proof, table, head, consistency)) {
        if (c.ok === false) failed += 1;
        rows.push(receiptRow(id, c));
      }
    }
    r.results.replaceChildren(...rows);
    r.empty.hidden = rows.length > 0;
    r.summary.textContent = `${proofs.size} ${proofs.size === 1 ? 'bet' : 'bets'} checked` + (pending ? `, ${pending} in rounds not settled yet` : '');
    r.status.textContent = failed === 0 ? 'every check passed' : `${failed} checks FAILED`;
    r.status.dataset.result = failed === 0 ? 'ok' : 'failed';
  } catch (e) {
    r.status.textContent = 'could not check: ' + e.message;
    r.status.dataset.result = 'error';
  } finally {
    r.run.disabled = false;
  }
}

r.run.addEventListener('click', checkReceipts);
r.empty.hidden = loadReceipts().length > 0;
