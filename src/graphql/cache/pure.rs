//! Which documents the answer cache may keep: a query whose every selected
//! field (through fragments) is on [`ALLOWED`], the fields whose resolvers
//! read nothing but the live topology (and the server's fixed host id and
//! version). Such an answer is a pure function of the document, the
//! operation name, the variables and the topology revision.
//!
//! Left off, with the reason (audit of `types.rs`, `objects.rs`,
//! `query.rs`, `history.rs`):
//! - `status`, `statusMessage`, `hostStatuses` (Cen, Cin, Container): the
//!   realization's standing, which the realizer reports; kept out so that
//!   however it comes to change, an answer showing it is never stale;
//! - `Host.up`, `Host.vtepAddress`: read the store's host announcements
//!   (etcd leases), which change without a revision;
//! - `Query.at`, `diff`, `history`, `keptRevisions`: read the kept history,
//!   whose floor moves without a revision;
//! - introspection (`__schema`, `__type`): not worth keeping;
//! - every mutation and subscription field.
//!
//! `__typename` is pure everywhere. A field the list does not name (a new
//! one) is not cacheable until it is audited and added here.

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::Name;
use std::collections::HashMap;

/// The fields that read nothing but the topology at the revision, by type.
pub const ALLOWED: &[(&str, &[&str])] = &[
    (
        "Query",
        &[
            "version",
            "revision",
            "hostId",
            "host",
            "hosts",
            "hostCount",
            "container",
            "containers",
            "containerCount",
            "cen",
            "cens",
            "cenCount",
            "cin",
            "cins",
            "cinCount",
            "cpool",
            "cpools",
            "cpoolCount",
        ],
    ),
    ("Host", &["id", "containers"]),
    (
        "Container",
        &[
            "id",
            "host",
            "origin",
            "runtimeId",
            "tag",
            "netnsPath",
            "netns",
            "cens",
            "cins",
            "interfaces",
            "defaultRoute",
            "pool",
        ],
    ),
    ("Cen", &["id", "wiringType", "containers", "vni", "size", "cins", "made"]),
    ("Cin", &["id", "cens", "subnet", "slices", "gateways", "members", "made"]),
    ("CinMember", &["container", "cen", "address", "prefixLength"]),
    ("CinSlice", &["cenId", "subnet", "gateway"]),
    ("Cpool", &["id", "type", "startWith", "cins", "containers"]),
    ("CpoolCin", &["cinId", "defaultRoute"]),
    ("DefaultRoute", &["via", "cinId", "cenId", "gateway"]),
    ("Interface", &["name", "cen", "address", "addresses"]),
    ("InterfaceAddress", &["cinId", "address", "prefixLength"]),
    ("NetnsBinding", &["path", "device", "inode"]),
    ("Membership", &["cenId", "hostId", "containerId", "ifname", "addresses", "cen", "container"]),
    ("MembershipAddress", &["cinId", "address"]),
];

/// The allowed fields with the named type each returns, read from the
/// schema's SDL.
pub struct Pure {
    fields: HashMap<String, HashMap<String, String>>,
    /// Allowed fields the schema does not have (a test keeps this empty).
    pub missing: Vec<String>,
}

fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(n) => n.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

impl Pure {
    /// The allow-list over a schema's SDL.
    pub fn of_sdl(sdl: &str) -> Pure {
        let mut types: HashMap<String, HashMap<String, String>> = HashMap::new();
        if let Ok(doc) = async_graphql::parser::parse_schema(sdl) {
            for def in doc.definitions {
                let TypeSystemDefinition::Type(t) = def else { continue };
                let TypeKind::Object(o) = &t.node.kind else { continue };
                let fields =
                    o.fields.iter().map(|f| (f.node.name.node.to_string(), named(&f.node.ty.node).to_string()));
                types.insert(t.node.name.node.to_string(), fields.collect());
            }
        }
        let mut fields: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut missing = Vec::new();
        for (ty, names) in ALLOWED {
            for name in *names {
                match types.get(*ty).and_then(|t| t.get(*name)) {
                    Some(ret) => {
                        fields.entry(ty.to_string()).or_default().insert(name.to_string(), ret.clone());
                    }
                    None => missing.push(format!("{ty}.{name}")),
                }
            }
        }
        Pure { fields, missing }
    }

    /// Per operation of a document: its name, and whether its answer may
    /// be kept (a query selecting allowed fields only).
    pub fn operations(&self, doc: &ExecutableDocument) -> Vec<(Option<String>, bool)> {
        doc.operations
            .iter()
            .map(|(name, op)| {
                let query = op.node.ty == OperationType::Query;
                let mut seen = HashMap::new();
                let pure = query && self.set("Query", &op.node.selection_set.node, doc, &mut seen);
                (name.map(|n| n.to_string()), pure)
            })
            .collect()
    }

    fn set(&self, ty: &str, set: &SelectionSet, doc: &ExecutableDocument, seen: &mut HashMap<Name, bool>) -> bool {
        set.items.iter().all(|sel| match &sel.node {
            Selection::Field(f) => {
                let name = f.node.name.node.as_str();
                if name == "__typename" {
                    return true;
                }
                let Some(ret) = self.fields.get(ty).and_then(|t| t.get(name)) else { return false };
                self.set(ret, &f.node.selection_set.node, doc, seen)
            }
            Selection::InlineFragment(i) => {
                let on = i.node.type_condition.as_ref().map(|c| c.node.on.node.as_str()).unwrap_or(ty);
                self.set(on, &i.node.selection_set.node, doc, seen)
            }
            Selection::FragmentSpread(s) => {
                let name = &s.node.fragment_name.node;
                if let Some(known) = seen.get(name) {
                    return *known;
                }
                // A cycle ends here; validation refuses it, and an answer
                // with errors is never kept.
                seen.insert(name.clone(), true);
                let pure = doc.fragments.get(name).is_some_and(|f| {
                    self.set(f.node.type_condition.node.on.node.as_str(), &f.node.selection_set.node, doc, seen)
                });
                seen.insert(name.clone(), pure);
                pure
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pure() -> Pure {
        Pure::of_sdl(&crate::graphql::sdl())
    }

    fn ops(p: &Pure, q: &str) -> Vec<(Option<String>, bool)> {
        p.operations(&async_graphql::parser::parse_query(q).expect("parses"))
    }

    #[test]
    fn every_allowed_field_is_in_the_schema() {
        assert_eq!(pure().missing, Vec::<String>::new());
    }

    #[test]
    fn only_queries_of_allowed_fields_are_pure() {
        let p = pure();
        let yes = |q: &str| assert!(ops(&p, q).iter().all(|(_, pure)| *pure), "{q} should be pure");
        let no = |q: &str| assert!(ops(&p, q).iter().all(|(_, pure)| !*pure), "{q} should not be pure");
        yes("{ cen(id: \"c\") { id wiringType containers { id } } }");
        yes("{ __typename revision hosts { id containers { cens { cins { members { address } } } } } }");
        yes("query { ...F } fragment F on Query { cens { ... on Cen { id size } } }");
        yes(
            "{ containers { interfaces { cen { id } addresses { cinId } } defaultRoute { gateway } netns { inode } } }",
        );
        no("{ cen(id: \"c\") { id status } }");
        no("{ cens { containers { statusMessage } } }");
        no("{ cin(id: \"c\") { hostStatuses { hostId } } }");
        no("{ hosts { id up } }");
        no("{ hosts { vtepAddress } }");
        no("{ at(revision: 1) { cens { id } } }");
        no("{ keptRevisions { oldest } }");
        no("{ __schema { types { name } } }");
        no("query { ...F } fragment F on Query { cens { ...G } } fragment G on Cen { status }");
        no("{ cens { ... on Cen { status } } }");
        no("mutation { cenCreate(input: {id: \"c\"}) { revision } }");
        no("subscription { changes { revision } }");
        // A cycle ends.
        no("query { ...F } fragment F on Query { ...F cens { status } }");
        // Per operation.
        let mut two = ops(&p, "query A { cens { id } } query B { cens { status } }");
        two.sort();
        assert_eq!(two, vec![(Some("A".into()), true), (Some("B".into()), false)]);
    }
}
