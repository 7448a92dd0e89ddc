//! Who is calling, and what they may do: the tokens a server accepts (each
//! with a role and a name), the [`Caller`] a request is served as, and
//! where a request may carry its token (`Authorization: Bearer <token>`,
//! or `?token=` where allowed).
//!
//! Roles, each including the one before: `viewer` (queries,
//! subscriptions, pages, legacy GET routes, the monitor websocket),
//! `editor` (every mutation but those of `admin`, legacy write routes),
//! `admin` (`reconcile`, host mutations, `/metrics`).
//!
//! Where the caller is set: the token check (`http::front::check`)
//! resolves it once per request, inserts it as an axum request extension
//! (`Extension<Caller>`) and runs the rest of the request inside
//! [`scope`], so the GraphQL resolvers, reached through the GraphQL and
//! the legacy routes alike, read it with [`current`]. A websocket
//! connection resolves it at its handshake or `connection_init` and gives
//! it to each operation as request data. Another transport (a local
//! socket) sets its own caller, e.g. [`Caller::unix`], the same way.
//!
//! Invariants: a token is never stored, only its SHA-256; a presented token
//! is hashed and compared with every entry in constant time (no early
//! exit), so the comparison takes the same time whatever it holds; a
//! request with no caller set is served as [`Caller::anonymous`] only on a
//! server without tokens (the middleware refuses it otherwise).

use axum::http::{header, HeaderMap};
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read and watch.
    Viewer,
    /// Also change the model.
    Editor,
    /// Also reconcile, change hosts and read the metrics.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actor of requests to a server without tokens.
pub const ANONYMOUS_ACTOR: &str = "anonymous";

/// Who a request is served as: its role and the name changes record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The token's name, `unix:uid=N`, `anonymous` or `leviathan`.
    pub actor: Arc<str>,
}

impl Caller {
    /// A request to a server without tokens: it may do anything.
    pub fn anonymous() -> Caller {
        Caller { role: Role::Admin, actor: ANONYMOUS_ACTOR.into() }
    }

    /// A peer of a local socket, known by its user id.
    pub fn unix(uid: u32) -> Caller {
        Caller { role: Role::Admin, actor: format!("unix:uid={uid}").into() }
    }

    /// Whether this caller may do what needs `needed`.
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }
}

tokio::task_local! {
    static CALLER: Caller;
}

/// Runs `fut` as `caller` (what [`current`] returns inside it).
pub async fn scope<F: std::future::Future>(caller: Caller, fut: F) -> F::Output {
    CALLER.scope(caller, fut).await
}

/// The caller of the request being served on this task, if one was set.
pub fn current() -> Option<Caller> {
    CALLER.try_with(Caller::clone).ok()
}

/// Most entries in a tokens file, and its largest size.
pub const MAX_TOKENS: usize = 10_000;
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One accepted token: its role, its name and its SHA-256.
#[derive(Clone)]
struct Entry {
    role: Role,
    name: Arc<str>,
    hash: [u8; 32],
}

/// The tokens a server accepts.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.entries.iter().map(|e| format!("{} {}", e.role, e.name)).collect();
        f.debug_struct("Tokens").field("entries", &names).finish()
    }
}

fn sha256(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The lowercase hex SHA-256 of a token, as a tokens file holds it.
pub fn token_hash_hex(token: &str) -> String {
    sha256(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// `--token T`: one `admin` token named `token`.
    pub fn single(token: &str) -> Tokens {
        Tokens { entries: vec![Entry { role: Role::Admin, name: "token".into(), hash: sha256(token) }] }
    }

    /// Reads a tokens file (see [`Tokens::parse`]).
    pub fn load(path: &std::path::Path) -> Result<Tokens, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("reading {shown}: {e}"))?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(format!("{shown}: over {MAX_FILE_BYTES} bytes; a tokens file holds one short line per token"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {shown}: {e}"))?;
        Tokens::parse(&text).map_err(|e| format!("{shown}: {e}"))
    }

    /// A tokens file: one token per line, `ROLE NAME SHA256HEX` (`#` starts
    /// a comment, blank lines are skipped). Names and hashes are unique.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, name, hash] = fields[..] else {
                return Err(format!(
                    "line {n}: expected 'ROLE NAME SHA256HEX' (3 fields), got {} fields",
                    fields.len()
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!("line {n}: unknown role '{}': give viewer, editor or admin", role.escape_debug())
            })?;
            if name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
                return Err(format!(
                    "line {n}: the name '{}' must be 1 to 64 of A-Z a-z 0-9 - _ . @",
                    name.escape_debug()
                ));
            }
            let hash = parse_hex(&hash.to_ascii_lowercase()).ok_or_else(|| {
                format!(
                    "line {n}: '{}' is not a SHA-256 in hex (64 hex digits; e.g. `printf %s TOKEN | sha256sum`); \
                     the file holds hashes, never tokens",
                    hash.escape_debug()
                )
            })?;
            if entries.iter().any(|e| &*e.name == name) {
                return Err(format!("line {n}: the name '{name}' is given twice"));
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(format!("line {n}: the same token (hash) is given twice"));
            }
            if entries.len() >= MAX_TOKENS {
                return Err(format!("more than {MAX_TOKENS} tokens"));
            }
            entries.push(Entry { role, name: name.into(), hash });
        }
        if entries.is_empty() {
            return Err("no tokens: give at least one line 'ROLE NAME SHA256HEX'".into());
        }
        Ok(Tokens { entries })
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a presented token stands for: its hash compared with
    /// every entry in constant time.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        let hash = sha256(presented);
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&hash)) {
                found = Some(e);
            }
        }
        found.map(|e| Caller { role: e.role, actor: Arc::clone(&e.name) })
    }
}

/// The tokens of a running server; replaced whole when the file is read
/// again (SIGHUP).
#[derive(Debug, Default)]
pub struct Auth {
    tokens: parking_lot::RwLock<Arc<Tokens>>,
}

impl Auth {
    pub fn new(tokens: Tokens) -> Arc<Auth> {
        Arc::new(Auth { tokens: parking_lot::RwLock::new(Arc::new(tokens)) })
    }

    /// The tokens now.
    pub fn tokens(&self) -> Arc<Tokens> {
        Arc::clone(&self.tokens.read())
    }

    /// Replaces the tokens (requests already authorized keep their caller).
    pub fn replace(&self, tokens: Tokens) {
        *self.tokens.write() = Arc::new(tokens);
    }

    /// The caller of a presented token.
    pub fn caller(&self, presented: &str) -> Option<Caller> {
        self.tokens.read().caller(presented)
    }

    /// The caller of a request's token: `Authorization: Bearer <token>` or,
    /// where `query_allowed` (websocket upgrades and the pages), `?token=`.
    pub fn request_caller(&self, headers: &HeaderMap, query: Option<&str>, query_allowed: bool) -> Option<Caller> {
        if let Some(c) = bearer(headers).and_then(|t| self.caller(t)) {
            return Some(c);
        }
        let query_token = query
            .filter(|_| query_allowed)
            .and_then(|q| url_params(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
        query_token.and_then(|t| self.caller(&t))
    }
}

/// Constant-time token comparison.
pub fn token_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a request carries the token in `Authorization: Bearer <token>`
/// or, where `query_allowed` (websocket upgrades and the pages), `?token=`.
pub fn request_has_token(expected: &str, headers: &HeaderMap, query: Option<&str>, query_allowed: bool) -> bool {
    let query_token = query
        .filter(|_| query_allowed)
        .and_then(|q| url_params(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    bearer(headers).is_some_and(|t| token_matches(expected, t))
        || query_token.is_some_and(|t| token_matches(expected, &t))
}

fn url_params(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_gives_each_token_its_role_and_name() {
        let text = format!(
            "# the wall\nviewer wall {}\neditor ci {}  # the pipeline\n\nadmin ops {}\n",
            token_hash_hex("wall-token"),
            token_hash_hex("ci-token").to_uppercase(),
            token_hash_hex("ops-token")
        );
        let t = Tokens::parse(&text).expect("parses");
        assert_eq!(t.len(), 3);
        assert_eq!(t.caller("wall-token"), Some(Caller { role: Role::Viewer, actor: "wall".into() }));
        assert_eq!(t.caller("ci-token").map(|c| c.role), Some(Role::Editor));
        assert_eq!(t.caller("ops-token").map(|c| c.actor.to_string()), Some("ops".into()));
        assert_eq!(t.caller("wall-token "), None);
        assert_eq!(t.caller(""), None);
    }

    #[test]
    fn a_bad_tokens_file_says_which_line_and_why() {
        let h = token_hash_hex("x");
        let cases = [
            (format!("root a {h}"), "line 1: unknown role 'root'"),
            ("viewer a".to_string(), "line 1: expected 'ROLE NAME SHA256HEX' (3 fields), got 2"),
            (format!("\nviewer a {}", &h[..60]), "line 2: '"),
            ("viewer a s3cret-token-in-clear".to_string(), "the file holds hashes, never tokens"),
            (format!("viewer a {h}\neditor a {}", token_hash_hex("y")), "line 2: the name 'a' is given twice"),
            (format!("viewer a {h}\neditor b {h}"), "line 2: the same token (hash) is given twice"),
            ("# nothing\n".to_string(), "no tokens"),
            (format!("viewer a/b {h}"), "line 1: the name 'a/b'"),
        ];
        for (text, want) in cases {
            let e = Tokens::parse(&text).expect_err(&text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_single_token_is_an_admin_named_token() {
        let t = Tokens::single("sixteen-chars-long");
        assert_eq!(t.caller("sixteen-chars-long"), Some(Caller { role: Role::Admin, actor: "token".into() }));
        assert_eq!(t.caller("sixteen-chars-lonG"), None);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Caller { role: Role::Editor, actor: "e".into() }.may(Role::Viewer));
        assert!(!Caller { role: Role::Editor, actor: "e".into() }.may(Role::Admin));
        assert!(Caller::anonymous().may(Role::Admin));
        assert_eq!(Caller::unix(0).actor.as_ref(), "unix:uid=0");
    }

    #[tokio::test]
    async fn the_caller_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let c = Caller { role: Role::Viewer, actor: "v".into() };
        let seen = scope(c.clone(), async { current() }).await;
        assert_eq!(seen, Some(c));
    }
}
