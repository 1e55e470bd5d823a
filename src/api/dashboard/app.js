// infergrid dashboard: polls /admin/overview once a second and redraws. No libraries, no build:
// the page must work offline from the coordinator alone. Charts are hand-drawn SVG sparklines
// over the last HISTORY_POINTS snapshots kept in this page.

const OVERVIEW_URL = '../admin/overview';
const KEY_STORAGE = 'infergrid-api-key';
const POLL_INTERVAL_MS = 1000;
/** A snapshot older than this marks the page stale. */
const STALE_AFTER_MS = 5000;
const HISTORY_POINTS = 120;
/** A chart's x axis spans at least this many points, so a new page does not stretch two of them. */
const MIN_CHART_POINTS = 30;
const SVG_NS = 'http://www.w3.org/2000/svg';

/** key -> recent values, oldest first */
const history = new Map();
let lastOkAtMs = 0;
let polls = 0;

function remember(key, value) {
  let points = history.get(key);
  if (!points) {
    points = [];
    history.set(key, points);
  }
  points.push(typeof value === 'number' && Number.isFinite(value) ? value : null);
  if (points.length > HISTORY_POINTS) points.shift();
  return points;
}

/** An SVG sparkline of `series` (arrays of numbers or null), scaled to their common maximum. */
function sparkline(series, { area = true } = {}) {
  const width = 100;
  const height = 30;
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  let max = 0;
  for (const s of series) for (const v of s) if (v !== null && v > max) max = v;
  if (max === 0) max = 1;
  const slots = Math.max(MIN_CHART_POINTS, ...series.map((s) => s.length));
  const x = (i) => (i / (slots - 1)) * width;
  series.forEach((points, n) => {
    // right-aligned: the newest point is always at the right edge
    const offset = slots - points.length;
    const coords = [];
    points.forEach((v, i) => {
      if (v !== null) coords.push([x(offset + i), height - (v / max) * (height - 2) - 1]);
    });
    if (coords.length === 0) return;
    const d = coords.map(([cx, cy], i) => `${i === 0 ? 'M' : 'L'}${cx.toFixed(2)},${cy.toFixed(2)}`).join('');
    if (area && n === 0) {
      const fill = document.createElementNS(SVG_NS, 'path');
      fill.setAttribute('class', 'area');
      fill.setAttribute(
        'd',
        `${d}L${coords[coords.length - 1][0].toFixed(2)},${height}L${coords[0][0].toFixed(2)},${height}Z`,
      );
      svg.append(fill);
    }
    const line = document.createElementNS(SVG_NS, 'path');
    line.setAttribute('class', n === 0 ? 'line' : 'line second');
    line.setAttribute('d', d);
    svg.append(line);
  });
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = `max ${fmtNumber(max)}`;
  svg.append(title);
  return svg;
}

/** At most 3 significant-ish digits after the point, no trailing zeros: 0.42, 7.5, 24.1, 1,250. */
function fmtNumber(x) {
  if (x === null || x === undefined) return '–';
  if (x >= 100) return Math.round(x).toLocaleString('en-US');
  return String(Number(x.toFixed(x >= 10 ? 1 : 2)));
}

function fmtRate(x) {
  if (x === null || x === undefined) return '–';
  return x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1);
}

function fmtPercent(x) {
  return x === null || x === undefined ? '–' : `${(x * 100).toFixed(1)}%`;
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

/** An element; `value` is the raw figure behind a formatted `text` (for scripts and tests). */
function el(tag, { text, cls, field, title, value } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = String(text);
  if (cls) node.className = cls;
  if (field) node.dataset.field = field;
  if (title) node.title = title;
  if (value !== undefined && value !== null) node.dataset.value = String(value);
  for (const child of children) node.append(child);
  return node;
}

function pill(text, kind) {
  return el('span', { text, cls: `pill ${kind}` });
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function renderModels(models) {
  const body = document.querySelector('#models tbody');
  const rows = models.map((m) => {
    const rps = remember(`model:${m.name}:rps`, m.requestsPerSecond);
    const p99 = remember(`model:${m.name}:p99`, m.latencyMs?.p99 ?? null);
    const batch =
      m.recentMeanBatchSize !== null || m.meanBatchSize !== null
        ? `${fmtNumber(m.recentMeanBatchSize)} (${fmtNumber(m.meanBatchSize)})`
        : '–';
    const cache = m.cache ? `${fmtPercent(m.cache.recentHitRate)} (${fmtPercent(m.cache.hitRate)})` : 'off';
    const versions = m.versions.map((v) => v.version).join(', ');
    const tr = el('tr', {}, [
      el('td', { text: m.name, cls: 'name', title: `versions: ${versions}` }),
      el('td', {}, [m.ready ? pill('ready', 'ok') : pill('not ready', 'bad')]),
      el('td', { text: fmtRate(m.requestsPerSecond), cls: 'num', field: 'rps', value: m.requestsPerSecond }),
      el('td', { cls: 'spark-col' }, [sparkline([rps])]),
      el('td', { text: m.requests.toLocaleString('en-US'), cls: 'num', field: 'requests' }),
      el('td', { text: m.errors.toLocaleString('en-US'), cls: 'num', field: 'errors' }),
      el('td', { text: fmtNumber(m.latencyMs?.p50), cls: 'num', field: 'p50', value: m.latencyMs?.p50 }),
      el('td', { text: fmtNumber(m.latencyMs?.p99), cls: 'num', field: 'p99', value: m.latencyMs?.p99 }),
      el('td', { cls: 'spark-col' }, [sparkline([p99], { area: false })]),
      el('td', { text: batch, cls: 'num', field: 'batch' }),
      el('td', { text: m.queueDepth, cls: 'num', field: 'queue' }),
      el('td', { text: cache, cls: 'num', field: 'cache' }),
    ]);
    tr.dataset.model = m.name;
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById('models-empty').hidden = models.length > 0;
}

function renderWorkers(workers, unreachable) {
  const body = document.querySelector('#workers tbody');
  const rows = workers.map((w) => {
    const load = remember(`worker:${w.id}:inflight`, w.inFlight);
    const ready = w.models.filter((m) => m.state === 'ready').map((m) => m.name);
    const state =
      w.state === 'ready'
        ? pill('ready', 'ok')
        : pill(w.state === 'removing' ? 'removing' : 'draining', 'warn');
    const health = w.health === 'healthy' ? pill('healthy', 'ok') : pill(w.health, 'bad');
    const tr = el('tr', {}, [
      el('td', { text: w.id, cls: 'name', field: 'id', title: w.address ?? w.origin }),
      el('td', { text: w.pool ?? '–' }),
      el('td', { text: w.pid, cls: 'num' }),
      el('td', { field: 'state' }, [state]),
      el('td', { field: 'health', title: w.lastRttMs === null ? '' : `ping ${w.lastRttMs} ms` }, [health]),
      el('td', { text: w.inFlight, cls: 'num', field: 'inflight' }),
      el('td', { cls: 'spark-col' }, [sparkline([load])]),
      el('td', { text: w.queueDepth ?? '?', cls: 'num', field: 'queue' }),
      el('td', { text: w.requests.toLocaleString('en-US'), cls: 'num' }),
      el('td', { text: w.failures.toLocaleString('en-US'), cls: 'num' }),
      el('td', {
        text: ready.length ? ready.join(', ') : 'none',
        field: 'models',
        title: w.models.map((m) => `${m.name}@${m.version}: ${m.state}`).join('\n'),
      }),
    ]);
    tr.dataset.worker = w.id;
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById('workers-empty').hidden = workers.length > 0;
  const warn = document.getElementById('unreachable');
  warn.hidden = unreachable.length === 0;
  warn.textContent = `No statistics from: ${unreachable.join(', ')}`;
}

function render(o) {
  const s = o.server;
  setText('version', s.version);
  setText('uptime', fmtDuration(s.uptimeMs));
  setText('updated', new Date(o.timestampMs).toLocaleTimeString());
  setText('rate-window', s.rateWindowS);

  const queued = o.models.reduce((n, m) => n + m.queueDepth, 0);
  setText('total-rps', fmtRate(s.requestsPerSecond));
  document
    .getElementById('chart-rps')
    .replaceChildren(sparkline([remember('total:rps', s.requestsPerSecond)]));
  setText('total-inflight', s.inFlight);
  setText('total-queue', queued);
  document
    .getElementById('chart-load')
    .replaceChildren(sparkline([remember('total:inflight', s.inFlight), remember('total:queue', queued)]));
  setText('total-requests', s.requests.toLocaleString('en-US'));
  setText('total-errors', s.errors.toLocaleString('en-US'));
  const codes = Object.entries(s.errorsByCode);
  setText(
    'errors-by-code',
    codes.length ? codes.map(([code, n]) => `${code} ${n}`).join(' · ') : 'no errors',
  );

  if (o.cache) {
    setText('cache-hit', fmtPercent(o.cache.hitRate));
    setText(
      'cache-detail',
      `${o.cache.hits.toLocaleString('en-US')} hits · ${o.cache.misses.toLocaleString('en-US')} misses · ${o.cache.store}`,
    );
  } else {
    setText('cache-hit', '–');
    setText('cache-detail', 'cache not started');
  }
  const healthy = o.workers.filter((w) => w.health === 'healthy' && !w.draining).length;
  setText('workers-healthy', `${healthy} / ${o.workers.length}`);
  setText('routing-detail', `${o.routing.retries} retries · ${o.routing.hedges} hedges`);

  renderModels(o.models);
  renderWorkers(o.workers, o.unreachableWorkers);
}

function setStatus(state, text) {
  const status = document.getElementById('status');
  status.dataset.state = state;
  status.textContent = text;
  document.getElementById('status-dot').className = `dot ${state}`;
}

async function poll() {
  try {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = key ? { authorization: `Bearer ${key}` } : {};
    const res = await fetch(OVERVIEW_URL, { cache: 'no-store', headers });
    // a coordinator with API keys: ask for one (the page's own files need none)
    document.getElementById('key-form').hidden = !(res.status === 401 || res.status === 403);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json());
    lastOkAtMs = Date.now();
    polls++;
    document.body.dataset.polls = String(polls);
    setStatus('live', 'live');
  } catch (err) {
    const stale = Date.now() - lastOkAtMs > STALE_AFTER_MS;
    setStatus(stale ? 'down' : 'stale', `cannot reach the coordinator (${err.message})`);
  } finally {
    // the next poll starts after this one ends: a slow coordinator is never asked twice at once
    setTimeout(poll, POLL_INTERVAL_MS);
  }
}

document.getElementById('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = document.getElementById('key-input');
  sessionStorage.setItem(KEY_STORAGE, input.value.trim());
  input.value = '';
});

poll();
