//! Servers running one tokio worker thread, the runtime a one-CPU host gets
//! by default, make CENs spread over three hosts (root and etcd needed).
//!
//! A make across hosts puts hundreds of requests on each fabric's netlink
//! connection in one phase (bridges, then VXLAN devices and veths). The
//! connection sends every request queued for it before it reads again, so
//! the answers of a phase's requests in flight wait in the socket's receive
//! buffer at once; on one worker thread nothing drains it meanwhile. With
//! the default buffer the kernel dropped answers ("netlink socket buffer
//! full": a fabric's request socket counted 14 drops in `/proc/net/netlink`),
//! the requests waiting for them never finished and the make hung on some
//! host: in 3 of 9 runs of this test, and in each of 3 runs of the hosts
//! bench's three-host make with `TOKIO_WORKER_THREADS=1`. Under `CI` this
//! never skips.

mod common;

use common::hosts::{Cluster, Options};
use leviathan::store::testing::etcd_available;
use serde_json::{json, Value};
use std::time::Duration;

const CENS: usize = 111;
const SIZE: usize = 9;

const CEN_IMPORT: &str = "mutation($input: CenImportInput!) { cenImport(input: $input) { revision } }";
const CIN_IMPORT: &str = "mutation($input: CinImportInput!) { cinImport(input: $input) { revision } }";
const CIN_MAKE: &str = "mutation($ids: [ID!]!) { cinMake(input: {ids: $ids, wait: false}) { revision } }";

/// Far above the seconds a make of this size takes; only catches a hang.
const BOUND: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_worker_thread_make_cens_across_three_hosts() {
    let name = "servers_on_one_worker_thread_make_cens_across_three_hosts";
    if !common::kernel::can_run(name) || !etcd_available(name) {
        return;
    }
    let opts = Options {
        serve_args: ["--cin-prefix-len", "24"].map(String::from).to_vec(),
        log: "warn".to_string(),
        env: vec![("TOKIO_WORKER_THREADS".to_string(), "1".to_string())],
        ..Options::default()
    };
    let cl = tokio::task::block_in_place(|| Cluster::start(opts));
    let h1 = &cl.hosts[0];
    for (n, h) in cl.hosts.iter().enumerate() {
        // Member i of each CEN runs on host i % 3.
        let cens: Vec<Value> = (0..CENS)
            .map(|g| {
                let members: Vec<String> = (0..SIZE).filter(|i| i % 3 == n).map(|i| format!("w{g}x{i}")).collect();
                json!({"id": format!("w{g}"), "containerIds": members})
            })
            .collect();
        h1.gql(CEN_IMPORT, json!({"input": {"hostId": h.id, "cens": cens}})).await;
    }
    let cins: Vec<Value> = (0..CENS).map(|g| json!({"id": format!("nw{g}"), "cenIds": [format!("w{g}")]})).collect();
    h1.gql(CIN_IMPORT, json!({"input": {"cins": cins}})).await;
    let ids: Vec<String> = (0..CENS).map(|g| format!("nw{g}")).collect();
    h1.gql(CIN_MAKE, json!({"ids": ids})).await;

    // Every host READY (a host whose round waits for a lost answer stays
    // PREPARING), and each fabric holds its part: a bridge and a VXLAN
    // device per CEN and a veth per local member.
    cl.wait_ready_within(BOUND).await;
    for h in &cl.hosts {
        let fabric = h.fabric();
        let links = common::kernel::ip_json(&["-d", "-n", &fabric, "link", "show", "up"]);
        let count = |kind: &str| {
            links.as_array().into_iter().flatten().filter(|l| l["linkinfo"]["info_kind"] == json!(kind)).count()
        };
        assert_eq!(count("bridge"), CENS, "bridges up in {fabric}");
        assert_eq!(count("vxlan"), CENS, "VXLAN devices up in {fabric}");
        assert_eq!(count("veth"), CENS * SIZE / 3, "veths up in {fabric}");
    }
}
