// The analytics dashboard: spend, impressions, clicks and CTR over time per campaign,
// from the same /analytics API (X-API-Key), refreshed every few seconds.
import "./style.css";
import {
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";

Chart.register(LineController, LineElement, PointElement, LinearScale, Legend, Tooltip);

const KEY_STORAGE = "adplatform.analytics.apiKey";
const REFRESH_MS = 5000;
const TOP_N = 5;
const COLORS = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#8a4fff", "#29335c"];
const METRICS = {
  spend: { value: (p) => p.spend_micros / 1e6 },
  impressions: { value: (p) => p.impressions },
  clicks: { value: (p) => p.clicks },
  ctr: { value: (p) => (p.impressions ? (100 * p.clicks) / p.impressions : 0) },
};

const $ = (id) => document.getElementById(id);
const devKey = document.querySelector('meta[name="adp-dev-key"]')?.content || "";
let apiKey = localStorage.getItem(KEY_STORAGE) || devKey;
let timer = null;
let busy = false;
// What the page shows, also read by the browser test.
const view = { charts: {}, series: [], spanSeconds: 3600, refreshes: 0 };
window.adpDashboard = view;

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params || {})) url.searchParams.set(name, value);
  const response = await fetch(url, { headers: { "X-API-Key": apiKey } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function timeLabel(seconds, spanSeconds) {
  const date = new Date(seconds * 1000);
  const time = date.toISOString().slice(11, 16);
  return spanSeconds > 86400 ? `${date.toISOString().slice(5, 10)} ${time}` : time;
}

const TICK_STEPS = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

// Time ticks on whole minutes/hours: the smallest round step giving at most 8 ticks.
function alignedTicks(scale) {
  const span = scale.max - scale.min;
  const step = TICK_STEPS.find((s) => span / s <= 8) || 86400;
  const ticks = [];
  for (let t = Math.ceil(scale.min / step) * step; t <= scale.max; t += step) ticks.push({ value: t });
  scale.ticks = ticks;
}

function makeChart(metric) {
  return new Chart($(`chart-${metric}`), {
    type: "line",
    data: { datasets: [] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      parsing: false,
      normalized: true,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      elements: { point: { radius: 0, hitRadius: 6 }, line: { borderWidth: 2, tension: 0.2 } },
      scales: {
        x: {
          type: "linear",
          afterBuildTicks: alignedTicks,
          ticks: {
            maxTicksLimit: 8,
            callback: (value) => timeLabel(value, view.spanSeconds),
          },
        },
        y: { type: "linear", beginAtZero: true },
      },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12 } },
        tooltip: {
          callbacks: {
            title: (items) => (items.length ? new Date(items[0].parsed.x * 1000).toISOString() : ""),
          },
        },
      },
    },
  });
}

const charts = Object.fromEntries(Object.keys(METRICS).map((m) => [m, makeChart(m)]));
view.charts = charts;

function selectedPeriod() {
  const span = Number($("period").value);
  const to = Math.floor(Date.now() / 1000) + 1; // up to the current, still filling bucket
  return { span, from: to - span, to, granularity: span <= 86400 ? "minute" : "hour" };
}

function iso(seconds) {
  return new Date(seconds * 1000).toISOString();
}

async function refreshCampaignList(period) {
  const top = await api("/analytics/top", {
    metric: "spend",
    limit: 50,
    from: iso(period.to - 7 * 86400),
    to: iso(period.to),
  });
  const select = $("campaign");
  const current = select.value;
  const options = [new Option(`Top ${TOP_N} by spend`, "top")];
  for (const c of top.campaigns) {
    options.push(new Option(c.name ? `${c.name} (#${c.campaign_id})` : `campaign #${c.campaign_id}`, c.campaign_id));
  }
  select.replaceChildren(...options);
  select.value = [...select.options].some((o) => o.value === current) ? current : "top";
}

async function campaignsToShow(period) {
  const choice = $("campaign").value;
  if (choice !== "top") return [Number(choice)];
  const top = await api("/analytics/top", {
    metric: "spend",
    limit: TOP_N,
    from: iso(period.from),
    to: iso(period.to),
  });
  return top.campaigns.map((c) => c.campaign_id);
}

function render(series, period) {
  view.series = series;
  view.spanSeconds = period.span;
  for (const [metric, { value }] of Object.entries(METRICS)) {
    const chart = charts[metric];
    chart.data.datasets = series.map((s, i) => ({
      label: s.name ? `${s.name} (#${s.campaign_id})` : `#${s.campaign_id}`,
      campaignId: s.campaign_id,
      data: s.points.map((p) => ({ x: p.ts, y: value(p) })),
      borderColor: COLORS[i % COLORS.length],
      backgroundColor: COLORS[i % COLORS.length],
    }));
    chart.options.scales.x.min = period.from;
    chart.options.scales.x.max = period.to;
    chart.update();
  }
  const sum = (field) => series.reduce((t, s) => t + s.points.reduce((u, p) => u + p[field], 0), 0);
  const spend = sum("spend_micros");
  const impressions = sum("impressions");
  const clicks = sum("clicks");
  $("total-spend").textContent = `$${(spend / 1e6).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
  $("total-impressions").textContent = impressions.toLocaleString("en-US");
  $("total-clicks").textContent = clicks.toLocaleString("en-US");
  $("total-ctr").textContent = impressions ? `${((100 * clicks) / impressions).toFixed(2)}%` : "–";
}

async function refresh({ reloadList = false } = {}) {
  if (busy) return;
  busy = true;
  try {
    if (!apiKey) {
      setStatus("enter an API key to see data", true);
      document.body.dataset.state = "needs-key";
      return;
    }
    const period = selectedPeriod();
    if (reloadList) await refreshCampaignList(period);
    const ids = await campaignsToShow(period);
    const series = await Promise.all(
      ids.map((id) =>
        api(`/analytics/campaigns/${id}/timeseries`, {
          from: iso(period.from),
          to: iso(period.to),
          granularity: period.granularity,
        }),
      ),
    );
    render(series, period);
    view.refreshes += 1;
    const shown = ids.length ? `${ids.length} campaign${ids.length > 1 ? "s" : ""}` : "no campaigns with data yet";
    setStatus(`updated ${new Date().toISOString().slice(11, 19)} UTC · ${shown}`);
    document.body.dataset.state = "ready";
  } catch (error) {
    const hint = error.status === 401 ? " — check the API key" : "";
    setStatus(`${error.message}${hint}`, true);
    document.body.dataset.state = error.status === 401 ? "needs-key" : "error";
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  if ($("live").checked) timer = setInterval(() => refresh({ reloadList: view.refreshes % 6 === 0 }), REFRESH_MS);
}

$("api-key").value = apiKey;
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  if (apiKey) localStorage.setItem(KEY_STORAGE, apiKey);
  else localStorage.removeItem(KEY_STORAGE);
  refresh({ reloadList: true });
});
$("campaign").addEventListener("change", () => refresh());
$("period").addEventListener("change", () => refresh({ reloadList: true }));
$("live").addEventListener("change", schedule);

refresh({ reloadList: true });
schedule();
