// The lobby's pure parts (no DOM), shared by the page (lobby.js) and its unit tests: where a
// table is reached, how its ping is summarised, and which table is nearest.

/** The WebSocket URL of a table reached at `pageUrl` (its public URL, ending in `/`). */
export function wsUrlOf(pageUrl) {
  const u = new URL('ws', pageUrl);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

/** Where a lobby row is joined: its public URL, or this page's own table when it has none. */
export function joinUrlOf(table, ownTable, here) {
  if (table.public_url) return table.public_url;
  return table.table === ownTable ? new URL('./', here).href : null;
}

/** The median of some round-trip samples (ms); null when there are none. */
export function median(samples) {
  const s = samples.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * The nearest joinable table: the lowest measured round trip; ties go to the table with more
 * players online (a livelier table), then to the first by name.
 * `rtts` maps a join URL to its median (ms) or null when unmeasured or unreachable.
 */
export function nearest(rows, rtts) {
  let best = null;
  for (const r of rows) {
    const rtt = r.url ? rtts.get(r.url) : null;
    if (rtt == null) continue;
    const better = !best || rtt < best.rtt ||
      (rtt === best.rtt && (r.players_online > best.row.players_online ||
        (r.players_online === best.row.players_online && r.table < best.row.table)));
    if (better) best = { row: r, rtt };
  }
  return best;
}
