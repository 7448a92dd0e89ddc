//! `leviathan cleanup --prefix P`: the explicit hammer that removes
//! everything under a prefix, recorded or not (named namespaces, and
//! links carrying the prefix in the host namespace). Never used by a
//! running server, which touches only what its ledger holds.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::check_prefix;
use super::error::{KernelError, RealizeError};
use super::nl::{self, NsHandle};
use super::observed::{LinkState, NsId};
use super::{blocking, naming, netns, IN_FLIGHT};

type BoxedDelete<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), KernelError>> + Send + 'a>>;

/// What [`cleanup`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CleanupReport {
    pub namespaces: usize,
    pub links: usize,
}

/// Remove everything under `prefix`: named namespaces (containers and
/// fabric) and, in the host namespace, links whose name carries the prefix.
/// Namespaces bound by path are not known here; their links die with the
/// fabric (bridged CENs) or with a managed peer namespace.
pub async fn cleanup(prefix: &str) -> Result<CleanupReport, RealizeError> {
    check_prefix(prefix)?;
    let p = prefix.to_string();
    let names = blocking(move || netns::list_named(&p)).await.and_then(|r| r)?;
    let count = names.len();
    let gone = blocking(move || netns::del_named_many(names)).await?;
    if let Some(e) = gone.into_iter().find_map(Result::err) {
        return Err(RealizeError::System(e));
    }
    // Host-mode leftovers.
    let opened =
        blocking(|| netns::open_paths(vec![(PathBuf::from("/proc/self/ns/net"), netns::Role::Container)])).await?;
    let Some(Ok(o)) = opened.into_iter().next() else {
        return Err(KernelError::state("open", "host", "cannot open the host namespace").into());
    };
    let h = NsHandle::new(o, PathBuf::from("/proc/self/ns/net"), true);
    let links = nl::answered("dump_links", || "host".into(), nl::dump_links(&h.handle, prefix, &NsId::Host)).await?;
    let ours: Vec<&LinkState> = links.iter().filter(|l| l.ours).collect();
    let mut groups: BTreeSet<u32> = BTreeSet::new();
    let mut singles = Vec::new();
    for l in &ours {
        let whole = l.group != 0
            && naming::is_our_group(prefix, l.group)
            && links.iter().filter(|x| x.group == l.group).all(|x| x.ours);
        if whole {
            groups.insert(l.group);
        } else {
            singles.push(l.index);
        }
    }
    let mut futs: Vec<BoxedDelete<'_>> = Vec::new();
    for g in groups {
        futs.push(Box::pin(nl::answered("del_group", move || format!("{g:#x}"), nl::del_group(&h.handle, g))));
    }
    for i in singles {
        futs.push(Box::pin(nl::answered("del_link", move || format!("link {i}"), nl::del_link(&h.handle, i))));
    }
    for r in nl::bounded(futs, IN_FLIGHT).await {
        r?;
    }
    Ok(CleanupReport { namespaces: count, links: ours.len() })
}
