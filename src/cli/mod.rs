//! The client verbs of `leviathan`: `apply`, `destroy`, `delete`, `get`,
//! `watch`, `export`. Each is a GraphQL client of a running server (over
//! HTTP, and `graphql-transport-ws` for progress and changes), with no side
//! door into the model or the store. `completions` and `man` (manual.rs)
//! are generated from the command line's own definitions.

mod client;
pub mod file;
mod get;
pub mod listen;
pub mod manual;
mod plan;
mod progress;
mod state;
mod tls;
mod watch;

use client::Client;
use std::path::PathBuf;
use std::time::Instant;

/// Where the server is.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The server's URL (without a scheme, http://: `127.0.0.1:8080`,
    /// `localhost:8080`, or a port on 127.0.0.1).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080", env = "LEVIATHAN_SERVER")]
    pub server: String,
    /// Bearer token of the server.
    #[arg(long, global = true, env = "LEVIATHAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With an https:// server: the CA certificate (PEM) that signed its
    /// certificate (the system's roots otherwise).
    #[arg(long, global = true, value_name = "FILE", env = "LEVIATHAN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// `watch` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchFormat {
    /// One readable line per change.
    Text,
    /// One JSON object per line (the `changes` event).
    Json,
}

/// `export` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Yaml,
    Json,
    Dot,
    Mermaid,
}

#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Make the server match a topology file (or a legacy cen/cin/cpool
    /// file): print the plan, apply it, follow makes with progress.
    Apply {
        /// The file (.yaml/.yml, or JSON).
        file: PathBuf,
        /// Also delete what the file does not name.
        #[arg(long)]
        prune: bool,
        /// Print the plan and send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Unmake (destroy) what the file makes; the topology stays defined.
    Destroy {
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete what the file names (destroying what is made first).
    Delete {
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List hosts, containers, CENs, CINs or pools.
    Get {
        #[arg(value_enum)]
        kind: get::Kind,
        /// One object by id.
        id: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        #[command(flatten)]
        filters: get::Filters,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print one line per change as it is committed (resumes after a drop).
    Watch {
        /// Replay the changes after this revision first.
        #[arg(long)]
        since: Option<i64>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: WatchFormat,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the server's topology as a file `apply` accepts, or as a
    /// Graphviz or Mermaid picture.
    Export {
        #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
        output: ExportFormat,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a verb: what it prints goes to stdout, progress and plans to
/// stderr for `get`/`export`-like verbs, to stdout for `apply`.
pub fn run(verb: Verb) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        match verb {
            Verb::Apply { file, prune, dry_run, client } => {
                let loaded = file::load(&file)?;
                let c = connect(&client)?;
                apply(&c, &file, &loaded, prune, dry_run).await
            }
            Verb::Destroy { file, dry_run, client } => {
                let loaded = file::load(&file)?;
                let c = connect(&client)?;
                let cur = state::Current::fetch(&c).await?;
                let p = plan::plan_destroy(&loaded, &cur);
                send(&c, &file, &cur, &p, dry_run, "destroy").await
            }
            Verb::Delete { file, dry_run, client } => {
                let loaded = file::load(&file)?;
                let c = connect(&client)?;
                let cur = state::Current::fetch(&c).await?;
                let p = plan::plan_delete(&loaded, &cur);
                send(&c, &file, &cur, &p, dry_run, "delete").await
            }
            Verb::Get { kind, id, output, filters, client } => {
                let c = connect(&client)?;
                print!("{}", get::run(&c, kind, id.as_deref(), &filters, output).await?);
                Ok(())
            }
            Verb::Watch { since, output, client } => watch::run(&connect(&client)?, since, output).await,
            Verb::Export { output, client } => {
                let c = connect(&client)?;
                let cur = state::Current::fetch(&c).await?;
                let text = match output {
                    ExportFormat::Yaml => yaml_serde::to_string(&cur.to_file())?,
                    ExportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&cur.to_file())?),
                    ExportFormat::Dot => cur.to_dot(),
                    ExportFormat::Mermaid => cur.to_mermaid(),
                };
                print!("{text}");
                Ok(())
            }
        }
    })
}

fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Client::with_ca(&args.server, args.token.clone(), args.ca_cert.as_deref())
}

async fn apply(
    c: &Client,
    path: &std::path::Path,
    loaded: &file::Loaded,
    prune: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let cur = state::Current::fetch(c).await?;
    let p = plan::plan_apply(loaded, &cur, prune)?;
    send(c, path, &cur, &p, dry_run, "apply").await
}

async fn send(
    c: &Client,
    path: &std::path::Path,
    cur: &state::Current,
    p: &plan::Plan,
    dry_run: bool,
    verb: &str,
) -> anyhow::Result<()> {
    let shown = path.display();
    if p.is_empty() {
        println!("No changes: {} at revision {} already matches {shown}.", c.server(), cur.revision);
        return Ok(());
    }
    println!("Plan ({verb} {shown} on {} at revision {}):", c.server(), cur.revision);
    print!("{}", p.render(&cur.host_id));
    let counts = p.counts();
    println!("{counts}.");
    if dry_run {
        println!("Dry run: nothing was sent.");
        return Ok(());
    }
    let started = Instant::now();
    match plan::execute(c, p).await {
        Ok(revision) => {
            println!("Done in {:.1} s: {counts} (revision {revision}).", started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) => Err(e.context(format!("{verb} {shown} did not finish"))),
    }
}
