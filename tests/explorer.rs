//! The explorer in a real browser: headless Chromium loads `/graphiql`
//! from the real server (with a token, the way a user opens it), the page's
//! scripts come from the server itself (no CDN), GraphiQL renders and its
//! first request reaches the API; its default text is shown whole (no
//! line cut at the editor's edge) in a wide and a narrow window.
//!
//! Needs Chromium (`.ci/run` installs Debian's). In CI (`CI` set) a missing
//! browser fails the test; elsewhere it skips with a loud message.

mod browser;
mod common;

use common::*;
use serde_json::json;
use std::process::Command;

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[tokio::test]
async fn explorer_renders_offline_and_reaches_the_api() {
    let Some(browser) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("Chromium is missing: .ci/run installs it, and CI must run this test");
        }
        eprintln!("\n*** SKIPPING explorer_renders_offline_and_reaches_the_api: no Chromium here; CI runs it ***\n");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--token", "expl0re"]);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    let profile = dir.path().join("profile");
    let url = s.url("/graphiql?token=expl0re");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args(browser::HEADLESS)
            .args(["--virtual-time-budget=15000", "--dump-dom"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("graphiql-container"), "GraphiQL did not render:\n{}", &dom[..dom.len().min(2000)]);
    assert!(
        dom.contains("data-api-reached=\"yes\""),
        "the page never reached the API:\n{}",
        &dom[..dom.len().min(2000)]
    );
    // The assets are the server's own, public; the page itself wants the token.
    let resp = reqwest::get(s.url("/graphiql/assets/graphiql.min.js")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/javascript");
    assert_eq!(reqwest::get(s.url("/graphiql")).await.unwrap().status().as_u16(), 401);
    assert_eq!(reqwest::get(s.url("/graphiql/assets/nope.js")).await.unwrap().status().as_u16(), 404);
}

/// The query editor's text, and the lines of it that do not fit in the
/// editor (their right end beyond the editor's visible width).
const EDITOR: &str = "(() => {
  const cm = document.querySelector('.graphiql-query-editor .CodeMirror');
  if (!cm || !cm.CodeMirror) return null;
  const edge = cm.querySelector('.CodeMirror-scroll').getBoundingClientRect().right;
  const cut = Array.from(cm.querySelectorAll('.CodeMirror-line > span'))
    .filter((s) => s.getBoundingClientRect().right > edge - 4)
    .map((s) => s.textContent);
  return { text: cm.CodeMirror.getValue(), cut, lines: cm.querySelectorAll('.CodeMirror-line').length };
})()";

#[tokio::test]
async fn explorer_default_text_is_whole_in_a_wide_and_a_narrow_window() {
    let Some(binary) = browser::chromium("explorer_default_text_is_whole_in_a_wide_and_a_narrow_window") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--token", "d3fault"]);
    let page = include_str!("../assets/graphiql/index.html");
    let start = page.find("const defaultQuery = `").unwrap() + "const defaultQuery = `".len();
    let want = &page[start..start + page[start..].find('`').unwrap()];
    assert!(want.contains("schema/examples/."), "{want}");
    let mut last = None;
    for width in [1280, 1024] {
        // Each width is a first visit, in a browser (and profile) of its
        // own: GraphiQL restores what an earlier visit kept in its local
        // storage, and a second visit in the same profile could come up
        // with an empty editor on a loaded machine.
        let b = last.insert(browser::Browser::launch(binary).await);
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b.call("Page.navigate", json!({"url": s.url("/graphiql?token=d3fault")})).await;
        b.wait_until(&format!("{EDITOR} && {EDITOR}.lines > 3")).await;
        let ed = b.eval(EDITOR).await;
        assert_eq!(ed["text"], want, "at {width} px");
        assert_eq!(ed["cut"], json!([]), "at {width} px these lines are cut off");
    }
    // The check sees a cut: a long line does not fit.
    let b = last.as_mut().expect("a browser");
    b.eval(&format!(
        "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue('# {}'); true",
        "x".repeat(300)
    ))
    .await;
    b.wait_until(&format!("{EDITOR}.cut.length === 1")).await;
}
