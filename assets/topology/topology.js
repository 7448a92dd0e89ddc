// The live topology page: one GraphQL query draws the topology, then the
// `changes` subscription (graphql-transport-ws on /graphql/ws) keeps it
// current. Each change touches only the elements it names: nothing is laid
// out again (new nodes are placed beside their neighbours), so the page
// stays responsive with thousands of containers. A dropped connection is
// reopened with `since` = the last revision applied, so nothing is missed.
"use strict";
(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  if (token) {
    for (const a of document.querySelectorAll("a.explorer")) {
      a.href = "/graphiql?token=" + encodeURIComponent(token);
    }
  }
  const COLOURS = { PENDING: "#9aa5b1", PREPARING: "#e0a030", DESTROYING: "#e0a030", READY: "#2e9d4f", FAILED: "#d64545" };
  const colour = (s) => COLOURS[s] || "#9aa5b1";

  const CONTAINER = "id host { id } tag status statusMessage cens { id }";
  const CEN = "id wiringType status statusMessage containers { id host { id } }";
  const CIN = "id subnet status statusMessage made cens { id } members { container { id host { id } } cen { id } address }";
  const SNAPSHOT = `{ revision hosts { id } containers { ${CONTAINER} } cens { ${CEN} } cins { ${CIN} } }`;
  const CHANGES = `subscription($since: Int) { changes(since: $since) { revision items { kind id hostId op
    after { __typename
      ... on Host { id }
      ... on Container { ${CONTAINER} }
      ... on Cen { ${CEN} }
      ... on Cin { ${CIN} }
      ... on Membership { cenId hostId containerId addresses { cinId address } } } } } }`;

  const hostNode = (h) => "h:" + h;
  const containerNode = (h, c) => "c:" + h + "/" + c;
  const cenNode = (id) => "n:" + id;
  const memberEdge = (cen, h, c) => "m:" + cen + "|" + h + "/" + c;

  const cy = cytoscape({
    container: document.getElementById("graph"),
    wheelSensitivity: 0.3,
    textureOnViewport: true,
    hideEdgesOnViewport: true,
    minZoom: 0.02,
    style: [
      { selector: "node", style: { "label": "data(label)", "font-size": 10, "text-valign": "bottom",
          "text-margin-y": 2, "min-zoomed-font-size": 6 } },
      { selector: "node[kind='host']", style: { "shape": "round-rectangle", "background-color": "#f0f4f8",
          "background-opacity": 0.6, "border-color": "#bcccdc", "border-width": 1, "text-valign": "top",
          "font-size": 12, "color": "#52606d" } },
      { selector: "node[kind='container']", style: { "width": 14, "height": 14,
          "background-color": (n) => colour(n.data("status")) } },
      { selector: "node[kind='cen']", style: { "shape": "round-rectangle", "width": 44, "height": 22,
          "text-valign": "center", "text-margin-y": 0, "color": "#fff", "font-weight": "bold",
          "background-color": (n) => colour(n.data("status")) } },
      // Edge labels are drawn along their edge, only where they fit (see
      // declutter) or for the edges in focus (hovered or selected).
      { selector: "edge", style: { "width": 1, "line-color": "#bcccdc", "curve-style": "haystack",
          "label": "", "font-size": 8, "color": "#52606d", "min-zoomed-font-size": 7,
          "text-rotation": "autorotate", "text-background-color": "#fff", "text-background-opacity": 0.85,
          "text-background-padding": 1 } },
      { selector: "edge.labelled, edge.focus", style: { "label": "data(label)" } },
      { selector: "edge.focus", style: { "z-index": 10, "line-color": "#7b93af", "width": 2, "color": "#1f2933" } },
      { selector: ":selected", style: { "border-width": 3, "border-color": "#2557a7", "line-color": "#2557a7" } },
    ],
  });

  // Addresses per membership edge: edge id -> Map(cinId -> address); and
  // the edges each CIN gave an address to (to clear them when it goes).
  const addresses = new Map();
  const cinEdges = new Map();
  const cins = new Map();
  let revision = 0;
  let ready = false;
  // Containers drawn inside their host. A compound node is redrawn with
  // any of its children, which costs a full frame at thousands of them:
  // past COMPOUND_LIMIT containers, hosts are plain nodes (chosen at load).
  const COMPOUND_LIMIT = 300;
  let compound = true;
  // When the last change arrived (performance.now()), for timing.
  let received = 0;
  let applyMs = 0;
  const waiters = [];

  function setState(state, text) {
    document.body.dataset.state = state;
    document.body.dataset.revision = String(revision);
    document.getElementById("state").textContent = text;
  }

  // "1 host", "2 hosts": every count shown says its noun right.
  const count = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;

  function updateCounts() {
    const n = (k) => cy.nodes("[kind='" + k + "']").length;
    document.getElementById("counts").textContent = [
      count(n("host"), "host"), count(n("container"), "container"), count(n("cen"), "CEN"),
      count(cins.size, "CIN"), count(cy.edges().length, "membership"),
    ].join(" · ");
    // An empty topology says how to fill it instead of a blank canvas.
    document.getElementById("empty").hidden = n("cen") > 0;
  }

  // ---- edge labels: the ones that fit, and those in focus ----

  // Past this many edges no label is shown unless in focus (they could
  // not be read at the zoom that shows them all, and placing them costs).
  const LABEL_LIMIT = 400;
  const overlap = (a, b) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
  const labelBox = (e) => e.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: true });

  // Shows each edge's label only if it overlaps no label already shown
  // and no node (with its name): a busy CEN keeps the labels that fit
  // and the rest are a hover away. Runs after a layout and after changes.
  function declutter() {
    const edges = cy.edges();
    cy.edges(".labelled").removeClass("labelled");
    if (edges.length > LABEL_LIMIT) return;
    const nodes = cy.nodes().filter((n) => !n.isParent()).map((n) => n.boundingBox({ includeLabels: true }));
    const kept = [];
    const byId = (a, b) => a.id().localeCompare(b.id(), undefined, { numeric: true });
    edges.filter((e) => e.data("label")).sort(byId).forEach((e) => {
      e.addClass("labelled");
      const box = labelBox(e);
      if (box.w > 0 && !kept.some((k) => overlap(k, box)) && !nodes.some((k) => overlap(k, box))) {
        kept.push(box);
      } else {
        e.removeClass("labelled");
      }
    });
  }

  let declutterTimer = null;
  function declutterSoon() {
    clearTimeout(declutterTimer);
    declutterTimer = setTimeout(declutter, 100);
  }

  // Focus: the edges of what is hovered or selected show their labels.
  let hovered = null;
  function refocus() {
    cy.batch(() => {
      cy.edges(".focus").removeClass("focus");
      let on = cy.$(":selected");
      if (hovered && hovered.inside()) on = on.union(hovered);
      on.edges().union(on.nodes().connectedEdges()).addClass("focus");
    });
  }
  cy.on("mouseover", "node, edge", (ev) => { hovered = ev.target; refocus(); });
  cy.on("mouseout", "node, edge", () => { hovered = null; refocus(); });
  cy.on("select unselect", refocus);
  cy.on("free", "node", declutterSoon);
  cy.on("layoutstop", declutterSoon);

  async function gql(query, variables) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = "Bearer " + token;
    const resp = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    const body = await resp.json();
    if (body.errors && body.errors.length) throw new Error(body.errors[0].message);
    return body.data;
  }

  // ---- placing new nodes without laying the graph out again ----

  function near(id) {
    const n = id && cy.getElementById(id);
    if (n && n.nonempty() && !n.isParent()) {
      const p = n.position();
      const a = Math.random() * 2 * Math.PI;
      const r = 50 + Math.random() * 30;
      return { x: p.x + r * Math.cos(a), y: p.y + r * Math.sin(a) };
    }
    if (cy.nodes().nonempty()) {
      const bb = cy.nodes().boundingBox();
      return { x: bb.x2 + 80, y: bb.y1 + Math.random() * Math.max(bb.h, 100) };
    }
    return { x: 0, y: 0 };
  }

  function ensureHost(h) {
    const id = hostNode(h);
    if (cy.getElementById(id).empty()) {
      cy.add({ group: "nodes", data: { id, kind: "host", label: "host " + h } });
    }
    return id;
  }

  function containerLabel(c) {
    return c.tag ? `${c.id} [${c.tag}]` : c.id;
  }

  function ensureContainer(h, c, nearId) {
    const id = containerNode(h, c);
    let n = cy.getElementById(id);
    if (n.empty()) {
      n = cy.add({ group: "nodes", position: near(nearId),
        data: { id, kind: "container", host: h, cid: c, label: c, status: "PENDING", parent: compound ? ensureHost(h) : undefined } });
      if (!compound) ensureHost(h);
    }
    return n;
  }

  function setContainer(c, nearId) {
    const n = ensureContainer(c.host.id, c.id, nearId);
    n.data({ label: containerLabel(c), status: c.status, tag: c.tag, message: c.statusMessage });
  }

  function setCen(c) {
    const id = cenNode(c.id);
    let n = cy.getElementById(id);
    if (n.empty()) {
      const first = c.containers[0];
      n = cy.add({ group: "nodes", position: near(first && containerNode(first.host.id, first.id)),
        data: { id, kind: "cen", cen: c.id } });
    }
    n.data({ label: c.id, status: c.status, wiring: c.wiringType, message: c.statusMessage });
    // Membership edges: add the missing, remove the gone.
    const want = new Set();
    for (const m of c.containers) {
      const eid = memberEdge(c.id, m.host.id, m.id);
      want.add(eid);
      if (cy.getElementById(eid).empty()) {
        const target = ensureContainer(m.host.id, m.id, id).id();
        cy.add({ group: "edges", data: { id: eid, source: id, target, label: edgeLabel(eid) } });
      }
    }
    n.connectedEdges().forEach((e) => { if (!want.has(e.id())) e.remove(); });
  }

  function edgeLabel(eid) {
    const m = addresses.get(eid);
    return m ? Array.from(m.values()).join(" ") : "";
  }

  function relabel(eid) {
    const e = cy.getElementById(eid);
    if (e.nonempty()) e.data("label", edgeLabel(eid));
  }

  function clearCin(id) {
    for (const eid of cinEdges.get(id) || []) {
      const m = addresses.get(eid);
      if (m) { m.delete(id); if (m.size === 0) addresses.delete(eid); }
      relabel(eid);
    }
    cinEdges.delete(id);
  }

  function setCin(c) {
    clearCin(c.id);
    const edges = [];
    for (const m of c.members) {
      if (!m.container || !m.cen) continue;
      const eid = memberEdge(m.cen.id, m.container.host.id, m.container.id);
      if (!addresses.has(eid)) addresses.set(eid, new Map());
      addresses.get(eid).set(c.id, m.address);
      edges.push(eid);
      relabel(eid);
    }
    cinEdges.set(c.id, edges);
    cins.set(c.id, c);
    renderCins();
  }

  // A membership: the edge, its ends, and its addresses (one per CIN).
  function setMember(m) {
    const cen = cenNode(m.cenId);
    if (cy.getElementById(cen).empty()) {
      cy.add({ group: "nodes", position: near(null), data: { id: cen, kind: "cen", cen: m.cenId, label: m.cenId, status: "PENDING" } });
    }
    const eid = memberEdge(m.cenId, m.hostId, m.containerId);
    if (cy.getElementById(eid).empty()) {
      const target = ensureContainer(m.hostId, m.containerId, cen).id();
      cy.add({ group: "edges", data: { id: eid, source: cen, target, label: "" } });
    }
    const byCin = new Map(m.addresses.map((x) => [x.cinId, x.address]));
    if (byCin.size) addresses.set(eid, byCin); else addresses.delete(eid);
    relabel(eid);
  }

  // A membership's id in the change feed is `cen/container`.
  function removeMember(id, host) {
    const i = id.indexOf("/");
    if (i < 0) return;
    const eid = memberEdge(id.slice(0, i), host, id.slice(i + 1));
    cy.getElementById(eid).remove();
    addresses.delete(eid);
  }

  function removeCin(id) {
    clearCin(id);
    cins.delete(id);
    renderCins();
  }

  function renderCins() {
    const ul = document.getElementById("cins");
    ul.textContent = "";
    for (const id of Array.from(cins.keys()).sort()) {
      const c = cins.get(id);
      const li = document.createElement("li");
      li.dataset.cin = id;
      const st = document.createElement("span");
      st.className = "status";
      st.style.background = colour(c.status);
      st.textContent = c.status;
      li.append(`${id} ${c.subnet} over ${c.cens.map((x) => x.id).join(", ")} `, st);
      li.title = c.statusMessage || "";
      li.onclick = () => {
        cy.elements().unselect();
        c.cens.forEach((x) => cy.getElementById(cenNode(x.id)).select());
        show(`CIN ${id}`, c);
      };
      ul.append(li);
    }
  }

  function show(title, obj) {
    const d = document.getElementById("details");
    d.textContent = "";
    const h = document.createElement("strong");
    h.textContent = title;
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(obj, null, 2);
    d.append(h, pre);
  }

  cy.on("tap", "node, edge", async (ev) => {
    const d = ev.target.data();
    try {
      if (d.kind === "container") {
        const r = await gql("query($h: ID, $id: ID!) { container(hostId: $h, id: $id) { id host { id } tag netnsPath status statusMessage interfaces { name cen { id } addresses { cinId address prefixLength } } defaultRoute { via gateway } pool { id } } }", { h: d.host, id: d.cid });
        show(`container ${d.host}/${d.cid}`, r.container);
      } else if (d.kind === "cen") {
        const r = await gql("query($id: ID!) { cen(id: $id) { id wiringType size made status statusMessage cins { id } } }", { id: d.cen });
        show(`CEN ${d.cen}`, r.cen);
      } else if (d.kind === "host") {
        show(d.label, { containers: ev.target.children().length });
      } else {
        show(`membership ${d.id.slice(2)}`, { addresses: Object.fromEntries(addresses.get(d.id) || []) });
      }
    } catch (e) {
      show("error", String(e));
    }
  });

  // ---- applying changes ----

  function apply(ev) {
    const t0 = performance.now();
    cy.batch(() => {
      for (const it of ev.items) {
        const a = it.after;
        switch (it.kind) {
          case "HOST":
            if (it.op === "DELETE") cy.getElementById(hostNode(it.id)).remove();
            else ensureHost(it.id);
            break;
          case "CONTAINER":
            if (it.op === "DELETE") cy.getElementById(containerNode(it.hostId, it.id)).remove();
            else if (a) setContainer(a, a.cens.length ? cenNode(a.cens[0].id) : null);
            break;
          case "CEN":
            if (it.op === "DELETE") cy.getElementById(cenNode(it.id)).remove();
            else if (a) setCen(a);
            break;
          case "CIN":
            if (it.op === "DELETE") removeCin(it.id);
            else if (a) setCin(a);
            break;
          case "MEMBERSHIP":
            if (it.op === "DELETE") removeMember(it.id, it.hostId);
            else if (a) setMember(a);
            break;
        }
      }
    });
    revision = Math.max(revision, ev.revision);
    setState("live", `live · revision ${revision}`);
    updateCounts();
    declutterSoon();
    applyMs = performance.now() - t0;
    settle();
  }

  // Promises of tests and scripts waiting for an element to be drawn.
  function settle() {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (cy.getElementById(waiters[i].id).nonempty()) {
        const w = waiters.splice(i, 1)[0];
        // Drawn: the renderer's next frame has it (asked for, in case
        // nothing else is pending).
        cy.one("render", () => w.resolve(performance.now()));
        cy.forceRender();
      }
    }
  }

  // Large graphs: each CEN with its members on a ring around it, CENs row
  // by row (linear time, readable at thousands of containers); small ones
  // get the force-directed layout.
  function clusters() {
    const pos = {};
    const placed = new Set();
    const cens = cy.nodes("[kind='cen']").sort((a, b) => a.id().localeCompare(b.id(), undefined, { numeric: true }));
    const rings = cens.map((cen) => {
      const members = cen.neighborhood("node[kind='container']").filter((n) => {
        if (placed.has(n.id())) return false;
        placed.add(n.id());
        return true;
      });
      return { cen, members, r: Math.max(50, (members.length * 24) / (2 * Math.PI)) };
    });
    const area = rings.reduce((s, g) => s + (2 * g.r + 60) ** 2, 0);
    const width = Math.max(800, Math.sqrt(area) * 1.3);
    let x = 0, y = 0, row = 0;
    for (const g of rings) {
      const d = 2 * g.r + 60;
      if (x > 0 && x + d > width) { x = 0; y += row; row = 0; }
      const cx = x + d / 2, cy0 = y + d / 2;
      pos[g.cen.id()] = { x: cx, y: cy0 };
      g.members.forEach((m, i) => {
        const a = (2 * Math.PI * i) / g.members.length;
        pos[m.id()] = { x: cx + g.r * Math.cos(a), y: cy0 + g.r * Math.sin(a) };
      });
      x += d; row = Math.max(row, d);
    }
    cy.nodes("[kind='container']").filter((n) => !placed.has(n.id())).forEach((n, i) => {
      pos[n.id()] = { x: (i % 40) * 30, y: y + row + 60 + Math.floor(i / 40) * 30 };
    });
    cy.nodes("[kind='host']").filter((n) => !n.isParent()).forEach((n, i) => {
      pos[n.id()] = { x: i * 200, y: -120 };
    });
    return pos;
  }

  function layout() {
    if (cy.nodes().length > 300) {
      const pos = clusters();
      cy.layout({ name: "preset", positions: (n) => pos[n.id()] || { x: 0, y: 0 } }).run();
    } else {
      cy.layout({ name: "cose", animate: false, randomize: true, nodeRepulsion: () => 40000,
        idealEdgeLength: () => 70, numIter: 1500, padding: 20 }).run();
    }
    cy.fit(undefined, 20);
    declutter();
  }

  async function load() {
    const d = await gql(SNAPSHOT, {});
    compound = d.containers.length <= COMPOUND_LIMIT;
    cy.batch(() => {
      cy.elements().remove();
      addresses.clear(); cinEdges.clear(); cins.clear();
      d.hosts.forEach((h) => ensureHost(h.id));
      d.containers.forEach((c) => setContainer(c, null));
      d.cens.forEach(setCen);
      d.cins.forEach(setCin);
    });
    revision = d.revision;
    layout();
    renderCins();
    updateCounts();
  }

  // ---- the subscription, reopened after a drop ----

  let backoff = 500;
  function connect() {
    const url = new URL("/graphql/ws", window.location.origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url, "graphql-transport-ws");
    ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: token ? { token } : {} }));
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (_) { return; }
      if (msg.type === "connection_ack") {
        backoff = 500;
        ws.send(JSON.stringify({ id: "changes", type: "subscribe",
          payload: { query: CHANGES, variables: { since: revision } } }));
        setState("live", `live · revision ${revision}`);
      } else if (msg.type === "ping") {
        ws.send(JSON.stringify({ type: "pong" }));
      } else if (msg.type === "next" && msg.payload && msg.payload.data) {
        received = performance.now();
        apply(msg.payload.data.changes);
      } else if (msg.type === "next" || msg.type === "error") {
        // The server cannot resume from here: draw everything again.
        console.warn("subscription error", msg.payload);
        ws.close();
        load().catch(() => {});
      }
    };
    ws.onclose = () => {
      setState("reconnecting", `reconnecting (last revision ${revision})…`);
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }

  document.getElementById("relayout").onclick = layout;
  document.getElementById("fit").onclick = () => cy.fit(undefined, 20);

  window.leviathanTopology = {
    cy,
    get revision() { return revision; },
    get ready() { return ready; },
    get received() { return received; },
    get applyMs() { return applyMs; },
    // Resolves once an element with this id is drawn (two frames later).
    whenDrawn(id) {
      return new Promise((resolve) => { waiters.push({ id, resolve }); settle(); });
    },
    cinIds() { return Array.from(cins.keys()).sort(); },
    // The edges whose labels are shown now, and the pairs of them whose
    // label boxes overlap (none, unless in focus).
    shownLabels() { return cy.edges().filter((e) => e.pstyle("label").strValue !== ""); },
    overlappingLabels() {
      const shown = this.shownLabels().map((e) => [e.id(), labelBox(e)]);
      const pairs = [];
      shown.forEach(([a, ba], i) => shown.slice(i + 1).forEach(([b, bb]) => { if (overlap(ba, bb)) pairs.push([a, b]); }));
      return pairs;
    },
    declutter,
  };

  (async function start() {
    for (;;) {
      try { await load(); break; } catch (e) {
        setState("reconnecting", "cannot load the topology: " + e.message + "; retrying…");
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
    ready = true;
    connect();
  })();
})();
