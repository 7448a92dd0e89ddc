//! A make or destroy followed through the `operation` subscription: a
//! progress bar on a terminal (indicatif hides it elsewhere), and one line
//! with the outcome either way.

use super::client::Client;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;

const OPERATION: &str = "subscription($id: ID!) { operation(id: $id) { stepsDone stepsTotal state message } }";

/// How an operation ended.
#[derive(Debug)]
pub struct Outcome {
    pub failed: bool,
    pub message: Option<String>,
}

pub async fn follow(client: &Client, op: &str, label: &str) -> anyhow::Result<Outcome> {
    let mut sub = client.subscribe(OPERATION, json!({"id": op})).await?;
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if std::io::stderr().is_terminal() {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} steps ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
    }
    bar.set_message(label.to_string());
    let mut last = None;
    while let Some(data) = sub.next().await? {
        let o = &data["operation"];
        bar.set_length(o["stepsTotal"].as_u64().unwrap_or(0));
        bar.set_position(o["stepsDone"].as_u64().unwrap_or(0));
        let state = o["state"].as_str().unwrap_or("").to_string();
        let done = state != "RUNNING";
        last = Some((state, o["message"].as_str().map(str::to_string), o["stepsDone"].as_u64().unwrap_or(0)));
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    let Some((state, message, steps)) = last else {
        anyhow::bail!("{label}: the server closed the connection before saying how it ended (see `leviathan get`)");
    };
    if state == "RUNNING" {
        anyhow::bail!("{label}: the connection ended while it was running (see `leviathan get`)");
    }
    let failed = state == "FAILED";
    eprintln!("{label}: {} ({steps} steps)", if failed { "FAILED" } else { "done" });
    Ok(Outcome { failed, message })
}
