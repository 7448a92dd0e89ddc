//! A make or destroy followed through the `operation` subscription: a
//! progress display on a terminal (indicatif hides it elsewhere), and one
//! line with the outcome either way.
//!
//! Until the server has counted the steps (`stepsTotal` is 0) a spinner
//! says it is waiting: a bar of `0/0` would be drawn full. Each status the
//! server sends is drawn as it comes; when the operation ends, the bar
//! shows the final count and stays on the screen above the outcome line
//! (`make cen a: done (1 step)`), so the last picture is never a bar cut
//! short.

use super::client::Client;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::json;
use std::time::Duration;

const OPERATION: &str = "subscription($id: ID!) { operation(id: $id) { stepsDone stepsTotal state message } }";

/// How an operation ended.
#[derive(Debug)]
pub struct Outcome {
    pub failed: bool,
    pub message: Option<String>,
}

/// `1 step`, `2 steps`.
pub fn steps(n: u64) -> String {
    if n == 1 {
        "1 step".to_string()
    } else {
        format!("{n} steps")
    }
}

/// The terminal display: a spinner while the total is unknown, then a bar.
struct Display {
    bar: ProgressBar,
    counting: bool,
}

impl Display {
    fn new(label: &str) -> Display {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}: waiting for the server to count the steps ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Display { bar, counting: true }
    }

    /// Shows `done` of `total` (a total of 0 is not known yet).
    fn show(&mut self, done: u64, total: u64) {
        if total == 0 {
            return;
        }
        if self.counting {
            self.counting = false;
            self.bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {unit} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key("unit", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(if s.len() == Some(1) { "step" } else { "steps" });
                    })
                    .progress_chars("=> "),
            );
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    /// Leaves the final count on the screen (or nothing, when no total
    /// ever came and nothing was done).
    fn end(mut self, done: u64, total: u64) {
        self.show(done, total.max(done));
        if self.counting {
            self.bar.finish_and_clear();
        } else {
            self.bar.finish();
            // indicatif leaves the cursor at the end of the bar: the
            // outcome goes on the next line.
            if !self.bar.is_hidden() {
                eprintln!();
            }
        }
    }
}

pub async fn follow(client: &Client, op: &str, label: &str) -> anyhow::Result<Outcome> {
    let mut sub = client.subscribe(OPERATION, json!({"id": op})).await?;
    let mut display = Display::new(label);
    let mut last: Option<(String, Option<String>, u64, u64)> = None;
    loop {
        let data = match sub.next().await {
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(e) => {
                // The error goes on a line of its own, below the bar.
                let (done, total) = last.as_ref().map_or((0, 0), |l| (l.2, l.3));
                display.end(done, total);
                return Err(e);
            }
        };
        let o = &data["operation"];
        let (done, total) = (o["stepsDone"].as_u64().unwrap_or(0), o["stepsTotal"].as_u64().unwrap_or(0));
        display.show(done, total);
        let state = o["state"].as_str().unwrap_or("").to_string();
        let finished = state != "RUNNING";
        last = Some((state, o["message"].as_str().map(str::to_string), done, total));
        if finished {
            break;
        }
    }
    let Some((state, message, done, total)) = last else {
        display.end(0, 0);
        anyhow::bail!("{label}: the server closed the connection before saying how it ended (see `leviathan get`)");
    };
    display.end(done, total);
    if state == "RUNNING" {
        anyhow::bail!("{label}: the connection ended while it was running (see `leviathan get`)");
    }
    let failed = state == "FAILED";
    if failed {
        eprintln!("{label}: FAILED ({done} of {} done)", steps(total));
    } else {
        eprintln!("{label}: done ({})", steps(done));
    }
    Ok(Outcome { failed, message })
}

#[cfg(test)]
mod tests {
    use super::steps;

    #[test]
    fn one_step_many_steps() {
        assert_eq!(steps(0), "0 steps");
        assert_eq!(steps(1), "1 step");
        assert_eq!(steps(2), "2 steps");
        assert_eq!(steps(31), "31 steps");
    }
}
