//! Settings of the HTTP endpoints, as `serve` options give them.

use leviathan_rest_compat::intake::Intake;

/// Settings of the HTTP endpoints (`serve` options).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most requests in one batch (a JSON array POSTed to `/graphql`).
    pub max_batch: usize,
    /// Largest GraphQL answer, in bytes; a larger one is replaced by an error.
    pub max_response_bytes: usize,
    /// Longest document a GET is parsed for (to refuse a mutation by GET);
    /// the schema's own limit refuses longer ones.
    pub max_get_document: usize,
    /// Origins (besides the server's own) whose pages may call the API.
    pub cors_origins: Vec<String>,
    /// Host names accepted in `Host` besides the loopback names, when the
    /// server listens on loopback.
    pub allowed_hosts: Vec<String>,
    /// Whether the server listens on a loopback address: then `Host` must
    /// name loopback (or an allowed host), so DNS rebinding cannot reach it.
    pub loopback: bool,
    /// Whether this server realizes the model in the kernel (reported by
    /// `/healthz`; a server that cannot realize does not start).
    pub realizing: bool,
    /// Body timeout, list-item limit and the budget of large bodies, shared
    /// with the legacy routes (see `leviathan_rest_compat::intake`).
    pub intake: Intake,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_batch: 10,
            max_response_bytes: 32 * 1024 * 1024,
            max_get_document: 256 * 1024,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            loopback: true,
            realizing: false,
            intake: Intake::default(),
        }
    }
}
