//! The client verbs of `leviathan`: `apply`, `destroy`, `delete`, `get`,
//! `watch`, `export`, and the time travel ones, `diff` and `history` (with
//! `get --at` and `export --at`: reads as of a kept revision). Each is a GraphQL client of a running server (over
//! HTTP, and `graphql-transport-ws` for progress and changes), with no side
//! door into the model or the store. `completions` and `man` (manual.rs)
//! are generated from the command line's own definitions.

mod client;
mod diff;
pub mod file;
mod get;
mod history;
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

/// `diff` and `history` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChangeFormat {
    /// Readable lines (`diff`: the marks of `apply`'s plan; `history`: a
    /// table).
    Text,
    /// A JSON array of the server's entries.
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
        /// As the topology stood right after this revision (one the server
        /// still keeps).
        #[arg(long, value_name = "REV")]
        at: Option<i64>,
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
        /// The topology as it stood right after this revision: `apply
        /// --prune` of the file restores it.
        #[arg(long, value_name = "REV")]
        at: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What changed between two kept revisions, with the marks of
    /// `apply`'s plan.
    Diff {
        /// From this revision.
        from: i64,
        /// To this one (default: the current revision).
        to: Option<i64>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: ChangeFormat,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The kept changes that touched one object, newest first (e.g.
    /// `leviathan history cen cen1`).
    History {
        #[arg(value_enum)]
        kind: history::Kind,
        /// The object's id (a membership's: its CEN's).
        id: String,
        /// The host of a container or a membership (default: the server's).
        #[arg(long)]
        host: Option<String>,
        /// The container of a membership.
        #[arg(long)]
        container: Option<String>,
        /// At most this many changes (the newest).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: ChangeFormat,
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
            Verb::Get { kind, id, output, filters, at, client } => {
                let c = connect(&client)?;
                emit(&get::run(&c, kind, id.as_deref(), &filters, at, output).await?)
            }
            Verb::Watch { since, output, client } => watch::run(&connect(&client)?, since, output).await,
            Verb::Export { output, at, client } => {
                let c = connect(&client)?;
                let cur = match at {
                    Some(rev) => state::Current::fetch_at(&c, rev).await?,
                    None => state::Current::fetch(&c).await?,
                };
                let text = match output {
                    ExportFormat::Yaml => yaml_serde::to_string(&cur.to_file())?,
                    ExportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&cur.to_file())?),
                    ExportFormat::Dot => cur.to_dot(),
                    ExportFormat::Mermaid => cur.to_mermaid(),
                };
                emit(&text)
            }
            Verb::Diff { from, to, output, client } => emit(&diff::run(&connect(&client)?, from, to, output).await?),
            Verb::History { kind, id, host, container, limit, output, client } => {
                let w =
                    history::Wanted { kind, id: &id, host: host.as_deref(), container: container.as_deref(), limit };
                emit(&history::run(&connect(&client)?, &w, output).await?)
            }
        }
    })
}

/// Prints a verb's answer; a reader that went away (`| head`) ends the
/// verb quietly instead of a panic of `print!`.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
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
