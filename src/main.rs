//! The `leviathan` command line.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use leviathan::server::{self, AppState};
use leviathan::service::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "leviathan", version, about = "Topology service for container networks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service.
    Serve(Box<ServeArgs>),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Remove everything leviathan made in the kernel under a prefix.
    Cleanup {
        /// The prefix of the instance to clean up.
        #[arg(long, default_value = "lev-")]
        prefix: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Fabric {
    /// A leviathan-owned namespace `<prefix>fabric` holds bridges and host-side veths.
    Netns,
    /// The host's own namespace holds them (the legacy look).
    Host,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// State file (SQLite); created if missing. One host only; see --etcd
    /// for many.
    #[arg(long, default_value = "./leviathan.db", conflicts_with = "etcd")]
    state: PathBuf,
    /// Keep the state in etcd, shared with the leviathans of other hosts:
    /// the client URLs of its members, comma-separated
    /// (`http://10.0.0.1:2379,http://10.0.0.2:2379`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    etcd: Vec<String>,
    /// Prefix of every key leviathan keeps in etcd.
    #[arg(long, default_value = "/leviathan", requires = "etcd")]
    etcd_prefix: String,
    /// Seconds one etcd request may take before etcd counts as unavailable.
    #[arg(long, default_value_t = 5.0, requires = "etcd")]
    etcd_timeout: f64,
    /// Seconds this host's announcement in etcd outlives a server that
    /// stopped (it is renewed every third of that while running).
    #[arg(long, default_value_t = 10, requires = "etcd")]
    host_ttl: i64,
    /// This host's underlay address (the VTEP address other hosts reach it
    /// at), announced with its host id.
    #[arg(long)]
    vtep_address: Option<std::net::IpAddr>,
    /// Changes the change log keeps (older `since` values get GONE).
    #[arg(long, default_value_t = leviathan::store::DEFAULT_KEEP_CHANGES)]
    keep_changes: u64,
    /// This server's host id (the default host of every request).
    #[arg(long, default_value = "host1")]
    host_id: String,
    /// Bearer token every request must carry.
    #[arg(long, env = "LEVIATHAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Allow listening beyond loopback without a token.
    #[arg(long)]
    insecure_no_auth: bool,
    /// An origin (e.g. `https://dash.example`) whose browser pages may call
    /// the API; repeat for more. None by default.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = server::DEFAULT_BODY_LIMIT)]
    max_body: usize,
    /// Prefix of everything made in the kernel (at most 9 characters).
    #[arg(long, default_value = "lev-")]
    prefix: String,
    /// Where bridges and the host side of veth pairs live.
    #[arg(long, value_enum, default_value = "netns")]
    fabric: Fabric,
    /// Keep the model only: make nothing in the kernel.
    #[arg(long)]
    no_realize: bool,
    /// Seconds between full reconciles that repair drift made outside
    /// leviathan (0: only at start and on the `reconcile` mutation).
    #[arg(long, default_value_t = 60)]
    reconcile_interval: u64,
    /// A host name (besides localhost, 127.0.0.1, [::1]) accepted in the
    /// Host header while listening on loopback; repeat for more.
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// Largest GraphQL document, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_document_bytes: usize,
    /// Most tokens in a GraphQL document.
    #[arg(long, default_value_t = 20_000)]
    max_tokens: usize,
    /// Deepest GraphQL selection.
    #[arg(long, default_value_t = leviathan::graphql::MAX_DEPTH)]
    max_depth: usize,
    /// Highest query cost (each field 1; a list's items counted at `first`,
    /// or at the longest such list in the topology).
    #[arg(long, default_value_t = leviathan::graphql::MAX_COMPLEXITY)]
    max_cost: usize,
    /// Most aliased fields in a document.
    #[arg(long, default_value_t = leviathan::graphql::MAX_ALIASES)]
    max_aliases: usize,
    /// Most errors in one answer (the rest are summarized in one more).
    #[arg(long, default_value_t = 100)]
    max_errors: usize,
    /// Seconds a query may run before it is stopped.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Largest GraphQL answer, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_response_bytes: usize,
    /// Most requests in one batch (a JSON array POSTed to /graphql).
    #[arg(long, default_value_t = 10)]
    max_batch: usize,
    /// Most HTTP connections open at once (more wait to be accepted).
    #[arg(long, default_value_t = 2048)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept.
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Seconds requests in flight get to finish after SIGTERM or SIGINT.
    #[arg(long, default_value_t = 10.0)]
    shutdown_grace: f64,
    /// Most websocket connections on each of /graphql/ws and
    /// /leviathan/monitor.
    #[arg(long, default_value_t = 10_000)]
    ws_max_connections: usize,
    /// Seconds a websocket peer has to take one message before it is dropped.
    #[arg(long, default_value_t = 10.0)]
    ws_send_timeout: f64,
    /// Largest websocket message accepted from a client, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    ws_max_message: usize,
}

fn secs(name: &str, v: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v).map_err(|_| anyhow::anyhow!("--{name}: '{v}' is not a number of seconds"))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEVIATHAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Schema => {
            print!("{}", leviathan::graphql::sdl());
            Ok(())
        }
        Cmd::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let r = rt.block_on(serve(*args));
            // Whatever is still running after the grace period is dropped.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
        Cmd::Cleanup { prefix } => {
            let report = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(leviathan::realize::cleanup(&prefix))
                .map_err(|e| anyhow::anyhow!("cleanup of prefix '{prefix}': {e}"))?;
            println!("removed {} namespaces and {} links under '{prefix}'", report.namespaces, report.links);
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let loopback = args.listen.ip().is_loopback();
    if let Some(t) = &args.token {
        if t.trim().is_empty() {
            bail!("--token: a blank token protects nothing; give a real one (16 characters or more)");
        }
        if t.trim() != t {
            bail!("--token: the token has leading or trailing spaces; give it without them");
        }
        if !loopback && t.chars().count() < 16 {
            bail!("--token: listening on {} needs a token of 16 characters or more", args.listen);
        }
    }
    let token = args.token.clone();
    if token.is_none() && !loopback && !args.insecure_no_auth {
        bail!(
            "refusing to listen on {} without a token: set --token (or LEVIATHAN_TOKEN), or pass --insecure-no-auth",
            args.listen
        );
    }
    let opts = leviathan::service::Options {
        keep_changes: args.keep_changes,
        vtep_address: args.vtep_address.map(|a| a.to_string()),
        ..leviathan::service::Options::new(&args.host_id)
    };
    let service = if args.etcd.is_empty() {
        Service::open_with(&args.state, opts)?
    } else {
        let cfg = leviathan::store::EtcdConfig {
            prefix: args.etcd_prefix.clone(),
            lease_ttl: args.host_ttl,
            request_timeout: match secs("etcd-timeout", args.etcd_timeout)? {
                t if t < std::time::Duration::from_millis(100) => bail!("--etcd-timeout: give at least 0.1 seconds"),
                t => t,
            },
            ..leviathan::store::EtcdConfig::new(args.etcd.clone(), &args.host_id)
        };
        Service::open_etcd(cfg, opts).await?
    };
    let driver = if args.no_realize {
        None
    } else {
        let cfg = leviathan::realize::Config {
            prefix: args.prefix.clone(),
            fabric: match args.fabric {
                Fabric::Netns => leviathan::realize::FabricMode::Netns,
                Fabric::Host => leviathan::realize::FabricMode::Host,
            },
        };
        let realizer = leviathan::realize::Realizer::new(cfg).await.map_err(|e| e.to_string());
        if let Err(e) = &realizer {
            tracing::error!(error = %e, "the realizer could not start; made objects will show FAILED");
        }
        let driver = leviathan::driver::Driver::start(Arc::clone(&service), realizer);
        if args.reconcile_interval > 0 {
            driver.reconcile_every(std::time::Duration::from_secs(args.reconcile_interval));
        }
        Some(Arc::new(driver) as Arc<dyn leviathan::service::Realization>)
    };
    let limits = leviathan::graphql::Limits {
        max_document_bytes: args.max_document_bytes,
        max_tokens: args.max_tokens,
        max_depth: args.max_depth,
        max_cost: args.max_cost,
        max_aliases: args.max_aliases,
        max_selections: leviathan::graphql::Limits::default().max_selections,
        max_errors: args.max_errors,
        deadline: secs("request-timeout", args.request_timeout)?,
    };
    let schema = leviathan::graphql::schema_with_limits(Arc::clone(&service), driver, limits);
    let http = leviathan::http::HttpConfig {
        max_batch: args.max_batch,
        max_response_bytes: args.max_response_bytes,
        max_get_document: args.max_document_bytes,
        cors_origins: args.cors_origins.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        loopback,
    };
    let state = AppState {
        service: Arc::clone(&service),
        schema,
        token: token.map(Into::into),
        body_limit: args.max_body,
        http: Arc::new(http),
    };
    let (trigger, shutdown_signal) = leviathan::http::serve::Shutdown::new();
    let ws = leviathan::graphql::ws::WsConfig {
        max_connections: args.ws_max_connections,
        send_timeout: secs("ws-send-timeout", args.ws_send_timeout)?,
        max_message_size: args.ws_max_message,
        shutdown: shutdown_signal.clone(),
        ..Default::default()
    };
    let app = server::with_cors(server::router_with(state, ws), &args.cors_origins)?;
    let opts = leviathan::http::serve::ServeOptions {
        max_connections: args.max_connections,
        header_timeout: secs("header-timeout", args.header_timeout)?,
        grace: secs("shutdown-grace", args.shutdown_grace)?,
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    if args.etcd.is_empty() {
        tracing::info!(%addr, state = %args.state.display(), revision = service.revision(), "leviathan listening");
    } else {
        tracing::info!(%addr, etcd = %args.etcd.join(","), prefix = %args.etcd_prefix, revision = service.revision(), "leviathan listening");
    }
    println!("listening on {addr}");
    leviathan::http::serve::run(listener, app, opts, trigger, shutdown_signal, shutdown()).await;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return ctrl_c.await.unwrap_or(()),
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
