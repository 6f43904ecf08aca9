// The live multiplier graph on a <canvas> (the CSP allows no inline styles, and a canvas needs
// none). Drawn every animation frame from the model's view; nothing here changes state.

/** A round axis step near range/target: 1, 2, 2.5 or 5 times a power of ten. */
export function niceStep(range, target) {
  const raw = range / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

/**
 * Draws the stage's graph for view `v` ({ phase, x100, elapsed }) on `canvas`: the axes, the
 * curve up to now (or to the crash), and the cash-out markers of `bets`, ours (`mine(bet)`) in
 * blue. Floats are only used here, to draw between server ticks; the numbers shown come from
 * the model.
 */
export function drawGraph(canvas, v, { growthPerMs, bets, mine }) {
  const ctx = canvas.getContext('2d');
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const pad = { l: 54, r: 22, t: 22, b: 32 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  const g = growthPerMs;
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
  for (const b of bets) {
    if (b.status !== 'won' || !b.cashout_x100) continue;
    const m = b.cashout_x100 / 100;
    const t = Math.log(m) / g;
    if (t > elapsed) continue;
    const own = mine(b);
    ctx.beginPath();
    ctx.arc(px(t), py(m), own ? 5 : 3.5, 0, Math.PI * 2);
    ctx.fillStyle = own ? '#5b9dff' : 'rgba(246,197,68,0.9)';
    ctx.fill();
  }
}
