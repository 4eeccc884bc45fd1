// Shared by the pages: API calls with the browser's key, formatting, small SVG charts.
"use strict";

const Pix = {
  key() { return localStorage.getItem("pixserve.key") || ""; },
  setKey(value) { value ? localStorage.setItem("pixserve.key", value) : localStorage.removeItem("pixserve.key"); },
  headers() { const key = Pix.key(); return key ? { Authorization: `Bearer ${key}` } : {}; },

  // fetch relative to the page's <base>; JSON errors become Error(message) with .status.
  // Reads answered 502/503/504 (a restarting dependency) are retried a few times.
  async call(path, options = {}) {
    const retryable = !options.method || options.method === "GET";
    let response;
    for (let attempt = 1; ; attempt++) {
      response = await fetch(path, { ...options, headers: { ...Pix.headers(), ...(options.headers || {}) } });
      if (!retryable || attempt >= 4 || ![502, 503, 504].includes(response.status)) break;
      const wait = Number(response.headers.get("Retry-After")) * 1000 || 400 * attempt;
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 5000)));
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { const body = await response.json(); message = body.error ? `${body.error.code}: ${body.error.message}` : message; } catch (_) {}
      const error = new Error(message); error.status = response.status; throw error;
    }
    return response;
  },
  async json(path, options) { return (await Pix.call(path, options)).json(); },

  // Server-Sent Events over fetch (EventSource cannot send the Authorization header)
  async follow(path, onEvent, signal, headers = {}) {
    const response = await Pix.call(path, { signal, headers: { Accept: "text/event-stream", ...headers } });
    const reader = response.body.getReader(); const decoder = new TextDecoder(); let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const event = { type: "message", data: "" };
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event.type = line.slice(6).trim();
          else if (line.startsWith("data:")) event.data += line.slice(5).trim();
          else if (line.startsWith("id:")) event.id = line.slice(3).trim();
        }
        if (event.data) onEvent(event.type, JSON.parse(event.data));
      }
    }
  },

  // A job's events over the WebSocket channel (/v1/ws), with previews of items at work;
  // resolves at the job's "completed" event. Falls back to Server-Sent Events, resuming
  // after the last event seen, when the channel cannot open or drops (a proxy without
  // WebSocket support, a restart). onEvent(type, data) as for follow.
  async followLive(jobId, onEvent, onPreview) {
    let last = null;
    const viaSocket = new Promise((resolve, reject) => {
      const url = new URL("v1/ws", document.baseURI);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      const key = Pix.key();
      let socket;
      try { socket = new WebSocket(url, key ? ["pixserve", `bearer.${key}`] : ["pixserve"]); } catch (error) { reject(error); return; }
      let done = false;
      socket.onmessage = (message) => {
        const frame = JSON.parse(message.data);
        if (frame.type === "ready") socket.send(JSON.stringify({ type: "subscribe", job_id: jobId }));
        else if (frame.type === "preview") {
          socket.send(JSON.stringify({ type: "ack", seq: frame.seq }));
          if (onPreview) onPreview(frame);
        } else if (frame.type === "event") {
          last = frame.id;
          if (frame.event === "completed") { done = true; socket.close(); resolve(); }
          onEvent(frame.event, frame.data);
        } else if (frame.type === "error") { socket.close(); reject(new Error(frame.error.message)); }
      };
      socket.onerror = () => reject(new Error("the live channel failed"));
      socket.onclose = () => { if (!done) reject(new Error("the live channel closed")); };
    });
    try { await viaSocket; } catch (_) {
      await Pix.follow(`v1/jobs/${jobId}/events`, onEvent, undefined, last ? { "Last-Event-ID": last } : {});
    }
  },

  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) if (child !== null && child !== undefined)
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  },
  badge(text, kind) { return Pix.el("span", { class: `badge ${kind || text}`, text }); },
  bytes(n) { return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`; },
  time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "—"; },
  datetime(t) { return t ? new Date(t * 1000).toLocaleString() : "—"; },
  seconds(s) {
    if (s === null || s === undefined) return "—";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    return s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
  },
  num(x, digits = 0) { return x === null || x === undefined ? "—" : Number(x).toFixed(digits); },

  // A line chart of series [{name, color, values}] over x labels, as inline SVG
  chart(series, labels, { height = 150, yLabel = "" } = {}) {
    const width = 600, pad = { l: 40, r: 8, t: 8, b: 20 };
    const all = series.flatMap((s) => s.values.filter((v) => v !== null));
    const top = Math.max(1, ...all) * 1.1;
    const n = Math.max(labels.length - 1, 1);
    const x = (i) => pad.l + (i / n) * (width - pad.l - pad.r);
    const y = (v) => height - pad.b - (v / top) * (height - pad.t - pad.b);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`); svg.setAttribute("preserveAspectRatio", "none");
    const add = (tag, attrs, text) => { const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v); if (text) node.textContent = text; svg.append(node); return node; };
    for (const frac of [0, 0.5, 1]) {
      const v = top / 1.1 * frac;
      add("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), stroke: "#e3e6eb" });
      add("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#667085" }, Pix.num(v, v < 10 && v > 0 ? 1 : 0));
    }
    for (const i of [0, Math.floor(n / 2), n]) if (labels[i] !== undefined)
      add("text", { x: x(i), y: height - 4, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle", "font-size": 10, fill: "#667085" }, labels[i]);
    for (const s of series) {
      const points = s.values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
      if (points.length) add("polyline", { points: points.join(" "), fill: "none", stroke: s.color, "stroke-width": 2, "vector-effect": "non-scaling-stroke" });
    }
    const legend = Pix.el("div", { class: "legend" }, series.map((s) => Pix.el("span", {}, Pix.el("i", { style: `background:${s.color}` }), s.name)), yLabel ? Pix.el("span", { text: yLabel }) : null);
    return Pix.el("div", { class: "chart" }, svg, legend);
  },

  // The key field in the header: kept in localStorage, applied on change
  bindKeyField(input, onChange) {
    input.value = Pix.key();
    input.addEventListener("change", () => { Pix.setKey(input.value.trim()); onChange && onChange(); });
  },
};
