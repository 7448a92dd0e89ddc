//! The `leviathan` command line.

mod cli;
mod serve_security;

use anyhow::bail;
use clap::{CommandFactory, Parser, Subcommand};
use leviathan::server::{self, AppState};
use leviathan::service::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `leviathan --version`: the package version and the commit it was built
/// from (`unknown` outside a git checkout; see build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LEVIATHAN_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "leviathan", version = VERSION, about = "Topology service for container networks")]
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
    /// The explicit big hammer: remove EVERYTHING in the kernel under a
    /// prefix (named namespaces `<P>*` and, in the host namespace, links
    /// named `<P>*`), whoever made it. A running server's own teardown
    /// (`cenDestroy`, `cinDestroy`) touches only what it recorded instead.
    Cleanup {
        /// The prefix to clear (required: there is no default, so a bare
        /// `cleanup` never hits a running server's objects by accident).
        #[arg(long)]
        prefix: String,
        /// Clear even while a server holds the prefix.
        #[arg(long)]
        force: bool,
    },
    #[command(flatten)]
    Client(cli::Verb),
    /// Print a shell completion script, e.g.
    /// `leviathan completions bash > /etc/bash_completion.d/leviathan`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g.
    /// `leviathan man > /usr/local/share/man/man1/leviathan.1`;
    /// `leviathan man serve` prints leviathan-serve(1).
    Man {
        /// The verb whose page to print (default: the page of leviathan).
        verb: Option<String>,
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
    /// Address to listen on: ADDRESS:PORT, localhost:PORT, or a port.
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = cli::listen::parse)]
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
    /// With --etcd: the local file where this host's server records what it
    /// made in the kernel (with SQLite, the state file holds it).
    #[arg(long, default_value = "./leviathan-ledger.db", requires = "etcd")]
    ledger: PathBuf,
    /// Prefix of every key leviathan keeps in etcd.
    #[arg(long, default_value = "/leviathan", requires = "etcd")]
    etcd_prefix: String,
    /// Seconds one etcd request may take before etcd counts as unavailable.
    #[arg(long, default_value_t = 5.0, requires = "etcd")]
    etcd_timeout: f64,
    /// With https:// members in --etcd: the CA certificate (PEM) that
    /// signed their certificates.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_cacert: Option<PathBuf>,
    /// This server's client certificate (PEM) for etcd's
    /// --client-cert-auth; with --etcd-key.
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of --etcd-cert.
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_cert"])]
    etcd_key: Option<PathBuf>,
    /// The etcd user this server authenticates as (etcd's own
    /// authentication); its password is read from --etcd-password-file.
    #[arg(long, value_name = "NAME", requires_all = ["etcd", "etcd_password_file"])]
    etcd_user: Option<String>,
    /// The file holding --etcd-user's password (one trailing newline is
    /// dropped); never give a password on the command line.
    #[arg(long, value_name = "FILE", requires_all = ["etcd", "etcd_user"])]
    etcd_password_file: Option<PathBuf>,
    /// Seconds this host's announcement in etcd outlives a server that
    /// stopped (it is renewed every third of that while running).
    #[arg(long, default_value_t = 10, requires = "etcd")]
    host_ttl: i64,
    /// This host's underlay address (the VTEP address other hosts reach it
    /// at), announced with its host id.
    #[arg(long)]
    vtep_address: Option<std::net::IpAddr>,
    /// This server's host id (the default host of every request).
    #[arg(long, default_value = "host1")]
    host_id: String,
    /// The pool CIN subnets are handed out from (lowest free first; the
    /// first CIN is 10.10.0.0 when the pool holds it, as the legacy API had it).
    #[arg(long, default_value = "10.0.0.0/8", value_parser = parse_cidr)]
    cin_pool: (std::net::Ipv4Addr, u8),
    /// Prefix length of each CIN's subnet (16: 246 CINs of 65,534 addresses
    /// from the default pool; 24: 63,000 CINs of 254). A CIN over several
    /// CENs splits its subnet into equal slices of /(len+8), at most /28.
    #[arg(long, default_value_t = 16)]
    cin_prefix_len: u8,
    /// Changes the change log keeps; `changes(since:)` older than that
    /// answers GONE (re-read the state, then resume from its revision).
    #[arg(long, default_value_t = leviathan::store::DEFAULT_KEEP_CHANGES)]
    keep_changes: u64,
    /// Revisions per undo block of the history (`at`, `diff`): an `at`
    /// read undoes at most the blocks after it and fewer than this many
    /// changes read from the log. Smaller: faster cold reads, more memory.
    #[arg(long, default_value_t = leviathan::service::history::DEFAULT_HISTORY_EVERY, value_name = "K")]
    history_every: u64,
    #[command(flatten)]
    security: serve_security::SecurityArgs,
    /// Also serve the same routes on this unix socket (mode 0660; for local
    /// agents such as leviathan-cni): no token, the peer must be root or in
    /// the socket's group.
    #[arg(long, value_name = "PATH")]
    unix_socket: Option<PathBuf>,
    /// Directory of the CNI deletions queued while the server was down;
    /// carried out at start.
    #[arg(long, value_name = "DIR", default_value = leviathan::service::cni_queue::DEFAULT_QUEUE_DIR)]
    cni_queue: PathBuf,
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
    /// Allow binding a container (`containerCreate(netnsPath:)`) to the
    /// network namespace the server itself runs in (refused by default:
    /// leviathan's interfaces would land in the host's own namespace).
    #[arg(long)]
    allow_host_netns: bool,
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
    /// Bytes of parsed GraphQL documents kept (persisted queries among
    /// them); the least recently used go first; 0 keeps none.
    #[arg(long, default_value_t = leviathan::graphql::DEFAULT_CACHE_BYTES)]
    document_cache_bytes: usize,
    /// Bytes of serialized answers of read-only queries kept, each valid
    /// at the topology revision it was computed at; 0 keeps none.
    #[arg(long, default_value_t = leviathan::graphql::DEFAULT_ANSWER_BYTES)]
    answer_cache_bytes: usize,
    /// Seconds a query may run before it is stopped.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Largest GraphQL answer, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    max_response_bytes: usize,
    /// Most requests in one batch (a JSON array POSTed to /graphql).
    #[arg(long, default_value_t = 10)]
    max_batch: usize,
    /// Most list items (elements of JSON arrays, at any depth) in one
    /// request body; more is refused before anything is built from it.
    #[arg(long, default_value_t = leviathan_rest_compat::intake::DEFAULT_MAX_INPUT_ITEMS)]
    max_input_items: usize,
    /// Bytes of large request bodies (64 KiB or more) processed at once;
    /// more large requests wait their turn.
    #[arg(long, default_value_t = leviathan_rest_compat::intake::DEFAULT_BUDGET)]
    max_large_body_bytes: usize,
    /// Seconds a client has to send a request's whole body (408 and the
    /// connection closed after).
    #[arg(long, default_value_t = 10.0)]
    body_timeout: f64,
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

/// Puts this host's VTEP address in the model (so every host's driver
/// knows where to send the traffic of the CENs it shares with this one),
/// retrying while the store is unavailable.
async fn announce(service: Arc<Service>, vtep: Option<std::net::Ipv4Addr>) {
    let id = service.host_id().to_string();
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        if service.read(|t| t.host(&id).is_some_and(|h| h.vtep == vtep))
            || (vtep.is_none() && service.read(|t| t.host(&id).is_none()))
        {
            return;
        }
        match service.execute(leviathan::model::Command::HostAnnounce { id: id.clone(), vtep }).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "announcing this host's VTEP address; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// A failure is reported as one line with its causes (`error: what: why`),
/// never with a backtrace, even when `RUST_BACKTRACE` is set: these are
/// user errors (a bad flag, a busy port, a foreign state file), not bugs.
fn main() -> std::process::ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEVIATHAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Client(verb) => cli::run(verb),
        Cmd::Schema => {
            print!("{}", leviathan::graphql::sdl());
            Ok(())
        }
        Cmd::Completions { shell } => cli::manual::completions(shell, Cli::command(), &mut std::io::stdout()),
        Cmd::Man { verb } => cli::manual::man(Cli::command(), verb.as_deref(), VERSION, &mut std::io::stdout()),
        Cmd::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let r = rt.block_on(serve(*args));
            // Whatever is still running after the grace period is dropped.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
        Cmd::Cleanup { prefix, force } => {
            leviathan::realize::check_prefix(&prefix).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
            if let (false, Some(who)) = (force, leviathan::lock::prefix_holder(&prefix)) {
                bail!("a leviathan server ({who}) is serving prefix '{prefix}': stop it first, or pass --force");
            }
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

/// `leviathan serve`: the steps, in order. Nothing is touched before the
/// options are known good; nothing is made in the kernel before the
/// server holds its prefix and state file and has bound its port. A start
/// refused after the state file (or the ledger) was created removes what
/// it created, so a refused start leaves nothing behind; a file that
/// existed before is never removed.
///
/// With `--etcd` the port is bound before etcd is reached: until etcd
/// answers and the state is loaded, `/healthz` and the API answer 503
/// (`http::waiting`), and the connection is tried again with a backoff;
/// then the realizer starts and the real router takes over (a gate in
/// front of it, so connections already open see it too). The first line
/// on stdout, `listening on ADDR`, always comes once the server serves
/// its state.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::of(&args)?;
    let underlay = find_underlay(settings.vtep, args.no_realize).await?;
    let _prefix_lock = if args.no_realize { None } else { Some(leviathan::lock::prefix(&args.prefix)?) };
    if !args.no_realize {
        raise_open_files();
    }
    let mut created = leviathan::lock::NewFiles::default();
    let _state_lock = if args.etcd.is_empty() {
        created.watch(&args.state);
        Some(leviathan::lock::state_file(&args.state)?)
    } else {
        None
    };
    if !args.etcd.is_empty() && !args.no_realize {
        created.watch(&args.ledger);
    }
    let (trigger, shutdown_signal) = leviathan::http::serve::Shutdown::new();
    let opts = leviathan::http::serve::ServeOptions {
        max_connections: args.max_connections,
        header_timeout: settings.header_timeout,
        grace: settings.shutdown_grace,
        tls: settings.security.tls.clone(),
    };
    Arc::new(args.security.clone()).reload_on_sighup(&settings.security);
    if args.etcd.is_empty() {
        let service = open_service(&args, &settings, None).await?;
        // Bind before any kernel work: a server that cannot listen changes
        // nothing.
        let listener = leviathan::http::serve::bind(args.listen).map_err(|e| bind_error(args.listen, &e))?;
        let unix = bind_unix(&args)?;
        let app = start_serving(&args, &settings, &service, underlay, shutdown_signal.clone()).await?;
        let app = server::with_cors(app, &args.cors_origins)?;
        // Started: what this start created is the server's now.
        created.keep();
        let unix = spawn_unix(unix, &app, &opts, &shutdown_signal);
        announce_listening(&args, &settings, listener.local_addr()?, service.revision());
        let grace = opts.grace;
        leviathan::http::serve::run(listener, app, opts, trigger, shutdown_signal, shutdown()).await;
        join_unix(unix, grace).await;
        return Ok(());
    }
    let listener = leviathan::http::serve::bind(args.listen).map_err(|e| bind_error(args.listen, &e))?;
    let unix = bind_unix(&args)?;
    let addr = listener.local_addr()?;
    let connecting = leviathan::service::Connecting::new(&args.etcd);
    let waiting = leviathan::http::waiting::Waiting {
        token: settings.security.auth.clone(),
        http: Arc::new(http_config(&args, &settings)),
        connecting: Arc::clone(&connecting),
        store_kind: "etcd",
    };
    let gate = leviathan::http::waiting::Gate::new(waiting.router());
    let app = server::with_cors(gate.router(), &args.cors_origins)?;
    let unix = spawn_unix(unix, &app, &opts, &shutdown_signal);
    let grace = opts.grace;
    tracing::info!(%addr, etcd = %args.etcd.join(","), security = %settings.etcd_security.describe(), "bound; loading the state from etcd");
    let serving = leviathan::http::serve::run(listener, app, opts, trigger, shutdown_signal.clone(), shutdown());
    let starting = async {
        let service = open_service(&args, &settings, Some(&connecting)).await?;
        let app = start_serving(&args, &settings, &service, underlay, shutdown_signal).await?;
        gate.open(app);
        created.keep();
        announce_listening(&args, &settings, addr, service.revision());
        anyhow::Ok(())
    };
    tokio::pin!(serving);
    tokio::select! {
        // Stopped (SIGTERM, SIGINT) while still waiting for etcd.
        () = &mut serving => {
            join_unix(unix, grace).await;
            return Ok(());
        }
        started = starting => started?,
    }
    serving.await;
    join_unix(unix, grace).await;
    Ok(())
}

/// The local socket (`--unix-socket`), bound before any kernel work.
fn bind_unix(args: &ServeArgs) -> anyhow::Result<Option<leviathan::http::unix::UnixSocket>> {
    args.unix_socket.as_deref().map(leviathan::http::unix::UnixSocket::bind).transpose()
}

/// Serves `app` on the local socket too, until shutdown.
fn spawn_unix(
    socket: Option<leviathan::http::unix::UnixSocket>,
    app: &axum::Router,
    opts: &leviathan::http::serve::ServeOptions,
    shutdown: &leviathan::http::serve::Shutdown,
) -> Option<tokio::task::JoinHandle<()>> {
    let socket = socket?;
    tracing::info!(path = %socket.path().display(), "serving on the unix socket too");
    let run =
        leviathan::http::unix::run(socket, app.clone(), opts.max_connections, opts.header_timeout, shutdown.clone());
    Some(tokio::spawn(run))
}

/// Lets the local socket finish its requests (within the grace period);
/// its file is removed when it returns.
async fn join_unix(task: Option<tokio::task::JoinHandle<()>>, grace: std::time::Duration) {
    if let Some(t) = task {
        let _ = tokio::time::timeout(grace, t).await;
    }
}

/// Once the store is open: the realizer and its driver (unless
/// `--no-realize`), the change log lines, this host's announcement, and
/// the router.
async fn start_serving(
    args: &ServeArgs,
    settings: &Settings,
    service: &Arc<Service>,
    underlay: Option<leviathan::realize::Underlay>,
    shutdown: leviathan::http::serve::Shutdown,
) -> anyhow::Result<axum::Router> {
    leviathan::service::cni_queue::drain(service, &args.cni_queue).await;
    let driver = if args.no_realize { None } else { Some(start_driver(args, service, underlay).await?) };
    tokio::spawn(leviathan::service::log_changes(service.subscribe()));
    tokio::spawn(announce(Arc::clone(service), settings.vtep));
    build_router(args, settings, service, driver, shutdown)
}

/// Says the server serves: a log line, `listening on ADDR` as the first
/// line on stdout (scripts and tests read it), and where to go on stderr.
fn announce_listening(args: &ServeArgs, settings: &Settings, addr: SocketAddr, revision: u64) {
    if args.etcd.is_empty() {
        tracing::info!(%addr, state = %args.state.display(), revision, "leviathan listening");
    } else {
        tracing::info!(%addr, etcd = %args.etcd.join(","), prefix = %args.etcd_prefix, revision, "leviathan listening");
    }
    println!("listening on {addr}");
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(where_to_go(args, settings, addr).as_bytes());
}

/// What a person needs once the server listens: the pages' addresses
/// (with `?token=…` when a token is needed, never the token itself), where
/// the state is kept, the prefix, and whether the kernel is touched.
fn where_to_go(args: &ServeArgs, settings: &Settings, addr: SocketAddr) -> String {
    let tokens = args.security.has_tokens();
    let token = if tokens { "?token=…" } else { "" };
    let scheme = if settings.security.tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{addr}");
    let mut out = format!(
        "leviathan {} is serving:\n  home      {base}/{token}\n  explorer  {base}/graphiql{token}\n  topology  {base}/topology{token}\n  API       {base}/graphql{}\n",
        env!("CARGO_PKG_VERSION"),
        if tokens { " (with the header Authorization: Bearer <token>)" } else { "" }
    );
    if args.etcd.is_empty() {
        let state = std::path::absolute(&args.state).unwrap_or_else(|_| args.state.clone());
        out += &format!("  state     {} (SQLite)\n", state.display());
    } else {
        out += &format!("  state     etcd {} under {}\n", args.etcd.join(","), args.etcd_prefix);
    }
    if args.no_realize {
        out += &format!("  kernel    not realizing (--no-realize): the model only; prefix {} unused\n", args.prefix);
    } else {
        out += &format!("  kernel    realizing: namespaces and links named {}* (--prefix)\n", args.prefix);
    }
    out
}

/// A port that cannot be bound, with what to do about it.
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another server (perhaps another leviathan) is listening there: stop it, or pass --listen ADDR to use another port (e.g. --listen {}:{})",
            addr.ip(),
            addr.port().wrapping_add(1).max(1)
        ),
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root (CAP_NET_BIND_SERVICE): pass --listen with a port of 1024 or more".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this host: pass --listen with one of its addresses (or 127.0.0.1)",
            addr.ip()
        ),
        _ => "pass --listen ADDR to listen elsewhere".to_string(),
    };
    anyhow::anyhow!("binding {addr}: {e}: {hint}")
}

/// What `serve` works with once its options are checked.
struct Settings {
    /// Whether the server listens on a loopback address.
    loopback: bool,
    addr_plan: leviathan::model::AddrPlan,
    /// This host's VTEP address (IPv4 only).
    vtep: Option<std::net::Ipv4Addr>,
    etcd_timeout: std::time::Duration,
    /// TLS and user towards etcd, their files read and checked.
    etcd_security: leviathan::store::EtcdSecurity,
    request_timeout: std::time::Duration,
    ws_send_timeout: std::time::Duration,
    header_timeout: std::time::Duration,
    body_timeout: std::time::Duration,
    shutdown_grace: std::time::Duration,
    /// The tokens and the certificate.
    security: serve_security::Security,
}

impl Settings {
    /// Checks every option that can be checked without touching anything.
    fn of(args: &ServeArgs) -> anyhow::Result<Settings> {
        let loopback = args.listen.ip().is_loopback();
        let security = args.security.load(args.listen)?;
        let addr_plan = leviathan::model::AddrPlan::new(args.cin_pool.0, args.cin_pool.1, args.cin_prefix_len)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Nothing is touched before the server knows it can do its job and
        // is the only one on its prefix and state file.
        if !args.no_realize {
            leviathan::realize::check_prefix(&args.prefix).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
            if !can_make_namespaces() {
                bail!(
                    "making networks in the kernel needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run as root, or pass --no-realize to keep the model only"
                );
            }
        }
        let vtep = match args.vtep_address {
            None => None,
            Some(std::net::IpAddr::V4(a)) => Some(a),
            Some(std::net::IpAddr::V6(a)) => {
                bail!("--vtep-address {a}: the VXLAN underlay must be IPv4 (give this host's IPv4 underlay address)")
            }
        };
        let etcd_timeout = match secs("etcd-timeout", args.etcd_timeout)? {
            t if t < std::time::Duration::from_millis(100) => bail!("--etcd-timeout: give at least 0.1 seconds"),
            t => t,
        };
        let etcd_security = if args.etcd.is_empty() {
            leviathan::store::EtcdSecurity::default()
        } else {
            let flags = leviathan::store::EtcdSecurityFlags {
                cacert: args.etcd_cacert.clone(),
                cert: args.etcd_cert.clone(),
                key: args.etcd_key.clone(),
                user: args.etcd_user.clone(),
                password_file: args.etcd_password_file.clone(),
            };
            leviathan::store::EtcdSecurity::load(&args.etcd, &flags)?
        };
        Ok(Settings {
            loopback,
            addr_plan,
            vtep,
            etcd_timeout,
            etcd_security,
            request_timeout: secs("request-timeout", args.request_timeout)?,
            ws_send_timeout: secs("ws-send-timeout", args.ws_send_timeout)?,
            header_timeout: secs("header-timeout", args.header_timeout)?,
            body_timeout: secs("body-timeout", args.body_timeout)?,
            shutdown_grace: secs("shutdown-grace", args.shutdown_grace)?,
            security,
        })
    }
}

/// The interface holding the VTEP address: VXLAN devices are bound to it,
/// and their members' MTU follows its own.
async fn find_underlay(
    vtep: Option<std::net::Ipv4Addr>,
    no_realize: bool,
) -> anyhow::Result<Option<leviathan::realize::Underlay>> {
    match (vtep, no_realize) {
        (Some(a), false) => Ok(Some(
            leviathan::realize::Underlay::find(a).await.map_err(|e| anyhow::anyhow!("--vtep-address {a}: {e}"))?,
        )),
        _ => Ok(None),
    }
}

/// Two descriptors per realized namespace (its fd and its netlink socket):
/// as root, raise the open-files limit to what the kernel allows
/// (fs.nr_open), or at least to the hard limit.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(hard)
            .min(1 << 20);
        let want = nr_open.max(hard);
        if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, "could not raise the open-files limit");
            }
        }
    }
}

/// Opens the store (the SQLite state file, or etcd) and the service on it.
/// With `--etcd`, waits for etcd while it cannot be reached (`connecting`
/// tells how far it got).
async fn open_service(
    args: &ServeArgs,
    settings: &Settings,
    connecting: Option<&leviathan::service::Connecting>,
) -> anyhow::Result<Arc<Service>> {
    let opts = leviathan::service::Options {
        addr_plan: settings.addr_plan,
        keep_changes: args.keep_changes,
        history_every: args.history_every,
        vtep_address: args.vtep_address.map(|a| a.to_string()),
        workloads: leviathan::workload::Workloads { allow_host_netns: args.allow_host_netns },
        ..leviathan::service::Options::new(&args.host_id)
    };
    if args.etcd.is_empty() {
        return Service::open_with(&args.state, opts);
    }
    let cfg = leviathan::store::EtcdConfig {
        prefix: args.etcd_prefix.clone(),
        lease_ttl: args.host_ttl,
        request_timeout: settings.etcd_timeout,
        security: settings.etcd_security.clone(),
        ..leviathan::store::EtcdConfig::new(args.etcd.clone(), &args.host_id)
    };
    match connecting {
        Some(c) => Service::open_etcd_waiting(cfg, opts, c).await,
        None => Service::open_etcd(cfg, opts).await,
    }
}

/// The realizer on its ledger (adopting what it recorded), and the driver
/// that follows the change stream with it.
async fn start_driver(
    args: &ServeArgs,
    service: &Arc<Service>,
    underlay: Option<leviathan::realize::Underlay>,
) -> anyhow::Result<Arc<dyn leviathan::service::Realization>> {
    let cfg = leviathan::realize::Config {
        prefix: args.prefix.clone(),
        fabric: match args.fabric {
            Fabric::Netns => leviathan::realize::FabricMode::Netns,
            Fabric::Host => leviathan::realize::FabricMode::Host,
        },
        underlay,
    };
    let ledger_path = if args.etcd.is_empty() { args.state.clone() } else { args.ledger.clone() };
    let ledger = leviathan::realize::ledger::Ledger::open(&ledger_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.etcd.is_empty() {
        // In the state file: the store checkpoints it.
        ledger.leave_checkpoints_to_the_store().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let realizer = leviathan::realize::Realizer::with_ledger(cfg, ledger)
        .await
        .map_err(|e| anyhow::anyhow!("the realizer cannot start: {e}"))?;
    for f in realizer.foreign() {
        tracing::warn!(object = %f, "not this leviathan's (not in its ledger): left alone");
    }
    let driver = leviathan::driver::Driver::start(Arc::clone(service), realizer);
    if args.reconcile_interval > 0 {
        driver.reconcile_every(std::time::Duration::from_secs(args.reconcile_interval));
    }
    Ok(Arc::new(driver))
}

/// The schema with its limits, the HTTP settings and the router.
fn build_router(
    args: &ServeArgs,
    settings: &Settings,
    service: &Arc<Service>,
    driver: Option<Arc<dyn leviathan::service::Realization>>,
    shutdown: leviathan::http::serve::Shutdown,
) -> anyhow::Result<axum::Router> {
    let limits = leviathan::graphql::Limits {
        max_document_bytes: args.max_document_bytes,
        max_tokens: args.max_tokens,
        max_depth: args.max_depth,
        max_cost: args.max_cost,
        max_aliases: args.max_aliases,
        max_selections: leviathan::graphql::Limits::default().max_selections,
        max_errors: args.max_errors,
        deadline: settings.request_timeout,
        document_cache_bytes: args.document_cache_bytes,
        answer_cache_bytes: args.answer_cache_bytes,
    };
    let schema = leviathan::graphql::schema_with_limits(Arc::clone(service), driver, limits);
    let http = http_config(args, settings);
    let state = AppState {
        service: Arc::clone(service),
        schema,
        token: settings.security.auth.clone(),
        body_limit: args.max_body,
        http: Arc::new(http),
    };
    let ws = leviathan::graphql::ws::WsConfig {
        max_connections: args.ws_max_connections,
        send_timeout: settings.ws_send_timeout,
        max_message_size: args.ws_max_message,
        shutdown,
        ..Default::default()
    };
    Ok(server::router_with(state, ws))
}

/// The HTTP settings of the options.
fn http_config(args: &ServeArgs, settings: &Settings) -> leviathan::http::HttpConfig {
    leviathan::http::HttpConfig {
        max_batch: args.max_batch,
        max_response_bytes: args.max_response_bytes,
        max_get_document: args.max_document_bytes,
        cors_origins: args.cors_origins.clone(),
        allowed_hosts: args.allowed_hosts.clone(),
        loopback: settings.loopback,
        realizing: !args.no_realize,
        intake: leviathan_rest_compat::intake::Intake::new(
            args.max_input_items,
            settings.body_timeout,
            args.max_large_body_bytes,
        ),
    }
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

/// `a.b.c.d/len`.
fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (ip, len) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected a.b.c.d/len, e.g. 10.0.0.0/8"))?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
    let len: u8 =
        len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("{len:?}: a prefix length is 0 to 32"))?;
    Ok((ip, len))
}

/// Whether this process may make network namespaces and links: effective
/// CAP_SYS_ADMIN (21) and CAP_NET_ADMIN (12).
fn can_make_namespaces() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    eff & (1 << 21) != 0 && eff & (1 << 12) != 0
}
