//! Pages of lists: `first` and `after`, keyset by id.
//!
//! Ids are unique within a list, so the cursor is simply the last id seen:
//! `after: "c42"` gives the items whose id sorts after `c42` (whether or not
//! `c42` still exists). Containers are keyed by host and id; their cursor is
//! `host/id`, or a bare id on this server's own host. A CIN's members are
//! keyed by address. The resolvers build their list as before and hand it
//! to one of these helpers.

use super::error;
use crate::model::ErrorCode;
use async_graphql::Result;
use std::net::Ipv4Addr;

fn check_first(first: Option<i32>) -> Result<Option<usize>> {
    match first {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as usize)),
        Some(n) => Err(error(ErrorCode::BadRequest, format!("first: {n} is negative (give 0 or more)"))),
    }
}

/// Sorts by key, keeps what comes after the cursor, then the first `first`.
fn keyset<T, K: Ord>(mut items: Vec<T>, key: impl Fn(&T) -> K, first: Option<i32>, after: Option<K>) -> Result<Vec<T>> {
    let first = check_first(first)?;
    if first.is_none() && after.is_none() {
        return Ok(items);
    }
    items.sort_by_key(|a| key(a));
    let start = match &after {
        Some(a) => items.partition_point(|x| key(x) <= *a),
        None => 0,
    };
    let end = first.map_or(items.len(), |n| start.saturating_add(n).min(items.len()));
    items.truncate(end);
    items.drain(..start);
    Ok(items)
}

/// A page of a list keyed by a plain id (hosts, CENs, CINs, pools).
pub fn by_id<T>(items: Vec<T>, id: impl Fn(&T) -> &str, first: Option<i32>, after: Option<String>) -> Result<Vec<T>> {
    keyset(items, |x| id(x).to_string(), first, after)
}

/// A page of containers, keyed by host and id; `after` is `host/id`, or an
/// id on `default_host`.
pub fn by_container<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> (&str, &str),
    default_host: &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Vec<T>> {
    let after = after.map(|a| match a.split_once('/') {
        Some((h, id)) => (h.to_string(), id.to_string()),
        None => (default_host.to_string(), a),
    });
    keyset(
        items,
        |x| {
            let (h, id) = key(x);
            (h.to_string(), id.to_string())
        },
        first,
        after,
    )
}

/// A page of a CIN's members, keyed by address.
pub fn by_address<T>(
    items: Vec<T>,
    address: impl Fn(&T) -> &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Vec<T>> {
    let after = match after {
        None => None,
        Some(a) => Some(a.parse::<Ipv4Addr>().map_err(|_| {
            error(
                ErrorCode::BadRequest,
                format!("after: '{}' is not an address (members are paged by address)", a.escape_debug()),
            )
        })?),
    };
    keyset(items, |x| address(x).parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED), first, after)
}

/// A page of a list in a meaningful order of its own (a CIN's CENs, in
/// slice order): the items after the one whose id is `after`.
pub fn by_position<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> &str,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Vec<T>> {
    let first = check_first(first)?;
    let start = match &after {
        None => 0,
        Some(a) => match items.iter().position(|x| id(x) == a) {
            Some(i) => i + 1,
            None => {
                return Err(error(ErrorCode::BadRequest, format!("after: no item '{}' in this list", a.escape_debug())))
            }
        },
    };
    Ok(items.into_iter().skip(start).take(first.unwrap_or(usize::MAX)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_every_id_once() {
        let items: Vec<String> = (0..25).map(|i| format!("c{i:02}")).rev().collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = by_id(items.clone(), |s| s.as_str(), Some(10), after.clone()).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().cloned();
            seen.extend(page);
        }
        let mut want = items.clone();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn negative_first_and_bad_cursors_are_refused() {
        assert!(by_id(vec!["a".to_string()], |s| s.as_str(), Some(-1), None).is_err());
        assert!(by_address(vec!["10.0.0.1".to_string()], |s| s.as_str(), None, Some("x".into())).is_err());
        assert!(by_position(vec!["a".to_string()], |s| s.as_str(), None, Some("b".into())).is_err());
        assert_eq!(
            by_position(vec!["b".to_string(), "a".into()], |s| s.as_str(), None, Some("b".into())).unwrap(),
            ["a"]
        );
    }

    #[test]
    fn containers_take_host_slash_id() {
        let items = vec![("h1", "a"), ("h1", "b"), ("h2", "a")];
        let p = by_container(items.clone(), |x| (x.0, x.1), "h1", None, Some("a".into())).unwrap();
        assert_eq!(p, [("h1", "b"), ("h2", "a")]);
        let p = by_container(items, |x| (x.0, x.1), "h1", Some(5), Some("h1/b".into())).unwrap();
        assert_eq!(p, [("h2", "a")]);
    }
}
