//! `leviathan watch`: one line per change as it is committed, from the
//! `changes` subscription; a dropped connection is reopened from the last
//! revision printed, so no change is lost or printed twice.

use super::client::Client;
use super::WatchFormat;
use serde_json::{json, Value};
use std::io::Write as _;
use std::time::Duration;

const CHANGES: &str = "subscription($since: Int) { changes(since: $since) {
  revision mutation atMs actor items { kind id hostId op } } }";

/// Items shown on one line before "and N more".
const ITEMS_SHOWN: usize = 8;

/// One readable line:
/// `rev 12  cenImport  +cen cen1 ~container host1/c1  (ci, 12:04:05.123Z)`:
/// the changes, then who made them and when (UTC).
pub fn line(ev: &Value) -> String {
    let items = ev["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut parts: Vec<String> = items
        .iter()
        .take(ITEMS_SHOWN)
        .map(|it| {
            let op = match it["op"].as_str() {
                Some("CREATE") => "+",
                Some("DELETE") => "-",
                _ => "~",
            };
            let kind = it["kind"].as_str().unwrap_or("?").to_ascii_lowercase();
            let raw = it["id"].as_str().unwrap_or("?");
            let host = it["hostId"].as_str();
            match (kind.as_str(), host) {
                // A membership's id is `cen/container`.
                ("membership", Some(h)) => match raw.split_once('/') {
                    Some((cen, c)) => format!("{op}member {h}/{c} in {cen}"),
                    None => format!("{op}member {h}/{raw}"),
                },
                (_, Some(h)) => format!("{op}{kind} {h}/{raw}"),
                (_, None) => format!("{op}{kind} {raw}"),
            }
        })
        .collect();
    if items.len() > ITEMS_SHOWN {
        parts.push(format!("and {} more", items.len() - ITEMS_SHOWN));
    }
    let actor = ev["actor"].as_str().unwrap_or("unknown");
    let when = ev["atMs"].as_f64().map(utc_time).unwrap_or_default();
    format!(
        "rev {:<6} {:<18} {}  ({actor}{when})",
        ev["revision"],
        ev["mutation"].as_str().unwrap_or("?"),
        parts.join(" ")
    )
}

/// `, HH:MM:SS.mmmZ` of a time in milliseconds since the Unix epoch.
fn utc_time(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return String::new();
    }
    let ms = ms as u64;
    let day_ms = ms % 86_400_000;
    let (h, m, s, milli) = (day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000);
    format!(", {h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Follows the changes until the reader of stdout goes away (e.g. `| head`
/// exited): noticed on the next line written, or, while no change comes,
/// by [`reader_gone`].
pub async fn run(client: &Client, since: Option<i64>, out: WatchFormat) -> anyhow::Result<()> {
    tokio::select! {
        r = follow(client, since, out) => r,
        () = reader_gone() => Ok(()),
    }
}

/// Resolves once stdout is a pipe or socket whose reader closed it (the
/// kernel reports an error or hang-up on its write end); never for a
/// terminal or a file. The wait is a thread of its own, parked in `poll`.
async fn reader_gone() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new().name("stdout-reader".into()).spawn(move || {
        let mut fd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut fd, 1, -1) };
            if n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                let _ = tx.send(());
                return;
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Cannot tell: only the write-time check is left.
                return;
            }
        }
    });
    if spawned.is_err() || rx.await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn follow(client: &Client, since: Option<i64>, out: WatchFormat) -> anyhow::Result<()> {
    // Without --since, start at the current revision: then a reconnect can
    // resume from it too.
    let mut since = match since {
        Some(r) => r,
        None => client.gql("{ revision }", json!({})).await?["revision"].as_i64().unwrap_or(0),
    };
    let mut failures = 0u32;
    loop {
        let sub = client.subscribe(CHANGES, json!({"since": since})).await;
        let mut sub = match sub {
            Ok(s) => {
                failures = 0;
                eprintln!("watching {} after revision {since}", client.server());
                s
            }
            Err(e) => {
                failures += 1;
                if e.downcast_ref::<super::client::GqlError>().is_some() {
                    return Err(e);
                }
                let wait = Duration::from_secs(u64::from(failures.min(5)));
                eprintln!("cannot reach {} ({e:#}); trying again in {} s", client.server(), wait.as_secs());
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        loop {
            match sub.next().await {
                Ok(Some(data)) => {
                    let ev = &data["changes"];
                    if let Some(r) = ev["revision"].as_i64() {
                        since = r;
                    }
                    let text = match out {
                        WatchFormat::Json => ev.to_string(),
                        WatchFormat::Text => line(ev),
                    };
                    let mut stdout = std::io::stdout().lock();
                    if writeln!(stdout, "{text}").and_then(|_| stdout.flush()).is_err() {
                        // The reader went away (e.g. `| head`).
                        return Ok(());
                    }
                }
                Ok(None) => {
                    eprintln!("connection closed after revision {}; reconnecting", since);
                    break;
                }
                Err(e) => {
                    if e.downcast_ref::<super::client::GqlError>().is_some() {
                        return Err(e);
                    }
                    eprintln!("connection lost after revision {} ({e:#}); reconnecting", since);
                    break;
                }
            }
        }
    }
}
