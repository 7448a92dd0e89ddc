//! Every GraphQL document of the REST routes, the variables each takes, and
//! the shaping of the answers into legacy bodies. The route handlers only
//! choose the operation; nothing else in the crate speaks GraphQL (the
//! monitor's subscription lives in `monitor/subscription.rs`).

use crate::body::Pool;
use crate::error::CompatError;
use async_graphql::{Executor, Request, Variables};
use serde::Serialize;
use serde_json::{json, Value};

pub const VERSION: &str = "query LegacyVersion { version }";

pub const CEN_IMPORT: &str =
    "mutation LegacyCenImport($cens: [CenImportItem!]!) { cenImport(input: {cens: $cens}) { revision } }";
pub const CEN_MAKE: &str =
    "mutation LegacyCenMake($ids: [ID!]!) { cenMake(input: {ids: $ids, wait: true}) { revision cens { id status statusMessage } } }";
pub const CEN_DESTROY: &str =
    "mutation LegacyCenDestroy($ids: [ID!]!) { cenDestroy(input: {ids: $ids, wait: true}) { revision cens { id status statusMessage } } }";
pub const CIN_IMPORT: &str =
    "mutation LegacyCinImport($cins: [CinImportItem!]!) { cinImport(input: {cins: $cins}) { revision } }";
pub const CIN_MAKE: &str =
    "mutation LegacyCinMake($ids: [ID!]!) { cinMake(input: {ids: $ids, wait: true}) { revision cins { id status statusMessage } } }";
pub const CIN_DESTROY: &str =
    "mutation LegacyCinDestroy($ids: [ID!]!) { cinDestroy(input: {ids: $ids, wait: true}) { revision cins { id status statusMessage } } }";
pub const CPOOL_IMPORT: &str =
    "mutation LegacyCpoolImport($pools: [CpoolImportItem!]!) { cpoolImport(input: {pools: $pools}) { revision } }";
pub const CEN_CREATE: &str = "mutation LegacyCenCreate($id: ID!) { cenCreate(input: {id: $id}) { revision } }";
pub const CEN_DELETE: &str = "mutation LegacyCenDelete($id: ID!) { cenDelete(input: {id: $id}) { revision } }";
pub const CEN_GET: &str = "query LegacyCen($id: ID!) { cen(id: $id) { id wiringType containers { id } } }";
pub const CONTAINER_JOIN: &str = "mutation LegacyJoin($h: ID!, $c: ID!, $cen: ID!) { \
     containerJoinCen(input: {hostId: $h, containerId: $c, cenId: $cen}) { revision } }";
pub const CONTAINER_LEAVE: &str = "mutation LegacyLeave($h: ID!, $c: ID!, $cen: ID!) { \
     containerLeaveCen(input: {hostId: $h, containerId: $c, cenId: $cen}) { revision } }";
pub const CONTAINER_GET: &str = "query LegacyContainer($h: ID!, $c: ID!) { container(hostId: $h, id: $c) { \
     id host { id } tag cens { id } interfaces { name cen { id } address } } }";
pub const CONTAINER_CREATE: &str =
    "mutation LegacyContainerCreate($h: ID!, $c: ID!) { containerCreate(input: {hostId: $h, id: $c}) { revision } }";
pub const CONTAINER_DELETE: &str =
    "mutation LegacyContainerDelete($h: ID!, $c: ID!) { containerDelete(input: {hostId: $h, id: $c}) { revision } }";

/// Runs one operation; any error becomes the legacy error of its code.
pub async fn run<E: Executor>(executor: &E, query: &'static str, variables: Value) -> Result<Value, CompatError> {
    let request = Request::new(query).variables(Variables::from_json(variables));
    // Boxed: the execution's future is large, and held inline it would be
    // copied with every route handler's future, reads kept in the answer
    // cache included (they never get here).
    let resp = Box::pin(executor.execute(request)).await;
    if !resp.errors.is_empty() {
        return Err(CompatError::from_graphql(&resp.errors));
    }
    resp.data.into_json().map_err(|e| CompatError::internal(format!("encoding the GraphQL answer: {e}")))
}

/// Runs a make/destroy and fails (500, an internal fault) when the
/// realization of any of its objects failed, naming it and the reason.
pub async fn run_realize<E: Executor>(executor: &E, query: &'static str, variables: Value) -> Result<(), CompatError> {
    let data = run(executor, query, variables).await?;
    let objects = data.as_object().and_then(|o| o.values().next()).cloned().unwrap_or(Value::Null);
    for kind in ["cens", "cins"] {
        for o in objects[kind].as_array().into_iter().flatten() {
            if o["status"] == "PREPARING" || o["status"] == "DESTROYING" {
                return Err(CompatError::internal(format!(
                    "{} '{}' is still {} after the server's wait limit",
                    if kind == "cens" { "CEN" } else { "CIN" },
                    o["id"].as_str().unwrap_or(""),
                    if o["status"] == "PREPARING" { "being made" } else { "being destroyed" }
                )));
            }
            if o["status"] == "FAILED" {
                return Err(CompatError::internal(format!(
                    "{} '{}' could not be realized: {}",
                    if kind == "cens" { "CEN" } else { "CIN" },
                    o["id"].as_str().unwrap_or(""),
                    o["statusMessage"].as_str().unwrap_or("unknown reason")
                )));
            }
        }
    }
    Ok(())
}

pub fn cen_import_vars(cens: Vec<(String, Vec<String>)>) -> Value {
    let cens: Vec<Value> = cens.into_iter().map(|(id, cs)| json!({"id": id, "containerIds": cs})).collect();
    json!({ "cens": cens })
}

pub fn cin_import_vars(cins: Vec<(String, Vec<String>)>) -> Value {
    let cins: Vec<Value> = cins.into_iter().map(|(id, cens)| json!({"id": id, "cenIds": cens})).collect();
    json!({ "cins": cins })
}

pub fn cpool_import_vars(pools: Vec<Pool>) -> Value {
    let pools: Vec<Value> = pools
        .into_iter()
        .map(|p| {
            let cins: Vec<Value> =
                p.cins.into_iter().map(|(cin, dr)| json!({"cinId": cin, "defaultRoute": dr})).collect();
            json!({"id": p.id, "type": p.image, "startWith": p.start_with, "cins": cins})
        })
        .collect();
    json!({ "pools": pools })
}

fn missing(what: &str) -> CompatError {
    CompatError::internal(format!("the GraphQL answer lacks {what}"))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// `{"version": "<semver>"}`
pub fn shape_version(data: &Value) -> Result<Value, CompatError> {
    let v = str_at(data, "/version").ok_or_else(|| missing("version"))?;
    Ok(json!({ "version": v }))
}

/// The CEN structure of `GET /cen/{cenId}`, fields in the documented order.
#[derive(Debug, Serialize)]
pub struct LegacyCen<'a> {
    #[serde(rename = "cenID")]
    pub cen_id: &'a str,
    #[serde(rename = "contIDs")]
    pub cont_ids: Vec<&'a str>,
    /// "bridge", "wire" or null.
    pub wiring_type: Option<String>,
}

/// `{"cenID", "contIDs" (sorted), "wiring_type" ("bridge" | "wire" | null)}`,
/// or 404 when the CEN does not exist.
pub fn shape_cen<'a>(data: &'a Value, id: &'a str) -> Result<LegacyCen<'a>, CompatError> {
    let cen =
        data.get("cen").filter(|c| !c.is_null()).ok_or_else(|| CompatError::not_found(format!("no CEN '{id}'")))?;
    let mut cont_ids: Vec<&str> = cen
        .get("containers")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("cen.containers"))?
        .iter()
        .filter_map(|c| str_at(c, "/id"))
        .collect();
    cont_ids.sort_unstable();
    let wiring_type = str_at(cen, "/wiringType").map(str::to_ascii_lowercase);
    Ok(LegacyCen { cen_id: str_at(cen, "/id").unwrap_or(id), cont_ids, wiring_type })
}

/// The container structure of `GET /host/{hostId}/{containerId}`.
#[derive(Debug, Serialize)]
pub struct LegacyContainer<'a> {
    #[serde(rename = "hostID")]
    pub host_id: &'a str,
    #[serde(rename = "containerID")]
    pub container_id: &'a str,
    pub tag: Option<&'a str>,
    pub cens: Vec<&'a str>,
    pub interfaces: Vec<LegacyInterface<'a>>,
}

#[derive(Debug, Serialize)]
pub struct LegacyInterface<'a> {
    #[serde(rename = "cenID")]
    pub cen_id: &'a str,
    pub name: &'a str,
    /// Null until a CIN has allocated one.
    pub ipaddress: Option<&'a str>,
}

/// `{"hostID", "containerID", "tag", "cens" (sorted), "interfaces": [{"cenID", "name", "ipaddress"}]}`,
/// or 404 when the container does not exist.
pub fn shape_container<'a>(data: &'a Value, host: &'a str, id: &'a str) -> Result<LegacyContainer<'a>, CompatError> {
    let c = data
        .get("container")
        .filter(|c| !c.is_null())
        .ok_or_else(|| CompatError::not_found(format!("no container '{id}' on host '{host}'")))?;
    let mut cens: Vec<&str> = c
        .get("cens")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("container.cens"))?
        .iter()
        .filter_map(|x| str_at(x, "/id"))
        .collect();
    cens.sort_unstable();
    let mut interfaces: Vec<LegacyInterface> = c
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or_else(|| missing("container.interfaces"))?
        .iter()
        .map(|i| LegacyInterface {
            cen_id: str_at(i, "/cen/id").unwrap_or(""),
            name: str_at(i, "/name").unwrap_or(""),
            ipaddress: str_at(i, "/address"),
        })
        .collect();
    interfaces.sort_by(|a, b| a.cen_id.cmp(b.cen_id));
    Ok(LegacyContainer {
        host_id: str_at(c, "/host/id").unwrap_or(host),
        container_id: str_at(c, "/id").unwrap_or(id),
        tag: str_at(c, "/tag"),
        cens,
        interfaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_parses() {
        for q in [
            VERSION,
            CEN_IMPORT,
            CEN_MAKE,
            CEN_DESTROY,
            CIN_IMPORT,
            CIN_MAKE,
            CIN_DESTROY,
            CPOOL_IMPORT,
            CEN_CREATE,
            CEN_DELETE,
            CEN_GET,
            CONTAINER_JOIN,
            CONTAINER_LEAVE,
            CONTAINER_GET,
            CONTAINER_CREATE,
            CONTAINER_DELETE,
        ] {
            async_graphql::parser::parse_query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn cen_shape() {
        let data = json!({"cen": {"id": "cen1", "wiringType": "BRIDGE",
            "containers": [{"id": "c2"}, {"id": "c1"}, {"id": "c13"}]}});
        assert_eq!(
            serde_json::to_string(&shape_cen(&data, "cen1").unwrap()).unwrap(),
            r#"{"cenID":"cen1","contIDs":["c1","c13","c2"],"wiring_type":"bridge"}"#
        );
        let data = json!({"cen": {"id": "x", "wiringType": null, "containers": []}});
        assert_eq!(shape_cen(&data, "x").unwrap().wiring_type, None);
        assert_eq!(shape_cen(&json!({"cen": null}), "x").unwrap_err().status.as_u16(), 404);
    }

    #[test]
    fn container_shape() {
        let data = json!({"container": {"id": "c1", "host": {"id": "host1"}, "tag": null,
            "cens": [{"id": "cen1"}], "interfaces": [{"name": "cen1", "cen": {"id": "cen1"}, "address": null}]}});
        assert_eq!(
            serde_json::to_string(&shape_container(&data, "host1", "c1").unwrap()).unwrap(),
            r#"{"hostID":"host1","containerID":"c1","tag":null,"cens":["cen1"],"interfaces":[{"cenID":"cen1","name":"cen1","ipaddress":null}]}"#
        );
    }
}
