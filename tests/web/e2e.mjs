// End-to-end test of the game page (/) and the verifier (/verify) in headless Chromium, against a
// running game-node whose base URL is in CRASHFLEET_URL (tests/web/run.sh; started by a cargo
// integration test with short betting windows).
//
// It plays like a person: registers through the form, bets 1.00 with auto cash-out 1.01 in a
// betting window, watches the round crash, checks the balance against the outcome (page and
// GET /api/v1/me), follows the round's history link to /verify and checks the crash point there
// equals the server's; sends a chat line full of markup and checks it shows as text; checks the verifier against the known answers
// (game-node/tests/data/fairness.json); and fails on any console error or Content-Security-Policy
// violation. Screenshots go to
// $CRASHFLEET_ARTIFACTS (default /tmp/crashfleet-artifacts).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { CHROMIUM, Failure, check, launch, logger, runOnce } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.CRASHFLEET_URL || '').replace(/\/+$/, '');
const ARTIFACTS = process.env.CRASHFLEET_ARTIFACTS || '/tmp/crashfleet-artifacts';
/** Longest wait for one round to crash: a high crash point can fly for a while. */
const ROUND_TIMEOUT_MS = Number(process.env.CRASHFLEET_E2E_ROUND_TIMEOUT_MS || 180_000);
/** Whole-test limit, so a hung page never hangs the cargo test that runs us. */
const TOTAL_TIMEOUT_MS = Number(process.env.CRASHFLEET_E2E_TIMEOUT_MS || 420_000);
/** A bet is clicked only when at least this much of the betting window is left. */
const MIN_WINDOW_LEFT_MS = 700;

const STAKE = 100; // "1.00"
const AUTO_X100 = 101; // "1.01"

// Known answers computed outside the project (game-node/tests/data/fairness.json); the first round
// is embedded so the check still runs when the page is tested from a copy of this script alone.
const VECTOR_FALLBACK = {
  salt: '0000000000000000000fa3b65e43e4240d71762a5bf397d5304b2596d116859c',
  chain: null,
  rounds: [{
    round: 1,
    hash: 'b9bde08c04cc4368f6874f324b0d06b0275072bf88d195075daf3255825d2724',
    crash_x100_edge_0bp: 262, crash_x100_edge_100bp: 259, crash_x100_edge_250bp: 255,
  }],
  r_cases: [],
};

const log = logger('e2e');

function loadVectors() {
  const candidates = [
    process.env.CRASHFLEET_VECTORS,
    path.resolve(HERE, '../../game-node/tests/data/fairness.json'),
  ].filter(Boolean);
  for (const p of candidates) {
    try {
      // Integers beyond 2^53 (the r edge cases) would lose digits as JS numbers: keep them as text.
      const v = JSON.parse(fs.readFileSync(p, 'utf8').replace(/:\s*(\d{16,})\b/g, ': "$1"'));
      log('fairness vectors from', p);
      return v;
    } catch (e) {
      // try the next place
    }
  }
  log('fairness vectors file not found; using the embedded known answer');
  return VECTOR_FALLBACK;
}

async function getJson(urlPath, token) {
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const res = await fetch(BASE + urlPath, { headers });
  const text = await res.text();
  check(res.ok, `GET ${urlPath} answered ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** "1,000.50" → 100050 (integer minor units, exactly). */
function parseCredits(text) {
  const m = /^(-?)([\d,]+)\.(\d{2})/.exec(String(text).trim());
  check(m, `balance "${text}" is not formatted as credits with 2 decimals`);
  const v = Number(m[2].replace(/,/g, '')) * 100 + Number(m[3]);
  return m[1] ? -v : v;
}

async function main() {
  check(BASE, 'CRASHFLEET_URL is not set (the base URL of a running game-node, e.g. http://127.0.0.1:8080)');
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  check(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (tests/install-deps.sh)`);
  const vectors = loadVectors();

  const { browser, context } = await launch();
  const problems = []; // console errors, page errors, CSP violations
  const watch = (page, name) => {
    page.on('console', (msg) => {
      if (msg.type() === 'error') problems.push(`${name}: console error: ${msg.text()}`);
    });
    page.on('pageerror', (err) => problems.push(`${name}: uncaught: ${err.message}`));
    page.on('response', (res) => {
      // Our own assets and API must not fail during a normal session.
      if (res.status() >= 400) problems.push(`${name}: ${res.status()} for ${res.url()}`);
    });
  };

  const page = await context.newPage();
  watch(page, 'game');
  try {
    await playOneRound(page, context, vectors);
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await browser.close().catch(() => {});
  }
  check(problems.length === 0, 'the pages reported problems:\n  ' + problems.join('\n  '));
}

async function playOneRound(page, context, vectors) {
  // Every WebSocket the page opens, with the frames it sends and receives.
  const sockets = [];
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), sent: [], received: [] };
    sockets.push(s);
    ws.on('framesent', (f) => s.sent.push(String(f.payload)));
    ws.on('framereceived', (f) => s.received.push(String(f.payload)));
  });
  // ---- the game page loads, connects and shows the commitment
  const res = await page.goto(BASE + '/', { waitUntil: 'domcontentloaded' });
  check(res && res.ok(), `GET / answered ${res && res.status()}`);
  const csp = res.headers()['content-security-policy'] || '';
  check(/script-src 'self'/.test(csp), `the game page has no strict Content-Security-Policy (got "${csp}")`);
  await page.waitForFunction(() => {
    const p = document.querySelector('[data-testid=phase]');
    return p && !['connecting'].includes(p.dataset.phase);
  }, null, { timeout: 20_000 });
  const fairness = await getJson('/api/v1/fairness');
  await page.waitForFunction((t) => document.querySelector('[data-testid=fair-terminating]').textContent === t,
    fairness.terminating_hash, { timeout: 5_000 });
  log('connected; commitment', fairness.terminating_hash.slice(0, 16) + '…');

  // ---- register a fresh player through the form
  const username = 'e2e_' + Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
  await page.fill('[data-testid=username]', username);
  await page.fill('[data-testid=password]', 'correct horse battery');
  await page.click('[data-testid=register]');
  await page.waitForSelector('[data-testid=balance]', { state: 'visible', timeout: 10_000 });
  await page.waitForFunction((u) => document.querySelector('[data-testid=account-name]').textContent === u, username, { timeout: 10_000 });
  const token = await page.evaluate(() => localStorage.getItem('crashfleet.token'));
  check(token, 'no token stored in localStorage after registering');
  const before = parseCredits(await page.textContent('[data-testid=balance]'));
  const meBefore = await getJson('/api/v1/me', token);
  check(meBefore.username === username, `GET /me is ${meBefore.username}, expected ${username}`);
  check(meBefore.balance === before, `page shows balance ${before}, GET /me says ${meBefore.balance}`);
  check(before >= STAKE, `a new player has ${before}; the test needs at least ${STAKE}`);
  log('registered', username, 'with balance', before);

  // ---- bet 1.00 with auto cash-out 1.01 in a betting window (retry if the window shuts first)
  await page.fill('[data-testid=stake]', '1.00');
  await page.fill('[data-testid=auto]', '1.01');
  let bet = null;
  for (let tryNo = 1; tryNo <= 4 && !bet; tryNo += 1) {
    await page.waitForFunction((minLeft) => {
      const p = document.querySelector('[data-testid=phase]');
      const b = document.querySelector('[data-testid=bet]');
      return p.dataset.phase === 'betting' && Number(p.dataset.remainingMs) > minLeft && b && !b.disabled && !b.hidden;
    }, MIN_WINDOW_LEFT_MS, { timeout: ROUND_TIMEOUT_MS, polling: 50 });
    const roundNo = Number(await page.getAttribute('[data-testid=phase]', 'data-round'));
    const seen = await page.evaluate(() => ({
      bets: Array.from(document.querySelectorAll('[data-testid=my-bet-row]'), (r) => r.dataset.betId),
      toastSeq: Number(document.body.dataset.toastSeq || 0),
    }));
    try {
      // Short: if the window shut in between, the button is disabled and we wait for the next one.
      await page.click('[data-testid=bet]', { timeout: 500 });
    } catch (e) {
      log(`round #${roundNo}: the bet button was not clickable in time; waiting for the next window`);
      continue;
    }
    log(`bet clicked in round #${roundNo} (try ${tryNo})`);
    const outcome = await page.waitForFunction((seen) => {
      for (const row of document.querySelectorAll('[data-testid=my-bet-row]')) {
        if (!seen.bets.includes(row.dataset.betId)) return { ok: true, betId: row.dataset.betId, round: Number(row.dataset.round) };
      }
      for (const t of document.querySelectorAll('[data-testid=toast]')) {
        if (Number(t.dataset.seq) > seen.toastSeq && t.classList.contains('error')) return { ok: false, code: t.dataset.code || '', text: t.textContent };
      }
      return null;
    }, seen, { timeout: 10_000 }).then((h) => h.jsonValue()).catch(() => {
      throw new Failure(`no answer to the bet in round #${roundNo} within 10 s (no bet row, no error)`);
    });
    if (outcome.ok) {
      check(outcome.round === roundNo, `the bet was clicked in round #${roundNo} but landed in round #${outcome.round}`);
      bet = { round: outcome.round, betId: outcome.betId };
    } else {
      check(outcome.code === 'betting_closed', `the bet was refused: ${outcome.text}`);
      log('the window closed before the bet arrived; trying the next round');
    }
  }
  check(bet, 'could not place a bet in 4 betting windows');
  const row = `[data-testid=my-bet-row][data-bet-id="${bet.betId}"]`;
  const auto = await page.textContent(`${row} td:nth-child(3)`);
  check(auto.includes('1.01'), `my bet row shows auto cash-out "${auto}", expected 1.01`);
  await page.waitForFunction((b) => Number(document.querySelector('[data-testid=balance]').dataset.minor) === b, before - STAKE, { timeout: 5_000 })
    .catch(() => { throw new Failure(`the balance did not drop by the stake after the bet was accepted`); });
  log(`bet ${bet.betId} accepted in round #${bet.round}`);

  // ---- watch the round to its crash
  await page.waitForFunction((n) => {
    const p = document.querySelector('[data-testid=phase]');
    return Number(p.dataset.round) === n && (p.dataset.phase === 'flying' || p.dataset.phase === 'crashed');
  }, bet.round, { timeout: ROUND_TIMEOUT_MS });
  const historyRow = `[data-testid=history-row][data-round="${bet.round}"]`;
  await page.waitForSelector(historyRow, { timeout: ROUND_TIMEOUT_MS });
  const crashX100 = Number(await page.getAttribute(historyRow, 'data-crash-x100'));
  const hash = await page.getAttribute(historyRow, 'data-hash');
  check(crashX100 >= 100, `history row for round #${bet.round} has crash "${crashX100}"`);
  check(/^[0-9a-f]{64}$/.test(hash || ''), `history row for round #${bet.round} has hash "${hash}"`);
  const banner = await page.textContent('[data-testid=countdown]');
  const crashText = (crashX100 / 100).toFixed(2) + '×';
  const phaseNow = await page.getAttribute('[data-testid=phase]', 'data-phase');
  if (phaseNow === 'crashed') {
    check(banner.includes('CRASHED @ ' + crashText), `the stage shows "${banner}" after the crash, expected "CRASHED @ ${crashText}"`);
  }
  log(`round #${bet.round} crashed at ${crashText}`);

  // ---- the balance matches the outcome (an auto cash-out at 1.01 loses only when the crash is 1.00)
  const won = crashX100 >= AUTO_X100;
  const expected = won ? before - STAKE + Math.floor((STAKE * AUTO_X100) / 100) : before - STAKE;
  await page.waitForFunction(({ row, status }) => {
    const r = document.querySelector(row);
    return r && r.dataset.status === status;
  }, { row, status: won ? 'won' : 'lost' }, { timeout: 15_000 }).catch(async () => {
    const s = await page.getAttribute(row, 'data-status').catch(() => '?');
    throw new Failure(`my bet shows status "${s}" after a crash at ${crashText}; expected ${won ? 'won' : 'lost'}`);
  });
  await page.waitForFunction((b) => Number(document.querySelector('[data-testid=balance]').dataset.minor) === b, expected, { timeout: 10_000 })
    .catch(async () => {
      const shown = await page.textContent('[data-testid=balance]');
      throw new Failure(`balance shows ${shown} after a ${won ? 'win' : 'loss'} at ${crashText}; expected ${expected / 100}`);
    });
  check(parseCredits(await page.textContent('[data-testid=balance]')) === expected, 'the balance text does not match its value');
  const meAfter = await getJson('/api/v1/me', token);
  check(meAfter.balance === expected, `GET /me says ${meAfter.balance} after the round; expected ${expected}`);
  log(`bet ${won ? 'won' : 'lost'}; balance ${before} → ${expected} (page and GET /me agree)`);

  // ---- the leaderboard and the table's totals show the settled round
  const profit = expected - before;
  await page.waitForFunction(({ u, p }) => {
    const r = document.querySelector(`[data-testid=leaderboard-row][data-username="${u}"]`);
    return r && Number(r.dataset.profit) === p;
  }, { u: username, p: profit }, { timeout: 10_000 })
    .catch(async () => {
      const rows = await page.$$eval('[data-testid=leaderboard-row]', (rs) => rs.map((r) => `${r.dataset.username}:${r.dataset.profit}`));
      throw new Failure(`the leaderboard does not show ${username} at ${profit}: ${rows.join(', ') || 'no rows'}`);
    });
  const stats = await getJson('/api/v1/stats');
  await page.waitForFunction((h) => document.querySelector('[data-testid=stat-house]').dataset.minor === String(h), stats.house_result, { timeout: 10_000 })
    .catch(async () => {
      const shown = await page.textContent('[data-testid=stat-house]');
      throw new Failure(`the table's house result shows ${shown}; GET /stats says ${stats.house_result}`);
    });
  const shownBets = Number((await page.textContent('[data-testid=stat-bets]')).replace(/,/g, ''));
  check(shownBets >= 1 && shownBets <= stats.bets, `the table shows ${shownBets} bets; GET /stats says ${stats.bets}`);
  log(`leaderboard: ${username} at ${profit}; table: ${shownBets} bets, house result ${stats.house_result}`);

  // ---- the chat: a line with markup comes back through the table and shows as text, not HTML
  const payload = '<img src=x onerror="window.__chatXss=1"><b>bold</b> & more';
  await page.fill('[data-testid=chat-text]', payload);
  await page.click('[data-testid=chat-send]');
  await page.waitForFunction((p) => [...document.querySelectorAll('[data-testid=chat-line] .chat-text')]
    .some((t) => t.textContent === p), payload, { timeout: 10_000 })
    .catch(async () => {
      const lines = await page.$$eval('[data-testid=chat-line]', (ls) => ls.map((l) => l.textContent));
      throw new Failure(`my chat line did not come back as text: ${JSON.stringify(lines)}`);
    });
  const markup = await page.$$eval('[data-testid=chat] img, [data-testid=chat] b', (els) => els.length);
  check(markup === 0, `the chat rendered ${markup} element(s) from a player's text`);
  check(await page.evaluate(() => window.__chatXss === undefined), 'a chat line ran script');
  const who = await page.$$eval('[data-testid=chat-line] .chat-who', (ws) => ws.map((w) => w.textContent));
  check(who.includes(username), `the chat line is not signed ${username}: ${who.join(', ')}`);
  log('chat: a line with markup came back through the table and shows as text');

  // ---- the bet's signed receipt (and the auto-cash-out's, when it won) is kept in this browser
  const kinds = won ? ['bet', 'auto_cash_out'] : ['bet'];
  await page.waitForFunction(({ betId, kinds }) => kinds.every((k) =>
    document.querySelector(`[data-testid=receipt-row][data-bet-id="${betId}"][data-kind="${k}"]`)), { betId: bet.betId, kinds }, { timeout: 10_000 })
    .catch(() => { throw new Failure(`the receipts list does not show ${kinds.join(' and ')} receipts of bet ${bet.betId}`); });
  const stored = await page.evaluate((betId) => JSON.parse(localStorage.getItem('crashfleet.receipts') || '[]')
    .filter((r) => r.bet_id === betId), bet.betId);
  check(stored.length === kinds.length, `localStorage keeps ${stored.length} receipts of the bet; expected ${kinds.length}`);
  for (const r of stored) {
    check(/^[0-9a-f]{128}$/.test(r.signature) && /^[0-9a-f]+$/.test(r.message), `a stored receipt is not hex: ${JSON.stringify(r)}`);
    check(r.round === bet.round && r.stake === STAKE, `a stored receipt says round ${r.round}, stake ${r.stake}`);
  }
  log(`receipts of bet ${bet.betId} stored: ${stored.map((r) => r.kind).join(', ')}`);

  // ---- the server's record of the round agrees with the page
  let last = (await getJson('/api/v1/rounds?limit=1'))[0];
  if (!last || last.number !== bet.round) {
    // Another round finished meanwhile: look ours up among the recent ones.
    last = (await getJson('/api/v1/rounds?limit=50')).find((r) => r.number === bet.round);
  }
  check(last, `GET /api/v1/rounds does not list round #${bet.round}`);
  check(last.crash_x100 === crashX100, `the page shows ${crashX100} for round #${bet.round}, the server ${last.crash_x100}`);
  check(last.hash === hash, `the page shows hash ${hash} for round #${bet.round}, the server ${last.hash}`);
  const href = await page.getAttribute(`${historyRow} a[data-testid=verify-link]`, 'href');
  check(href === 'verify?hash=' + hash, `the history row links to "${href}", expected verify?hash=${hash} (relative to the page)`);

  await page.waitForTimeout(300); // let the toast and the crash frame settle for the picture
  await page.screenshot({ path: path.join(ARTIFACTS, 'game.png') });
  log('saved', path.join(ARTIFACTS, 'game.png'));

  // ---- follow the history link to the verifier; it recomputes the round in the browser
  await Promise.all([page.waitForURL(/\/verify\?hash=/), page.click(`${historyRow} a[data-testid=verify-link]`)]);
  const vRow = `[data-testid=v-row][data-hash="${hash}"]`;
  await page.waitForSelector(vRow, { timeout: 30_000 });
  const verified = Number(await page.getAttribute(vRow, 'data-crash-x100'));
  check(verified === last.crash_x100, `/verify computes ${verified} for round #${bet.round}; GET /api/v1/rounds?limit=1 says ${last.crash_x100}`);
  const vText = await page.textContent(`${vRow} [data-testid=v-crash]`);
  check(vText.trim() === crashText, `/verify shows "${vText}" for round #${bet.round}, expected ${crashText}`);
  const chainState = await page.getAttribute('[data-testid=v-chain]', 'data-chain');
  check(chainState === 'ok', `/verify says the hash of round #${bet.round} is "${chainState}" against the commitment, expected ok`);
  const vRound = await page.getAttribute(vRow, 'data-round');
  check(Number(vRound) === bet.round, `/verify places the hash at round #${vRound}, expected #${bet.round}`);
  log(`/verify recomputed round #${bet.round}: ${crashText}, chained to the commitment`);

  // ---- the stored receipts, checked in the browser against the bet's proofs and the signed log
  await page.click('[data-testid=r-run]');
  await page.waitForFunction(() => document.querySelector('[data-testid=r-status]').dataset.result, null, { timeout: 30_000 });
  const rStatus = await page.getAttribute('[data-testid=r-status]', 'data-result');
  const rText = await page.textContent('[data-testid=r-status]');
  const rRows = await page.evaluate((betId) => Array.from(document.querySelectorAll(`[data-testid=r-row][data-bet-id="${betId}"]`),
    (r) => ({ ok: r.dataset.ok, text: r.textContent })), bet.betId);
  check(rStatus === 'ok', `/verify's receipt check says "${rText}": ${JSON.stringify(rRows)}`);
  check(rRows.length >= 12, `/verify ran ${rRows.length} checks on bet ${bet.betId}, expected at least 12`);
  check(rRows.every((r) => r.ok === 'true'), `/verify left checks undone or failed (Web Crypto Ed25519 on localhost): ${JSON.stringify(rRows)}`);
  check(rRows.some((r) => r.text.includes('signed by the table')), 'no signature check among the receipt checks');
  await page.screenshot({ path: path.join(ARTIFACTS, 'verify.png'), fullPage: true });
  log(`/verify checked the receipts of bet ${bet.betId}: ${rRows.length} checks passed, signatures by Web Crypto Ed25519; saved verify.png`);

  await checkVerifierAgainstVectors(page, vectors);

  // ---- sessions: back on the game page the socket authenticates with its first frame (no
  // token in any WebSocket URL), and the logout button ends the session on the server.
  await page.goto(BASE + '/', { waitUntil: 'domcontentloaded' });
  await page.waitForFunction((u) => document.querySelector('[data-testid=account-name]').textContent === u, username, { timeout: 10_000 });
  const authenticated = (s) => s.received.some((p) => p.includes('"type":"authenticated"'));
  for (let i = 0; i < 100 && !(sockets.length && authenticated(sockets[sockets.length - 1])); i += 1) {
    await page.waitForTimeout(100);
  }
  const sock = sockets[sockets.length - 1];
  check(sock && authenticated(sock), 'the reloaded page\'s socket was never authenticated');
  const first = sock.sent.length ? JSON.parse(sock.sent[0]) : null;
  check(first && first.type === 'auth' && first.token === token, `the socket's first frame is ${sock.sent[0]}, expected an auth frame with the token`);
  const leaks = sockets.filter((s) => /token/i.test(s.url)).map((s) => s.url);
  check(leaks.length === 0, `the page put a token in a WebSocket URL: ${leaks.join(', ')}`);
  log(`sessions: ${sockets.length} sockets, none with a token in its URL; authenticated by the first frame`);
  await page.click('[data-testid=logout]');
  await page.waitForFunction(() => localStorage.getItem('crashfleet.token') === null, null, { timeout: 10_000 });
  const afterLogout = await fetch(BASE + '/api/v1/me', { headers: { Authorization: 'Bearer ' + token } });
  check(afterLogout.status === 401, `GET /me with the logged-out token answered ${afterLogout.status}, expected 401`);
  log('sessions: logout forgot the token and the server refuses it (401)');
}

async function checkVerifierAgainstVectors(page, vectors) {
  // Through the form, as a reader would: round 1 of the vectors at a 1% edge, no chain check.
  const r1 = vectors.rounds[0];
  await page.fill('[data-testid=v-hash]', r1.hash);
  await page.fill('[data-testid=v-salt]', vectors.salt);
  await page.fill('[data-testid=v-edge]', '100');
  await page.fill('[data-testid=v-max]', '100000000');
  await page.fill('[data-testid=v-count]', '3');
  await page.fill('[data-testid=v-terminating]', '');
  await page.fill('[data-testid=v-round]', '');
  await page.click('[data-testid=v-run]');
  const vRow = `[data-testid=v-row][data-hash="${r1.hash}"]`;
  await page.waitForSelector(vRow, { timeout: 10_000 });
  const got = Number(await page.getAttribute(vRow, 'data-crash-x100'));
  check(got === r1.crash_x100_edge_100bp, `/verify computes ${got} for the vectors' round 1 at 100 bp, expected ${r1.crash_x100_edge_100bp}`);
  const shown = (await page.textContent(`${vRow} [data-testid=v-crash]`)).trim();
  const want = (r1.crash_x100_edge_100bp / 100).toFixed(2) + '×';
  check(shown === want, `/verify shows "${shown}" for the vectors' round 1, expected ${want}`);
  log(`/verify: vectors round 1 → ${shown} at 100 bp`);

  // The chain check through the form: h500 is round 500 of a 1,000-link chain.
  if (vectors.chain && vectors.chain.h500) {
    await page.fill('[data-testid=v-hash]', vectors.chain.h500);
    await page.fill('[data-testid=v-terminating]', vectors.chain.terminating_hash);
    await page.fill('[data-testid=v-round]', '500');
    await page.fill('[data-testid=v-count]', '2');
    await page.click('[data-testid=v-run]');
    await page.waitForSelector(`[data-testid=v-row][data-hash="${vectors.chain.h500}"][data-round="500"]`, { timeout: 20_000 });
    await page.waitForFunction(() => document.querySelector('[data-testid=v-chain]')?.dataset.chain === 'ok', null, { timeout: 20_000 })
      .catch(() => { throw new Failure('/verify does not find the vectors\' h500 in the chain at round 500'); });
    // …and a wrong round number is caught.
    await page.fill('[data-testid=v-round]', '499');
    await page.click('[data-testid=v-run]');
    await page.waitForFunction(() => document.querySelector('[data-testid=v-chain]')?.dataset.chain === 'bad', null, { timeout: 20_000 })
      .catch(() => { throw new Failure('/verify accepts h500 as round 499'); });
    log('/verify: chain check finds h500 at round 500 and refuses round 499');
  }

  // Every known answer, through the page's own functions, on both hashing engines.
  const mismatches = await page.evaluate(async (v) => {
    const out = [];
    const api = window.crashfleetVerify;
    for (const r of v.rounds) {
      for (const [edge, key] of [[0, 'crash_x100_edge_0bp'], [100, 'crash_x100_edge_100bp'], [250, 'crash_x100_edge_250bp']]) {
        if (r[key] == null) continue;
        for (const engine of ['webcrypto', 'js']) {
          const got = await api.crashForHash(r.hash, v.salt, edge, null, engine);
          if (String(got) !== String(r[key])) out.push(`round ${r.round} edge ${edge} (${engine}): ${got} != ${r[key]}`);
        }
      }
    }
    for (const c of v.r_cases || []) {
      const got = api.crashX100FromR(c.r, c.edge_bp);
      if (got !== String(c.crash_x100)) out.push(`r=${c.r} edge ${c.edge_bp}: ${got} != ${c.crash_x100}`);
    }
    if (v.chain && v.chain.h0) {
      let h = v.chain.h0;
      let hj = v.chain.h0;
      for (let i = 0; i < v.chain.length; i += 1) {
        h = await api.sha256Hex(h, 'webcrypto');
        hj = await api.sha256Hex(hj, 'js');
      }
      if (h !== v.chain.terminating_hash) out.push(`Web Crypto chain of ${v.chain.length} from h0 ends at ${h}`);
      if (hj !== v.chain.terminating_hash) out.push(`JS SHA-256 chain of ${v.chain.length} from h0 ends at ${hj}`);
    }
    return out;
  }, vectors);
  check(mismatches.length === 0, 'the verifier disagrees with the known answers:\n  ' + mismatches.join('\n  '));
  log(`/verify: ${vectors.rounds.length} rounds × 3 edges on 2 engines, ${(vectors.r_cases || []).length} r cases and the chain all match`);
}

await runOnce('e2e', main, TOTAL_TIMEOUT_MS, () => log('screenshots in', ARTIFACTS));
