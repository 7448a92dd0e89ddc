// The live topology page: one GraphQL query draws the topology, then the
// `changes` subscription (graphql-transport-ws on /graphql/ws) keeps it
// current. Each change touches only the elements it names: nothing is laid
// out again (new nodes are placed beside their neighbours), so the page
// stays responsive with thousands of containers. A dropped connection is
// reopened with `since` = the last revision applied, so nothing is missed.
// The timeline (a slider over keptRevisions) draws the topology as of a
// kept revision instead (`at(revision:)`, read-only: the subscription is
// closed meanwhile), outlines what `diff(from:)` says changed since, and
// "live" draws the present again and resumes the subscription.
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
      // Viewing a past revision: what changed since (dashed: deleted since).
      { selector: "node.changed", style: { "underlay-color": "#f08c00", "underlay-opacity": 0.5, "underlay-padding": 6 } },
      { selector: "node.gone", style: { "underlay-color": "#d64545", "border-width": 2, "border-style": "dashed",
          "border-color": "#d64545" } },
      { selector: "edge.changed", style: { "line-color": "#f08c00", "width": 3 } },
      { selector: "edge.gone", style: { "line-color": "#d64545" } },
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
  // The revision drawn while travelling; null while live.
  let viewing = null;

  function setState(state, text) {
    document.body.dataset.state = state;
    document.body.dataset.revision = String(viewing === null ? revision : viewing);
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
    // (In the past it would offer an edit: there, nothing is offered.)
    document.getElementById("empty").hidden = n("cen") > 0 || viewing !== null;
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
      if (changedCins.has(id)) li.className = changedCins.get(id);
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

  // One read of the details: live, or as of the revision drawn.
  async function read(decls, selection, variables) {
    if (viewing === null) return gql(`query(${decls}) { ${selection} }`, variables);
    const d = await gql(`query(${decls}, $at: Int!) { at(revision: $at) { ${selection} } }`, { ...variables, at: viewing });
    return d.at;
  }

  cy.on("tap", "node, edge", async (ev) => {
    const d = ev.target.data();
    const at = viewing === null ? "" : ` at revision ${viewing}`;
    try {
      if (d.kind === "container") {
        const r = await read("$h: ID, $id: ID!", "container(hostId: $h, id: $id) { id host { id } tag netnsPath status statusMessage interfaces { name cen { id } addresses { cinId address prefixLength } } defaultRoute { via gateway } pool { id } }", { h: d.host, id: d.cid });
        show(`container ${d.host}/${d.cid}${at}`, r.container);
      } else if (d.kind === "cen") {
        const r = await read("$id: ID!", "cen(id: $id) { id wiringType size made status statusMessage cins { id } }", { id: d.cen });
        show(`CEN ${d.cen}${at}`, r.cen);
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
    // Travelling: the subscription is closed; a late event is not drawn.
    if (viewing !== null) return;
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
    followLive();
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

  // Draws a whole topology (live, or `at` a revision). With `keep`, the
  // nodes drawn before keep their places and new ones go beside a
  // neighbour, so moving along the timeline does not shuffle the graph.
  function draw(d, keep) {
    const old = new Map();
    if (keep) cy.nodes().filter((n) => !n.isParent()).forEach((n) => old.set(n.id(), { ...n.position() }));
    compound = d.containers.length <= COMPOUND_LIMIT;
    cy.batch(() => {
      cy.elements().remove();
      addresses.clear(); cinEdges.clear(); cins.clear();
      d.hosts.forEach((h) => ensureHost(h.id));
      d.containers.forEach((c) => setContainer(c, null));
      d.cens.forEach(setCen);
      d.cins.forEach(setCin);
    });
    const leaves = cy.nodes().filter((n) => !n.isParent());
    const fresh = leaves.filter((n) => !old.has(n.id()));
    if (old.size === 0 || fresh.length > leaves.length / 2) {
      layout();
    } else {
      cy.batch(() => {
        leaves.forEach((n) => { if (old.has(n.id())) n.position(old.get(n.id())); });
        fresh.forEach((n) => {
          const placed = n.neighborhood("node").filter((x) => old.has(x.id()));
          n.position(near(placed.nonempty() ? placed[0].id() : null));
        });
      });
      declutter();
    }
    renderCins();
    updateCounts();
  }

  async function load(keep) {
    const d = await gql(SNAPSHOT, {});
    revision = d.revision;
    draw(d, keep);
  }

  // ---- the subscription, reopened after a drop ----

  let backoff = 500;
  // The open subscription, and the timer that reopens a dropped one.
  let socket = null;
  let reconnectTimer = null;
  function connect() {
    reconnectTimer = null;
    if (viewing !== null) return;
    const url = new URL("/graphql/ws", window.location.origin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url, "graphql-transport-ws");
    socket = ws;
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
        load(true).catch(() => {});
      }
    };
    ws.onclose = () => {
      // Closed to travel: the timeline reopens it on the way back.
      if (ws !== socket || viewing !== null) return;
      setState("reconnecting", `reconnecting (last revision ${revision})…`);
      reconnectTimer = setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }

  // ---- the timeline: the topology as of a kept revision ----

  const slider = document.getElementById("slider");
  const when = document.getElementById("when");
  const liveButton = document.getElementById("live");
  const since = document.getElementById("since");
  // CIN id -> "changed" or "gone", for the CIN list while travelling.
  const changedCins = new Map();
  // What changed since the revision drawn: at most DIFF_LIMIT entries are
  // read (DIFF_PAGE a request); past that the summary says so.
  const DIFF_PAGE = 500;
  const DIFF_LIMIT = 5000;
  const AT = `query($r: Int!) { at(revision: $r) { revision atMs hosts { id } containers { ${CONTAINER} }
    cens { ${CEN} } cins { ${CIN} } } }`;
  const DIFF = `query($from: Int!, $first: Int, $after: String) { diff(from: $from, first: $first, after: $after) {
    kind id hostId container op cursor } }`;
  let travels = 0;
  // The revision whose drawing is complete (null: live).
  let shown = null;

  // The slider's ends: the kept revisions (asked again before each use,
  // as the oldest kept moves on); its handle is at the live end while live
  // (and left where the user's pointer holds it).
  let dragging = false;
  async function refreshKept() {
    const d = await gql("{ keptRevisions { oldest newest } }", {});
    slider.min = String(d.keptRevisions.oldest);
    slider.max = String(Math.max(d.keptRevisions.newest, revision));
    document.getElementById("timeline").hidden = false;
  }

  function followLive() {
    if (Number(slider.max) < revision) slider.max = String(revision);
    if (viewing !== null || dragging) return;
    slider.value = slider.max;
    when.textContent = `revision ${revision}`;
  }

  async function changesSince(from) {
    const out = [];
    let after = null;
    while (out.length < DIFF_LIMIT) {
      const d = await gql(DIFF, { from, first: DIFF_PAGE, after });
      out.push(...d.diff);
      if (d.diff.length < DIFF_PAGE) return { entries: out, more: false };
      after = d.diff[d.diff.length - 1].cursor;
    }
    return { entries: out, more: true };
  }

  function clearHighlights() {
    cy.elements(".changed, .gone").removeClass("changed gone");
    changedCins.clear();
    since.hidden = true;
  }

  // Outlines what changed since the revision drawn; what was created
  // since is not in that drawing and is only counted.
  function highlight(d) {
    const n = { CREATE: 0, UPDATE: 0, DELETE: 0 };
    cy.batch(() => {
      for (const e of d.entries) {
        n[e.op] = (n[e.op] || 0) + 1;
        const cls = e.op === "DELETE" ? "gone" : "changed";
        let id = null;
        if (e.kind === "HOST") id = hostNode(e.id);
        else if (e.kind === "CONTAINER") id = containerNode(e.hostId, e.id);
        else if (e.kind === "CEN") id = cenNode(e.id);
        else if (e.kind === "MEMBERSHIP") id = memberEdge(e.id, e.hostId, e.container);
        else if (e.kind === "CIN") changedCins.set(e.id, cls);
        if (id) cy.getElementById(id).addClass(cls);
      }
    });
    renderCins();
    since.textContent = `Since revision ${viewing}: ${n.CREATE} created, ${n.UPDATE} changed, ` +
      `${n.DELETE} deleted${d.more ? " (the first " + DIFF_LIMIT + " changes outlined)" : ""}.`;
    since.hidden = false;
  }

  function stopLive() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    const ws = socket;
    socket = null;
    if (ws) ws.close();
  }

  // Draws revision `rev` read-only; a later move of the slider wins over
  // an earlier one still loading.
  async function travel(rev) {
    const mine = ++travels;
    viewing = rev;
    slider.value = String(rev);
    when.textContent = `revision ${rev}`;
    stopLive();
    liveButton.disabled = false;
    setState("past", `revision ${rev} · loading…`);
    try {
      const [d, changes] = await Promise.all([gql(AT, { r: rev }), changesSince(rev)]);
      if (mine !== travels) return;
      clearHighlights();
      draw(d.at, true);
      highlight(changes);
      shown = rev;
      const at = d.at.atMs ? " · " + new Date(d.at.atMs).toISOString() : "";
      setState("past", `revision ${rev}${at} · read-only`);
    } catch (e) {
      if (mine !== travels) return;
      setState("past", `revision ${rev}: ${e.message}`);
    }
  }

  // Back to the present: drawn again, the subscription resumed after it.
  async function goLive() {
    const mine = ++travels;
    viewing = null;
    shown = null;
    liveButton.disabled = true;
    clearHighlights();
    setState("connecting", "back to live…");
    for (;;) {
      try { await load(true); break; } catch (e) {
        if (mine !== travels) return;
        setState("reconnecting", "cannot load the topology: " + e.message + "; retrying…");
        await new Promise((r) => setTimeout(r, backoff));
      }
    }
    if (mine !== travels) return;
    followLive();
    refreshKept().then(followLive).catch(() => {});
    connect();
  }

  slider.addEventListener("pointerdown", () => { dragging = true; refreshKept().catch(() => {}); });
  window.addEventListener("pointerup", () => { dragging = false; });
  slider.addEventListener("focus", () => { refreshKept().catch(() => {}); });
  slider.addEventListener("input", () => { when.textContent = `revision ${slider.value}`; });
  // The live end of the slider is live; anywhere before it, the past.
  slider.addEventListener("change", () => {
    const rev = Number(slider.value);
    if (rev < Number(slider.max)) travel(rev);
    else if (viewing !== null) goLive();
  });
  liveButton.onclick = () => { if (viewing !== null) goLive(); };

  document.getElementById("relayout").onclick = layout;
  document.getElementById("fit").onclick = () => cy.fit(undefined, 20);

  window.leviathanTopology = {
    cy,
    get revision() { return revision; },
    // The revision drawn from the timeline; null while live.
    get viewing() { return viewing; },
    get shown() { return shown; },
    travel,
    goLive,
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
      try { await load(false); break; } catch (e) {
        setState("reconnecting", "cannot load the topology: " + e.message + "; retrying…");
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
    ready = true;
    // A server without time travel keeps the timeline hidden.
    refreshKept().then(followLive).catch(() => {});
    connect();
  })();
})();
