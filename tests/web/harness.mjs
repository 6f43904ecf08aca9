// What the browser tests (e2e.mjs, lobby.mjs) share: their log line, the failure type and check,
// Debian's Chromium launched headless with CSP violations reported as console errors, and the
// run-once wrapper that bounds the whole test and turns its outcome into the exit status.
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CRASHFLEET_CHROMIUM || '/usr/bin/chromium';

/** A log function whose lines start with `[name hh:mm:ss.mmm]`. */
export function logger(name) {
  return (...a) => console.log('[' + name + ' ' + new Date().toISOString().slice(11, 23) + ']', ...a);
}

/** A check that failed: reported by its message alone, without a stack. */
export class Failure extends Error {}

export function check(cond, message) {
  if (!cond) throw new Failure(message);
}

/**
 * Launches headless Chromium and a context whose pages report CSP violations as console errors.
 * Returns { browser, context }.
 */
export async function launch(viewport = { width: 1360, height: 900 }) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
    });
  });
  return { browser, context };
}

/**
 * Runs `main` once within `timeoutMs` and exits: 0 when it passed, 1 when it failed, 2 when it
 * ran out of time. `done` runs after a pass (e.g. to say where the screenshots are).
 */
export async function runOnce(name, main, timeoutMs, done = () => {}) {
  const timer = setTimeout(() => {
    console.error(`FAIL: the ${name} test did not finish within ${timeoutMs / 1000} s`);
    process.exit(2);
  }, timeoutMs);
  try {
    await main();
    clearTimeout(timer);
    done();
    console.log(`${name}: 1 passed, 0 failed`);
    process.exit(0);
  } catch (e) {
    clearTimeout(timer);
    console.error('FAIL: ' + (e instanceof Failure ? e.message : e && e.stack ? e.stack : String(e)));
    console.log(`${name}: 0 passed, 1 failed`);
    process.exit(1);
  }
}
