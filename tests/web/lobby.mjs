// Browser test of the lobby page (/lobby) in headless Chromium, against a fleet of two tables in
// two regions whose nodes advertise their own addresses (`--public-url`); CRASHFLEET_URL is one
// node of the fleet (game-node/tests/fleet/failover.rs, `tables_share_wallets_and_the_lobby`).
//
// It checks that the page lists both tables with their regions and both regions with their
// counts (against GET /api/v1/lobby and /regions), that it measured a round trip to each table
// over a WebSocket ping, that the suggestion is the table with the lowest measured round trip,
// and that following the suggestion's join link opens that table's own game page. Any console
// error, uncaught error or CSP violation fails it. A screenshot goes to $CRASHFLEET_ARTIFACTS.
import fs from 'node:fs';
import path from 'node:path';

import { CHROMIUM, Failure, check, launch, logger, runOnce } from './harness.mjs';

const BASE = (process.env.CRASHFLEET_URL || '').replace(/\/+$/, '');
const ARTIFACTS = process.env.CRASHFLEET_ARTIFACTS || '/tmp/crashfleet-artifacts';
const TOTAL_TIMEOUT_MS = 120_000;

const log = logger('lobby');

async function getJson(urlPath) {
  const res = await fetch(BASE + urlPath);
  check(res.ok, `GET ${urlPath} answered ${res.status}`);
  return res.json();
}

async function main() {
  check(BASE, 'CRASHFLEET_URL is not set');
  check(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (tests/install-deps.sh)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const lobby = await getJson('/api/v1/lobby');
  const regions = await getJson('/api/v1/regions');
  check(lobby.tables.length >= 2, `the fleet lists ${lobby.tables.length} tables; the test needs two`);

  const { browser, context } = await launch();
  const problems = [];
  try {
    const page = await context.newPage();
    page.on('console', (msg) => { if (msg.type() === 'error') problems.push('console error: ' + msg.text()); });
    page.on('pageerror', (err) => problems.push('uncaught: ' + err.message));
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));

    // The game page links to the lobby.
    await page.goto(BASE + '/', { waitUntil: 'domcontentloaded' });
    await page.click('nav a[href="lobby"]');
    await page.waitForURL(BASE + '/lobby');

    // Every table, in its region, each with a measured round trip.
    await page.waitForFunction((n) => {
      const rows = document.querySelectorAll('[data-testid=lobby-row]');
      return rows.length === n && [...rows].every((r) => r.dataset.rtt !== undefined);
    }, lobby.tables.length, { timeout: 30_000 }).catch(async () => {
      const rows = await page.$$eval('[data-testid=lobby-row]', (rs) => rs.map((r) => r.textContent));
      throw new Failure(`the lobby did not measure every table: ${JSON.stringify(rows)}`);
    });
    const shown = await page.$$eval('[data-testid=lobby-row]', (rs) => rs.map((r) => ({
      table: r.dataset.table, region: r.dataset.region, rtt: Number(r.dataset.rtt),
      join: r.querySelector('[data-testid=join]')?.href,
    })));
    for (const t of lobby.tables) {
      const row = shown.find((r) => r.table === t.table);
      check(row, `table ${t.table} is missing from the page`);
      check(row.region === t.region, `table ${t.table} shows region ${row.region}; the API says ${t.region}`);
      check(row.join === t.public_url, `table ${t.table} joins ${row.join}; it advertises ${t.public_url}`);
      check(row.rtt >= 0 && row.rtt < 2_000, `table ${t.table}: round trip ${row.rtt} ms`);
    }
    log('tables:', shown.map((r) => `${r.table}@${r.region} ${r.rtt} ms`).join(', '));
    const pinged = new Set(sockets.map((u) => new URL(u).host));
    for (const t of lobby.tables) {
      check(pinged.has(new URL(t.public_url).host), `the page opened no WebSocket to ${t.public_url}: ${[...pinged]}`);
    }

    const regionRows = await page.$$eval('[data-testid=region-row]', (rs) => rs.map((r) => [r.dataset.region, r.textContent]));
    check(regionRows.length === regions.regions.length, `the page shows ${regionRows.length} regions; the API ${regions.regions.length}`);
    for (const g of regions.regions) {
      check(regionRows.some(([name]) => name === g.region), `region ${g.region} is missing from the page`);
    }

    // The suggestion is the lowest round trip (the page keeps exact times; the rows show whole ms).
    const suggested = await page.getAttribute('[data-testid=suggest]', 'data-table');
    const best = Math.min(...shown.map((r) => r.rtt));
    const pick = shown.find((r) => r.table === suggested);
    check(pick && pick.rtt <= best + 1, `the page suggests ${suggested}, but ${JSON.stringify(shown)}`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'lobby.png'), fullPage: true });

    // Joining goes to that table's own address, and its game page is that table's.
    const target = lobby.tables.find((t) => t.table === suggested);
    await page.click('[data-testid=join-nearest]');
    await page.waitForURL(target.public_url);
    await page.waitForFunction((t) => document.getElementById('table-name').textContent === 'table ' + t,
      suggested, { timeout: 15_000 }).catch(() => { throw new Failure(`joining ${suggested} did not open its game page`); });
    log(`suggested ${suggested} (${pick.rtt} ms); its join link opened ${target.public_url}`);
  } finally {
    await browser.close().catch(() => {});
  }
  check(problems.length === 0, 'the lobby reported problems:\n  ' + problems.join('\n  '));
}

await runOnce('lobby', main, TOTAL_TIMEOUT_MS);
