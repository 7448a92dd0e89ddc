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
    Serve(ServeArgs),
    /// Print the GraphQL schema (SDL).
    Schema,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
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
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = server::DEFAULT_BODY_LIMIT)]
    max_body: usize,
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
        Cmd::Serve(args) => tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(args)),
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
    let schema = leviathan::graphql::schema(Arc::clone(&service));
    let state =
        AppState { service: Arc::clone(&service), schema, token: token.map(Into::into), body_limit: args.max_body };
    let app = server::router(state);
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, state = %args.state.display(), revision = service.revision(), "leviathan listening");
    println!("listening on {addr}");
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
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
