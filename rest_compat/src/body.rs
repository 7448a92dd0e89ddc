//! Request bodies: read under the limit, parsed as JSON whatever the
//! `Content-Type` says (`curl -d @file` sends form-urlencoded), and checked
//! for shape with messages naming the offending field. Ids are checked here
//! too; whether they exist is the GraphQL operation's business.

use crate::error::CompatError;
use crate::ids::check_id;
use crate::intake::{Admitted, Refusal};
use crate::CompatConfig;
use axum::body::Body;
use axum::http::StatusCode;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Reads a whole body under the intake's rules: 413 over the size limit,
/// 408 (and the connection closed) when it does not arrive in time, 400
/// with more list items than the limit. Hold what it gives until the
/// answer is made (a large body waits for its share of the budget).
pub async fn read(cfg: &CompatConfig, body: Body) -> Result<Admitted, CompatError> {
    let bytes = cfg.intake.read(body, cfg.body_limit).await.map_err(|r| match r {
        Refusal::TooLarge { limit } => CompatError::too_large(limit),
        Refusal::TooSlow { .. } => CompatError::new(StatusCode::REQUEST_TIMEOUT, r.message()),
    })?;
    let body = cfg.intake.admit(bytes).await;
    cfg.intake.check_items(body.bytes()).map_err(CompatError::bad_request)?;
    Ok(body)
}

/// Parses a body as JSON; empty or malformed is a 400.
pub fn json(bytes: &[u8]) -> Result<Value, CompatError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(CompatError::bad_request("missing JSON body"));
    }
    serde_json::from_slice(bytes).map_err(|e| CompatError::bad_request(format!("malformed JSON body: {e}")))
}

/// What a JSON value is, for messages ("expected an object, found a
/// list"). The one wording of both the legacy routes and the server's
/// GraphQL over HTTP.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, expected: &str, found: &Value) -> CompatError {
    CompatError::bad_request(format!("{field}: expected {expected}, found {}", kind(found)))
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, CompatError> {
    v.as_object().ok_or_else(|| wrong(field, "an object", v))
}

fn member<'a>(obj: &'a Map<String, Value>, parent: &str, key: &str) -> Result<&'a Value, CompatError> {
    obj.get(key).ok_or_else(|| CompatError::bad_request(format!("{}: missing field '{key}'", at(parent, key))))
}

fn at(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A string that is a valid id; `what` names the kind of id.
fn id(v: &Value, field: &str, what: &str) -> Result<String, CompatError> {
    let s = v.as_str().ok_or_else(|| wrong(field, &format!("a string ({what})"), v))?;
    check_id(&format!("{what} at {field}"), s)?;
    Ok(s.to_string())
}

/// A list of ids; `field` names the list ("body", "cenList[0].containerIDs").
pub fn id_list(v: &Value, field: &str, what: &str) -> Result<Vec<String>, CompatError> {
    let list = v.as_array().ok_or_else(|| wrong(field, &format!("a list of {what}s"), v))?;
    list.iter().enumerate().map(|(i, x)| id(x, &format!("{field}[{i}]"), what)).collect()
}

/// `{"cenList": [{"cenID": "cen1", "containerIDs": ["c1", ...]}, ...]}`
pub fn cen_file(v: &Value) -> Result<Vec<(String, Vec<String>)>, CompatError> {
    let top = object(v, "body")?;
    let list = member(top, "", "cenList")?;
    let list = list.as_array().ok_or_else(|| wrong("cenList", "a list of CENs", list))?;
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("cenList[{i}]");
            let obj = object(item, &field)?;
            let cen = id(member(obj, &field, "cenID")?, &at(&field, "cenID"), "CEN id")?;
            let containers =
                id_list(member(obj, &field, "containerIDs")?, &at(&field, "containerIDs"), "container id")?;
            Ok((cen, containers))
        })
        .collect()
}

/// `{"cin1": ["cen1"], "cin2": ["cen2"]}`, in the order of the file (the
/// order decides which CIN gets which subnet).
pub fn cin_file(bytes: &[u8], v: &Value) -> Result<Vec<(String, Vec<String>)>, CompatError> {
    object(v, "body")?;
    let ordered: Ordered =
        serde_json::from_slice(bytes).map_err(|e| CompatError::bad_request(format!("malformed JSON body: {e}")))?;
    ordered
        .0
        .iter()
        .map(|(cin, cens)| {
            check_id(&format!("CIN id (key '{}')", cin.escape_debug()), cin)?;
            let cens = id_list(cens, cin, "CEN id")?;
            Ok((cin.clone(), cens))
        })
        .collect()
}

/// One pool of a CPool file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    pub image: String,
    pub start_with: i64,
    pub cins: Vec<(String, bool)>,
}

/// `{"cpoolList": [{"cpoolID", "type", "start_with", "cins": [{"cinID", "default_route"}]}]}`
pub fn cpool_file(v: &Value) -> Result<Vec<Pool>, CompatError> {
    let top = object(v, "body")?;
    let list = member(top, "", "cpoolList")?;
    let list = list.as_array().ok_or_else(|| wrong("cpoolList", "a list of pools", list))?;
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("cpoolList[{i}]");
            let obj = object(item, &field)?;
            let pool = id(member(obj, &field, "cpoolID")?, &at(&field, "cpoolID"), "pool id")?;
            let ty = member(obj, &field, "type")?;
            let image = ty.as_str().ok_or_else(|| wrong(&at(&field, "type"), "a string", ty))?.to_string();
            let sw = member(obj, &field, "start_with")?;
            let start_with = sw
                .as_i64()
                .filter(|n| (0..=i64::from(i32::MAX)).contains(n))
                .ok_or_else(|| wrong(&at(&field, "start_with"), "a whole number from 0", sw))?;
            let cins_v = member(obj, &field, "cins")?;
            let cins_field = at(&field, "cins");
            let cins = cins_v.as_array().ok_or_else(|| wrong(&cins_field, "a list of CINs", cins_v))?;
            let cins = cins
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let cf = format!("{cins_field}[{k}]");
                    let co = object(c, &cf)?;
                    let cin = id(member(co, &cf, "cinID")?, &at(&cf, "cinID"), "CIN id")?;
                    let default_route = match co.get("default_route") {
                        None | Some(Value::Null) => false,
                        Some(Value::String(s)) if s == "true" => true,
                        Some(Value::String(s)) if s == "false" => false,
                        Some(other) => {
                            return Err(CompatError::bad_request(format!(
                                "{}: expected \"true\" or \"false\", found {}",
                                at(&cf, "default_route"),
                                other
                            )))
                        }
                    };
                    Ok((cin, default_route))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Pool { id: pool, image, start_with, cins })
        })
        .collect()
}

/// A JSON object's entries in the order written (serde_json's own map is
/// sorted unless its `preserve_order` feature is on workspace-wide).
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<impl fmt::Debug, CompatError>) -> String {
        r.unwrap_err().message
    }

    #[test]
    fn cen_file_shapes() {
        let ok = serde_json::json!({"cenList": [{"cenID": "cen1", "containerIDs": ["c1", "c2"]}]});
        assert_eq!(cen_file(&ok).unwrap(), vec![("cen1".to_string(), vec!["c1".to_string(), "c2".to_string()])]);
        assert!(msg(cen_file(&serde_json::json!([]))).contains("body: expected an object"));
        assert!(msg(cen_file(&serde_json::json!({}))).contains("missing field 'cenList'"));
        let bad = serde_json::json!({"cenList": [{"cenID": "cen1", "containerIDs": ["c1", 3]}]});
        assert!(msg(cen_file(&bad)).contains("cenList[0].containerIDs[1]"));
        let bad = serde_json::json!({"cenList": [{"cenID": "a b", "containerIDs": []}]});
        assert!(msg(cen_file(&bad)).contains("cenList[0].cenID"));
        let bad = serde_json::json!({"cenList": [{"containerIDs": []}]});
        assert!(msg(cen_file(&bad)).contains("cenList[0].cenID: missing field"));
    }

    #[test]
    fn cin_file_keeps_order() {
        let bytes = br#"{"cin2": ["cen2"], "cin10": ["cen1"], "cin1": []}"#;
        let v = json(bytes).unwrap();
        let got: Vec<String> = cin_file(bytes, &v).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, ["cin2", "cin10", "cin1"]);
        let bytes = br#"{"cin1": "cen1"}"#;
        assert!(msg(cin_file(bytes, &json(bytes).unwrap())).contains("cin1: expected a list"));
    }

    #[test]
    fn cpool_default_route() {
        let f = |d: Value| serde_json::json!({"cpoolList": [{"cpoolID": "p", "type": "t", "start_with": 1, "cins": [{"cinID": "c", "default_route": d}]}]});
        assert!(cpool_file(&f(Value::from("true"))).unwrap()[0].cins[0].1);
        assert!(!cpool_file(&f(Value::from("false"))).unwrap()[0].cins[0].1);
        assert!(!cpool_file(&f(Value::Null)).unwrap()[0].cins[0].1);
        assert!(msg(cpool_file(&f(Value::from("yes")))).contains("default_route"));
        assert!(msg(cpool_file(&f(Value::from(true)))).contains("default_route"));
        let neg = serde_json::json!({"cpoolList": [{"cpoolID": "p", "type": "t", "start_with": -1, "cins": []}]});
        assert!(msg(cpool_file(&neg)).contains("start_with"));
    }

    #[test]
    fn malformed_and_empty() {
        assert!(msg(json(b"")).contains("missing JSON body"));
        assert!(msg(json(b"{")).contains("malformed JSON"));
        assert!(msg(json(b"\xff")).contains("malformed JSON"));
    }
}
