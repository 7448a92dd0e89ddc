//! The `leviathan` command line.

mod cli;

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
    Serve(ServeArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Remove everything leviathan made in the kernel under a prefix.
    Cleanup {
        /// The prefix of the instance to clean up.
        #[arg(long, default_value = "lev-")]
        prefix: String,
    },
    #[command(flatten)]
    Client(cli::Verb),
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
    /// State file (SQLite); created if missing.
    #[arg(long, default_value = "./leviathan.db")]
    state: PathBuf,
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
}

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
            eprintln!("leviathan: {e:#}");
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
        Cmd::Serve(args) => tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(args)),
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
    let token = args.token.filter(|t| !t.is_empty());
    if token.is_none() && !args.listen.ip().is_loopback() && !args.insecure_no_auth {
        bail!(
            "refusing to listen on {} without a token: set --token (or LEVIATHAN_TOKEN), or pass --insecure-no-auth",
            args.listen
        );
    }
    let service = Service::open(&args.state, &args.host_id)?;
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
    tokio::spawn(log_changes(service.subscribe()));
    let schema = leviathan::graphql::schema_with(Arc::clone(&service), driver);
    let state =
        AppState { service: Arc::clone(&service), schema, token: token.map(Into::into), body_limit: args.max_body };
    let app = server::with_cors(server::router(state), &args.cors_origins)?;
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, state = %args.state.display(), revision = service.revision(), "leviathan listening");
    println!("listening on {addr}");
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

/// One concise line per committed change at the default level: the
/// mutation and what it touched; for status reports (the end of a make or
/// destroy), each CEN's and CIN's new status.
async fn log_changes(mut rx: tokio::sync::broadcast::Receiver<Arc<leviathan::store::Change>>) {
    use leviathan::model::records::{EntityKey, Record};
    use tokio::sync::broadcast::error::RecvError;
    const SHOWN: usize = 6;
    loop {
        let change = match rx.recv().await {
            Ok(c) => c,
            Err(RecvError::Lagged(n)) => {
                tracing::info!("{n} changes not logged (the log fell behind)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut parts: Vec<String> = change
            .items
            .iter()
            .take(SHOWN)
            .map(|it| {
                let op = match (&it.before, &it.after) {
                    (None, Some(_)) => "+",
                    (Some(_), None) => "-",
                    _ => "~",
                };
                let status = match &it.after {
                    Some(Record::Cen(c)) if change.mutation == "status" => {
                        format!(" {:?}", c.realization.status).to_uppercase()
                    }
                    Some(Record::Cin(c)) if change.mutation == "status" => {
                        format!(" {:?}", c.realization.status).to_uppercase()
                    }
                    _ => String::new(),
                };
                let key = match &it.key {
                    EntityKey::Host(id) => format!("host {id}"),
                    EntityKey::Container(k) => format!("container {k}"),
                    EntityKey::Cen(id) => format!("cen {id}"),
                    EntityKey::Cin(id) => format!("cin {id}"),
                    EntityKey::Cpool(id) => format!("pool {id}"),
                    EntityKey::Member(m) => format!("member {}/{} in {}", m.host, m.container, m.cen),
                };
                format!("{op}{key}{status}")
            })
            .collect();
        if change.items.len() > SHOWN {
            parts.push(format!("and {} more", change.items.len() - SHOWN));
        }
        tracing::info!("rev {} {}: {}", change.revision, change.mutation, parts.join(", "));
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
