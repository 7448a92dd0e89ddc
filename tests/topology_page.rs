//! The live topology page in a real browser: headless Chromium, driven
//! over the DevTools protocol, opens `/topology` on the real server (with a
//! token, as a user would), and the test checks what the page has drawn:
//! the fixture's nodes and edges, a join made through the API appearing
//! without a reload, the page resuming after the server is killed and
//! started again. A screenshot is saved as an artifact
//! (`target/tmp/topology-page.png`). A second run with 1,000 containers
//! checks that an update is drawn within a second (a bound, not a
//! benchmark). Then what a newcomer sees: an empty topology says how to
//! fill it, counts say "1 host", and the edge labels around a busy CEN do
//! not pile up (the ones that fit are shown, the others on focus); the
//! example topology is saved as `target/tmp/topology-example.png`. Last,
//! the timeline: an older kept revision drawn read-only with what changed
//! since outlined, then back to live (`target/tmp/topology-timeline.png`).
//!
//! Needs Chromium (`.ci/run` installs Debian's). In CI (`CI` set) a missing
//! browser fails the test; elsewhere it skips with a loud message.

mod browser;
mod common;

use browser::{chromium, Browser};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// `leviathan serve` on a given address (to restart on the same one).
fn start_at(state: &Path, listen: &str, token: &str) -> Server {
    Server::start_at(state, listen, &["--token", token])
}

const LIVE: &str = "window.leviathanTopology && leviathanTopology.ready && document.body.dataset.state === 'live'";

async fn sorted(b: &mut Browser, expr: &str) -> Vec<String> {
    let v = b.eval(&format!("{expr}.map(e => e.id()).sort()")).await;
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn topology_page_draws_the_fixture_follows_a_join_and_resumes_after_a_restart() {
    let Some(binary) = chromium("topology_page_draws_the_fixture_follows_a_join_and_resumes_after_a_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let listen = format!("127.0.0.1:{}", free_port());
    let s = start_at(&state, &listen, "t0p0");
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;

    let mut b = Browser::launch(binary).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=t0p0")})).await;
    b.wait_until(LIVE).await;

    // The fixture: one host, 16 containers, 5 CENs, 17 memberships, 2 CINs.
    let d = s.gql("{ containers { id } cens { id containers { id } } }", json!({})).await;
    let mut want: Vec<String> = vec!["h:host1".into()];
    want.extend(d["containers"].as_array().unwrap().iter().map(|c| format!("c:host1/{}", c["id"].as_str().unwrap())));
    let mut edges = Vec::new();
    for c in d["cens"].as_array().unwrap() {
        let cen = c["id"].as_str().unwrap();
        want.push(format!("n:{cen}"));
        for m in c["containers"].as_array().unwrap() {
            edges.push(format!("m:{cen}|host1/{}", m["id"].as_str().unwrap()));
        }
    }
    want.sort();
    edges.sort();
    assert_eq!(sorted(&mut b, "leviathanTopology.cy.nodes()").await, want);
    assert_eq!(sorted(&mut b, "leviathanTopology.cy.edges()").await, edges);
    assert_eq!(edges.len(), 17);
    assert_eq!(b.eval("leviathanTopology.cinIds()").await, json!(["cin1", "cin2"]));
    // CIN addresses are on the membership edges.
    let addr = s.gql("{ container(id: \"c1\") { interfaces { address } } }", json!({})).await;
    let label = b.eval("leviathanTopology.cy.getElementById('m:cen1|host1/c1').data('label')").await;
    assert_eq!(label, addr["container"]["interfaces"][0]["address"]);
    // Details on click.
    b.eval("leviathanTopology.cy.getElementById('n:cen1').emit('tap'); true").await;
    b.wait_until("document.getElementById('details').textContent.includes('\"wiringType\": \"BRIDGE\"')").await;
    b.eval("window.noReload = 42").await;

    // A join through the API appears without a reload.
    s.gql("mutation { containerJoinCen(input: {containerId: \"c99\", cenId: \"cen1\"}) { revision } }", json!({}))
        .await;
    b.eval("leviathanTopology.whenDrawn('m:cen1|host1/c99')").await;
    assert_eq!(b.eval("leviathanTopology.cy.getElementById('c:host1/c99').data('parent')").await, "h:host1");
    let addr = s.gql("{ container(id: \"c99\") { interfaces { address } } }", json!({})).await;
    b.wait_until(&format!(
        "leviathanTopology.cy.getElementById('m:cen1|host1/c99').data('label') === {}",
        addr["container"]["interfaces"][0]["address"]
    ))
    .await;
    assert_eq!(b.eval("window.noReload").await, 42);

    // The server dies; the page says so, and resumes when it is back.
    s.kill9();
    b.wait_until("document.body.dataset.state === 'reconnecting'").await;
    let s = start_at(&state, &listen, "t0p0");
    s.gql("mutation { containerJoinCen(input: {containerId: \"c100\", cenId: \"cen2\"}) { revision } }", json!({}))
        .await;
    b.eval("leviathanTopology.whenDrawn('m:cen2|host1/c100')").await;
    b.wait_until(LIVE).await;
    assert_eq!(b.eval("leviathanTopology.revision").await, json!(s.revision().await));
    assert_eq!(b.eval("window.noReload").await, 42);
    assert_eq!(b.eval("leviathanTopology.cy.edges().length").await, 19);
    // A leave takes the edge away.
    s.gql("mutation { containerLeaveCen(input: {containerId: \"c100\", cenId: \"cen2\"}) { revision } }", json!({}))
        .await;
    b.wait_until("leviathanTopology.cy.getElementById('m:cen2|host1/c100').empty()").await;
    assert_eq!(b.eval("leviathanTopology.cy.edges().length").await, 18);

    let shot = b.screenshot("topology-page.png").await;
    eprintln!("screenshot: {}", shot.display());

    // The page wants the token; its scripts are public library code.
    assert_eq!(reqwest::get(s.url("/topology")).await.unwrap().status().as_u16(), 401);
    let js = reqwest::get(s.url("/topology/assets/cytoscape.min.js")).await.unwrap();
    assert_eq!(js.status().as_u16(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript");
    assert_eq!(reqwest::get(s.url("/topology/assets/nope.js")).await.unwrap().status().as_u16(), 404);
}

#[tokio::test]
async fn topology_page_with_1000_containers_draws_an_update_within_a_second() {
    let Some(binary) = chromium("topology_page_with_1000_containers_draws_an_update_within_a_second") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(&dir.path().join("s.db"), "127.0.0.1:0", "b1g");
    let cens: Vec<Value> = (0..20)
        .map(|c| json!({"id": format!("cen{c}"), "containerIds": (0..50).map(|i| format!("c{}", c * 50 + i)).collect::<Vec<_>>()}))
        .collect();
    s.gql(CEN_IMPORT, json!({"input": {"cens": cens}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin0", "cenIds": ["cen0", "cen1", "cen2"]}]}})).await;

    let mut b = Browser::launch(binary).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=b1g")})).await;
    b.wait_until(LIVE).await;
    assert_eq!(b.eval("leviathanTopology.cy.nodes(\"[kind='container']\").length").await, 1000);
    assert_eq!(b.eval("leviathanTopology.cy.edges().length").await, 1000);

    for (n, cen) in ["cen1", "cen7", "cen19"].into_iter().enumerate() {
        let edge = format!("m:{cen}|host1/new{n}");
        b.eval(&format!("window.drawn = leviathanTopology.whenDrawn('{edge}'); true")).await;
        let started = Instant::now();
        let q = format!(
            "mutation {{ containerJoinCen(input: {{containerId: \"new{n}\", cenId: \"{cen}\"}}) {{ revision }} }}"
        );
        s.gql(&q, json!({})).await;
        let committed = started.elapsed();
        let in_page = b.eval("window.drawn.then(t => t - leviathanTopology.received)").await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "join {n} took {took:?} to be drawn with 1,000 containers");
        eprintln!("join {n}: committed after {committed:?}, drawn after {took:?} ({in_page} ms in the page)");
    }
    b.screenshot("topology-page-1000.png").await;

    // The timeline at this size: revision 1 (the import) drawn again, with
    // what changed since outlined, then live again (times printed).
    b.wait_until("!document.getElementById('timeline').hidden").await;
    let started = Instant::now();
    b.eval(&slide_to(1)).await;
    b.wait_until("leviathanTopology.shown === 1").await;
    let back = started.elapsed();
    assert_eq!(b.eval("leviathanTopology.cy.nodes(\"[kind='container']\").length").await, 1000);
    assert_eq!(b.eval("leviathanTopology.cinIds()").await, json!([]));
    let diff = s.gql("{ diff(from: 1) { kind op } }", json!({})).await;
    let updated = diff["diff"].as_array().unwrap().iter().filter(|e| e["op"] == "UPDATE").count();
    assert!(updated >= 150, "the CIN over three CENs of 50 changed their memberships: {updated}");
    assert_eq!(b.eval("leviathanTopology.cy.elements('.changed').length").await, json!(updated));
    let started = Instant::now();
    b.eval("document.getElementById('live').click(); true").await;
    b.wait_until(LIVE).await;
    eprintln!("timeline at 1,000 containers: revision 1 drawn in {back:?}, live again in {:?}", started.elapsed());
    assert_eq!(b.eval("leviathanTopology.cy.nodes(\"[kind='container']\").length").await, 1003);
}

#[tokio::test]
async fn home_page_points_at_the_pages_the_schema_and_the_legacy_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "h0me"]);
    assert_eq!(reqwest::get(s.url("/")).await.unwrap().status().as_u16(), 401);
    let resp = reqwest::get(s.url("/?token=h0me")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = resp.text().await.unwrap();
    for link in
        ["href=\"/graphiql\"", "href=\"/topology\"", "href=\"/schema.graphql\"", "/cen/import", "/leviathan/monitor"]
    {
        assert!(page.contains(link), "no {link} in the home page");
    }
}

/// The label boxes (cytoscape's own) of the edges whose labels are shown.
const OVERLAPS: &str = "leviathanTopology.overlappingLabels()";

#[tokio::test]
async fn an_empty_topology_says_how_to_fill_it_and_counts_say_1_host() {
    let Some(binary) = chromium("an_empty_topology_says_how_to_fill_it_and_counts_say_1_host") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(&dir.path().join("s.db"), "127.0.0.1:0", "3mpty");
    let mut b = Browser::launch(binary).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=3mpty")})).await;
    b.wait_until(LIVE).await;
    let hint = "document.getElementById('empty')";
    assert_eq!(b.eval(&format!("{hint}.hidden")).await, false, "no hint on an empty topology");
    let text = b.eval(&format!("{hint}.innerText")).await;
    let text = text.as_str().unwrap();
    assert!(text.contains("No CENs yet") && text.contains("leviathan apply examples/topology.yaml"), "{text}");
    assert!(text.contains("cenImport"), "{text}");
    // Its link to the explorer carries the token.
    assert_eq!(b.eval(&format!("{hint}.querySelector('a').getAttribute('href')")).await, "/graphiql?token=3mpty");
    // The hint is on top of the canvas, seen.
    let seen = b
        .eval(&format!(
            "(() => {{ const r = {hint}.getBoundingClientRect(); return r.width > 100 && r.height > 20 && \
             document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2).closest('#empty') !== null; }})()"
        ))
        .await;
    assert_eq!(seen, true, "the hint is not visible");
    assert_eq!(
        b.eval("document.getElementById('counts').textContent").await,
        "0 hosts · 0 containers · 0 CENs · 0 CINs · 0 memberships"
    );

    // One CEN of one container: the hint goes, and every count is singular.
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "solo", "containerIds": ["c1"]}]}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin1", "cenIds": ["solo"]}]}})).await;
    b.eval("leviathanTopology.whenDrawn('m:solo|host1/c1')").await;
    b.wait_until("leviathanTopology.cinIds().length === 1").await;
    b.wait_until(&format!("{hint}.hidden")).await;
    assert_eq!(
        b.eval("document.getElementById('counts').textContent").await,
        "1 host · 1 container · 1 CEN · 1 CIN · 1 membership"
    );
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "duo", "containerIds": ["c1", "c2"]}]}})).await;
    b.eval("leviathanTopology.whenDrawn('m:duo|host1/c2')").await;
    assert_eq!(
        b.eval("document.getElementById('counts').textContent").await,
        "1 host · 2 containers · 2 CENs · 1 CIN · 3 memberships"
    );
}

/// `Math.random` as a fixed sequence (mulberry32 from seed 1).
const SEEDED_RANDOM: &str = "(() => { let a = 1; Math.random = () => { a = (a + 0x6D2B79F5) | 0; \
     let t = Math.imul(a ^ (a >>> 15), 1 | a); t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; \
     return ((t ^ (t >>> 14)) >>> 0) / 4294967296; }; })();";

#[tokio::test]
async fn edge_labels_around_a_busy_cen_do_not_overlap() {
    let Some(binary) = chromium("edge_labels_around_a_busy_cen_do_not_overlap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(&dir.path().join("s.db"), "127.0.0.1:0", "l4bels");
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;
    // A busy CEN besides the fixture's: twelve members on one CIN.
    let busy: Vec<String> = (1..=12).map(|i| format!("b{i}")).collect();
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "busy", "containerIds": busy}]}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin9", "cenIds": ["busy"]}]}})).await;

    let mut b = Browser::launch(binary).await;
    // The force-directed layout starts from random positions: a seeded
    // generator makes the drawing, and so the count of labels that fit,
    // the same on every run.
    b.call("Page.enable", json!({})).await;
    b.call("Page.addScriptToEvaluateOnNewDocument", json!({"source": SEEDED_RANDOM})).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=l4bels")})).await;
    b.wait_until(LIVE).await;
    assert_eq!(b.eval("Math.random.toString().includes('imul')").await, true, "the seeded generator is in place");
    let labelled = b.eval("leviathanTopology.cy.edges().filter(e => e.data('label')).length").await;
    assert_eq!(labelled, 20, "the 8 memberships of cen1 and cen2 (cin1, cin2) and the 12 of busy (cin9)");
    // The labels that fit are shown, and no two shown ones overlap.
    let shown = b.eval("leviathanTopology.shownLabels().length").await.as_u64().unwrap();
    eprintln!("{shown} of 20 labels shown");
    assert!(shown >= 5, "only {shown} labels shown");
    assert_eq!(b.eval(OVERLAPS).await, json!([]));
    // The check itself sees overlaps: every label shown at once overlaps.
    let all = "leviathanTopology.cy.edges().addClass('focus'); leviathanTopology.overlappingLabels().length";
    assert!(b.eval(all).await.as_u64().unwrap() > 0, "the busy CEN's labels never overlap: the check checks nothing");
    b.eval("leviathanTopology.cy.edges().removeClass('focus'); true").await;

    // Selecting the busy CEN shows all its labels; unselecting, the ones that fit.
    b.eval("leviathanTopology.cy.getElementById('n:busy').select(); true").await;
    let busy_shown = "leviathanTopology.shownLabels().filter(e => e.source().id() === 'n:busy').length";
    assert_eq!(b.eval(busy_shown).await, 12);
    b.eval("leviathanTopology.cy.getElementById('n:busy').unselect(); true").await;
    assert_eq!(b.eval("leviathanTopology.shownLabels().length").await, json!(shown));
    assert_eq!(b.eval(OVERLAPS).await, json!([]));

    // Dragged or laid out again, the labels are placed again.
    b.eval("document.getElementById('relayout').click(); true").await;
    assert_eq!(b.eval(OVERLAPS).await, json!([]));
    let shot = b.screenshot("topology-example.png").await;
    eprintln!("screenshot: {}", shot.display());
}

/// Moves the timeline's slider to `rev` as a user does (the `change`
/// event of the range input).
fn slide_to(rev: i64) -> String {
    format!("(() => {{ const s = document.getElementById('slider'); s.value = '{rev}'; s.dispatchEvent(new Event('change')); return s.value; }})()")
}

#[tokio::test]
async fn the_timeline_draws_a_kept_revision_read_only_outlines_what_changed_and_goes_back_live() {
    let Some(binary) =
        chromium("the_timeline_draws_a_kept_revision_read_only_outlines_what_changed_and_goes_back_live")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(&dir.path().join("s.db"), "127.0.0.1:0", "t1mel1ne");
    let cens = json!([{"id": "cen1", "containerIds": ["c1", "c2"]}, {"id": "cen2", "containerIds": ["c3"]}]);
    s.gql(CEN_IMPORT, json!({"input": {"cens": cens}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin1", "cenIds": ["cen1"]}]}})).await;
    let then = s.revision().await;
    // After `then`: a join (new container), a leave, a tag, a CEN deleted.
    for m in [
        "mutation { containerJoinCen(input: {containerId: \"c4\", cenId: \"cen1\"}) { revision } }",
        "mutation { containerLeaveCen(input: {containerId: \"c2\", cenId: \"cen1\"}) { revision } }",
        "mutation { containerSetTag(input: {id: \"c1\", tag: \"web\"}) { revision } }",
        "mutation { cenDelete(input: {id: \"cen2\"}) { revision } }",
    ] {
        s.gql(m, json!({})).await;
    }
    let now = s.revision().await;

    let mut b = Browser::launch(binary).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=t1mel1ne")})).await;
    b.wait_until(LIVE).await;
    b.wait_until(&format!(
        "!document.getElementById('timeline').hidden && document.getElementById('slider').max === '{now}'"
    ))
    .await;
    assert!(b.eval("Number(document.getElementById('slider').min)").await.as_i64().unwrap() <= then);
    assert_eq!(b.eval("document.getElementById('live').disabled").await, true);
    assert_eq!(b.eval("leviathanTopology.cy.getElementById('n:cen2').empty()").await, true);

    // Back to `then`: the graph as it stood, read-only.
    assert_eq!(b.eval(&slide_to(then)).await, then.to_string());
    b.wait_until(&format!("leviathanTopology.shown === {then}")).await;
    assert_eq!(b.eval("document.body.dataset.state").await, "past");
    assert_eq!(b.eval("document.body.dataset.revision").await, then.to_string());
    let nodes = sorted(&mut b, "leviathanTopology.cy.nodes()").await;
    assert_eq!(nodes, ["c:host1/c1", "c:host1/c2", "c:host1/c3", "h:host1", "n:cen1", "n:cen2"]);
    let edges = sorted(&mut b, "leviathanTopology.cy.edges()").await;
    assert_eq!(edges, ["m:cen1|host1/c1", "m:cen1|host1/c2", "m:cen2|host1/c3"]);
    assert_eq!(b.eval("leviathanTopology.cy.getElementById('c:host1/c1').data('label')").await, "c1");
    assert!(b.eval("document.getElementById('state').textContent").await.as_str().unwrap().contains("read-only"));
    assert_eq!(b.eval("document.getElementById('live').disabled").await, false);
    assert_eq!(b.eval("document.getElementById('when').textContent").await, format!("revision {then}"));
    // Outlined: what the server's diff since `then` names that was there.
    let diff = s.gql("query($r: Int!) { diff(from: $r) { kind id hostId container op } }", json!({"r": then})).await;
    let (mut changed, mut gone) = (Vec::new(), Vec::new());
    for e in diff["diff"].as_array().unwrap() {
        let (id, host) = (e["id"].as_str().unwrap(), e["hostId"].as_str().unwrap_or(""));
        let el = match e["kind"].as_str().unwrap() {
            "CONTAINER" => format!("c:{host}/{id}"),
            "CEN" => format!("n:{id}"),
            "MEMBERSHIP" => format!("m:{id}|{host}/{}", e["container"].as_str().unwrap()),
            "HOST" => format!("h:{id}"),
            _ => continue,
        };
        match e["op"].as_str().unwrap() {
            "CREATE" => {}
            "DELETE" => gone.push(el),
            _ => changed.push(el),
        }
    }
    changed.sort();
    gone.sort();
    assert!(changed.contains(&"c:host1/c1".to_string()), "{changed:?}");
    for el in ["m:cen1|host1/c2", "n:cen2", "m:cen2|host1/c3"] {
        assert!(gone.contains(&el.to_string()), "{el} not deleted since {then}: {gone:?}");
    }
    assert_eq!(sorted(&mut b, "leviathanTopology.cy.elements('.changed')").await, changed);
    assert_eq!(sorted(&mut b, "leviathanTopology.cy.elements('.gone')").await, gone);
    let since = b.eval("document.getElementById('since').textContent").await;
    assert!(since.as_str().unwrap().starts_with(&format!("Since revision {then}: ")), "{since}");
    // Details are read as of `then` too: c1 had no tag yet.
    b.eval("leviathanTopology.cy.getElementById('c:host1/c1').emit('tap'); true").await;
    b.wait_until(&format!(
        "document.getElementById('details').textContent.includes('container host1/c1 at revision {then}')"
    ))
    .await;
    assert!(b.eval("document.getElementById('details').textContent").await.as_str().unwrap().contains("\"tag\": null"));
    // Not live: the empty-topology hint (which offers edits) stays away.
    assert_eq!(b.eval("document.getElementById('empty').hidden").await, true);
    let shot = b.screenshot("topology-timeline.png").await;
    eprintln!("screenshot: {}", shot.display());

    // A change made while viewing the past, then back to live: both the
    // present and that change are drawn, and live updates resume.
    s.gql("mutation { containerJoinCen(input: {containerId: \"c5\", cenId: \"cen1\"}) { revision } }", json!({})).await;
    b.eval("document.getElementById('live').click(); true").await;
    b.wait_until(LIVE).await;
    assert_eq!(b.eval("leviathanTopology.viewing").await, Value::Null);
    b.eval("leviathanTopology.whenDrawn('m:cen1|host1/c5')").await;
    assert_eq!(b.eval("leviathanTopology.cy.getElementById('n:cen2').empty()").await, true);
    assert_eq!(b.eval("leviathanTopology.cy.getElementById('c:host1/c1').data('label')").await, "c1 [web]");
    assert_eq!(b.eval("leviathanTopology.cy.elements('.changed, .gone').length").await, 0);
    s.gql("mutation { containerJoinCen(input: {containerId: \"c6\", cenId: \"cen1\"}) { revision } }", json!({})).await;
    b.eval("leviathanTopology.whenDrawn('m:cen1|host1/c6')").await;
    let live = s.revision().await;
    b.wait_until(&format!("document.getElementById('slider').value === '{live}'")).await;
    assert_eq!(b.eval("leviathanTopology.revision").await, json!(live));

    // A real click at the slider's left end: the oldest kept revision.
    let at = b
        .eval("(() => { const r = document.getElementById('slider').getBoundingClientRect(); return [r.left + 1, r.top + r.height / 2]; })()")
        .await;
    let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
    for kind in ["mousePressed", "mouseReleased"] {
        let e = json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1});
        b.call("Input.dispatchMouseEvent", e).await;
    }
    let oldest = s.gql("{ keptRevisions { oldest } }", json!({})).await["keptRevisions"]["oldest"].clone();
    b.wait_until(&format!("leviathanTopology.shown === {oldest}")).await;
    assert_eq!(b.eval("document.getElementById('slider').value").await, oldest.to_string());
    assert_eq!(b.eval("document.body.dataset.state").await, "past");
}
