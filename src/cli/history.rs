//! `leviathan history KIND ID`: the kept changes that touched one object,
//! newest first, read page by page through `history(kind, id, hostId,
//! container, first, after)`: a table of revision, commit time (UTC),
//! actor, mutation, operation and what changed in the object (its fields
//! that differ, for an update), or `-o json` with the entries as the server
//! gives them (`before`/`after` images included).
//!
//! A container is named by its id and `--host` (the server's host when
//! absent); a membership by its CEN id, `--host` and `--container`. Each
//! page asks for changes older than the last one printed, so the reading
//! ends even if the server repeated itself.

use super::client::Client;
use super::diff::changed_fields;
use super::ChangeFormat;
use anyhow::bail;
use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};
use serde_json::{json, Value};

/// Changes per request.
const PAGE: i64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "hosts")]
    Host,
    #[value(alias = "containers")]
    Container,
    #[value(alias = "cens")]
    Cen,
    #[value(alias = "cins")]
    Cin,
    #[value(alias = "pools", alias = "cpool")]
    Pool,
    #[value(alias = "memberships", alias = "member")]
    Membership,
}

impl Kind {
    fn entity(self) -> &'static str {
        match self {
            Kind::Host => "HOST",
            Kind::Container => "CONTAINER",
            Kind::Cen => "CEN",
            Kind::Cin => "CIN",
            Kind::Pool => "CPOOL",
            Kind::Membership => "MEMBERSHIP",
        }
    }
}

/// What `history` asks for: the object and how many changes at most.
#[derive(Debug)]
pub struct Wanted<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub host: Option<&'a str>,
    pub container: Option<&'a str>,
    pub limit: Option<usize>,
}

const QUERY: &str = "query($k: EntityKind!, $id: ID!, $h: ID, $c: ID, $first: Int, $after: Int) {
  history(kind: $k, id: $id, hostId: $h, container: $c, first: $first, after: $after) {
    revision atMs actor mutation op before after } }";

/// The variables of the first page; an object named wrong is refused
/// before anything is sent.
pub fn variables(w: &Wanted<'_>) -> anyhow::Result<Value> {
    match w.kind {
        Kind::Membership if w.container.is_none() => {
            bail!("a membership is named by its CEN id and --container (and --host when not this server's)")
        }
        Kind::Membership | Kind::Container => {}
        _ if w.host.is_some() => bail!("--host names the host of a container or a membership only"),
        _ => {}
    }
    if w.container.is_some() && w.kind != Kind::Membership {
        bail!("--container names the container of a membership only");
    }
    if w.limit == Some(0) {
        bail!("--limit is 1 or more");
    }
    Ok(json!({"k": w.kind.entity(), "id": w.id, "h": w.host, "c": w.container}))
}

/// Every kept change of the object (up to the limit), newest first.
pub async fn fetch(client: &Client, w: &Wanted<'_>) -> anyhow::Result<Vec<Value>> {
    let mut vars = variables(w)?;
    let limit = w.limit.unwrap_or(usize::MAX);
    let mut out: Vec<Value> = Vec::new();
    let mut after: Option<i64> = None;
    while out.len() < limit {
        let first = PAGE.min(i64::try_from(limit - out.len()).unwrap_or(PAGE));
        vars["first"] = json!(first);
        vars["after"] = json!(after);
        let d = client.gql(QUERY, vars.clone()).await?;
        let page = d["history"].as_array().cloned().unwrap_or_default();
        let n = page.len() as i64;
        let oldest = page.last().and_then(|e| e["revision"].as_i64());
        // Strictly older each page, or the reading stops.
        let older = |r: &i64| after.is_none_or(|a| *r < a);
        out.extend(page.into_iter().filter(|e| e["revision"].as_i64().is_some_and(|r| older(&r))));
        match oldest {
            Some(r) if n == first && older(&r) => after = Some(r),
            _ => break,
        }
    }
    out.truncate(limit);
    Ok(out)
}

pub async fn run(client: &Client, w: &Wanted<'_>, out: ChangeFormat) -> anyhow::Result<String> {
    let entries = fetch(client, w).await?;
    Ok(match out {
        ChangeFormat::Json => format!("{}\n", serde_json::to_string_pretty(&entries)?),
        ChangeFormat::Text => render(w, &entries),
    })
}

fn name(w: &Wanted<'_>) -> String {
    let kind = format!("{:?}", w.kind).to_ascii_lowercase();
    match (w.kind, w.host, w.container) {
        (Kind::Membership, h, Some(c)) => {
            format!("membership of {} in cen {}", h.map_or(c.to_string(), |h| format!("{h}/{c}")), w.id)
        }
        (_, Some(h), _) => format!("{kind} {h}/{}", w.id),
        _ => format!("{kind} {}", w.id),
    }
}

/// The table of `history`, or a sentence when no kept change touched it.
pub fn render(w: &Wanted<'_>, entries: &[Value]) -> String {
    if entries.is_empty() {
        return format!("No kept change touched {}.\n", name(w));
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["REVISION", "TIME (UTC)", "ACTOR", "MUTATION", "OP", "CHANGE"]);
    for e in entries {
        let op = e["op"].as_str().unwrap_or("?");
        let change = if op.starts_with("UPDATE") {
            let fields = changed_fields(&e["before"], &e["after"], &[]);
            if fields.is_empty() {
                "-".to_string()
            } else {
                fields.join("; ")
            }
        } else {
            "-".to_string()
        };
        t.add_row([
            e["revision"].to_string(),
            e["atMs"].as_f64().map_or_else(|| "-".into(), utc),
            e["actor"].as_str().unwrap_or("-").to_string(),
            e["mutation"].as_str().unwrap_or("?").to_string(),
            op.to_string(),
            change,
        ]);
    }
    if let Some(c) = t.column_mut(0) {
        c.set_cell_alignment(CellAlignment::Right);
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time in milliseconds since the Unix
/// epoch (the proleptic Gregorian calendar, days from 1970-01-01).
pub fn utc(ms: f64) -> String {
    // (NaN is in no range.)
    if !(0.0..=253_402_300_799_999.0).contains(&ms) {
        return "-".into();
    }
    let ms = ms as i64;
    let (days, day_ms) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s, milli) = (day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(kind: Kind) -> Wanted<'static> {
        Wanted { kind, id: "x", host: None, container: None, limit: None }
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_796_435_718_123.4), "2026-12-05T01:55:18.123Z");
        assert_eq!(utc(-1.0), "-");
        assert_eq!(utc(f64::NAN), "-");
    }

    #[test]
    fn an_object_named_wrong_is_refused_before_sending() {
        let e = variables(&wanted(Kind::Membership)).unwrap_err().to_string();
        assert!(e.contains("--container"), "{e}");
        let e = variables(&Wanted { host: Some("h2"), ..wanted(Kind::Cen) }).unwrap_err().to_string();
        assert!(e.contains("--host"), "{e}");
        let e = variables(&Wanted { container: Some("c1"), ..wanted(Kind::Container) }).unwrap_err().to_string();
        assert!(e.contains("--container"), "{e}");
        let e = variables(&Wanted { limit: Some(0), ..wanted(Kind::Cen) }).unwrap_err().to_string();
        assert!(e.contains("--limit"), "{e}");
        let v = variables(&Wanted { host: Some("h2"), container: Some("c1"), ..wanted(Kind::Membership) }).unwrap();
        assert_eq!(v, json!({"k": "MEMBERSHIP", "id": "x", "h": "h2", "c": "c1"}));
        assert_eq!(variables(&wanted(Kind::Pool)).unwrap()["k"], "CPOOL");
    }

    #[test]
    fn the_table_shows_who_did_what_and_the_fields_an_update_changed() {
        let entries = vec![
            json!({"revision": 12, "atMs": 1_796_435_718_123.0, "actor": "ci", "mutation": "containerSetTag",
                   "op": "UPDATE", "before": {"id": "web1", "tag": "web"}, "after": {"id": "web1", "tag": "edge"}}),
            json!({"revision": 3, "atMs": 1_796_435_700_000.0, "actor": null, "mutation": "cenImport",
                   "op": "CREATE", "before": null, "after": {"id": "web1"}}),
        ];
        let text = render(&wanted(Kind::Container), &entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "REVISION  TIME (UTC)                ACTOR  MUTATION         OP      CHANGE");
        assert_eq!(lines[1], "      12  2026-12-05T01:55:18.123Z  ci     containerSetTag  UPDATE  tag web -> edge");
        assert_eq!(lines[2], "       3  2026-12-05T01:55:00.000Z  -      cenImport        CREATE  -");
        assert_eq!(render(&wanted(Kind::Cen), &[]), "No kept change touched cen x.\n");
    }
}
