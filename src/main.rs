//! `ferry`: runs change-data-capture pipelines defined in config files.
//!
//! A thin edge: parse the command line, set up logging, hand over to [`commands`].

mod commands;
mod dead_letters;
mod http;
mod runtime;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc: rows are allocated by the source task and freed by the sink tasks, on other threads, where glibc's
/// allocator spent about a fifth of decode CPU (profile in the issue 15 notes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Change-data-capture replication, exactly once.
#[derive(Parser)]
#[command(name = "ferry", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every pipeline in the given files until SIGTERM or SIGINT.
    Run {
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
        /// Address of the HTTP endpoints (/healthz, /readyz, /metrics, /status), or "off".
        #[arg(long, env = "FERRY_HTTP", default_value = DEFAULT_HTTP, value_parser = parse_http)]
        http: HttpAddr,
    },
    /// Parse the config, connect, and check every source prerequisite; exit 1 if any fails.
    Check {
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
    },
    /// Show the slot, each sink's checkpoint and the lag.
    Status {
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Where the running `ferry run` serves /status (for snapshot progress and live lag), or "off".
        #[arg(long, env = "FERRY_HTTP", default_value = DEFAULT_HTTP, value_parser = parse_http)]
        http: HttpAddr,
    },
    /// Copy tables anew while the pipeline streams on (PostgreSQL sources): asks the running pipeline, through the
    /// source's WAL, to re-copy each table in key-ordered chunks; follow it with `ferry status`.
    Snapshot {
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
        /// A table to copy anew (`schema.table`; a bare name is in `public`); repeat for several.
        #[arg(long = "table", short, required = true, num_args = 1..)]
        tables: Vec<String>,
    },
    /// List the conflicts the sinks detected and resolved (their targets' `ferry_conflicts`), oldest first.
    Conflicts {
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
        /// Only this table's (`schema.table`; a bare name is in `public`).
        #[arg(long)]
        table: Option<String>,
        /// Print JSON (one array of conflicts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Row changes the targets refused (`on_error = "dead_letter"`): list them, replay them once the cause is
    /// fixed, or discard them. Replay and discard need the pipeline stopped; list does not.
    DeadLetters {
        #[arg(value_enum)]
        action: dead_letters::Action,
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
        /// Only this table's (`schema.table`; a bare name is in `public`).
        #[arg(long)]
        table: Option<String>,
        /// Only the letter with this number (`#N` in the list).
        #[arg(long)]
        id: Option<i64>,
        /// Print JSON (one array of letters) instead of text (list).
        #[arg(long)]
        json: bool,
    },
    /// Drop the replication slot, the publication and the stored checkpoints, so the next run starts with a
    /// new snapshot.
    Reset {
        #[arg(long = "config", short, required = true, num_args = 1..)]
        configs: Vec<PathBuf>,
        /// Confirm: this discards the replication position.
        #[arg(long)]
        yes: bool,
    },
}

const DEFAULT_HTTP: &str = "127.0.0.1:9187";

/// An HTTP address, or `None` for "off".
type HttpAddr = Option<SocketAddr>;

fn parse_http(value: &str) -> Result<HttpAddr, String> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("expected an address such as {DEFAULT_HTTP}, or \"off\""))
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { configs, http } => commands::run(&configs, http).await,
            Command::Check { configs } => commands::check(&configs).await,
            Command::Status {
                configs,
                json,
                http,
            } => commands::status(&configs, json, http).await,
            Command::Reset { configs, yes } => commands::reset(&configs, yes).await,
            Command::Conflicts {
                configs,
                table,
                json,
            } => commands::conflicts(&configs, table.as_deref(), json).await,
            Command::Snapshot { configs, tables } => commands::snapshot(&configs, &tables).await,
            Command::DeadLetters {
                action,
                configs,
                table,
                id,
                json,
            } => match table.as_deref().map(|t| (t, commands::table_arg(t))) {
                Some((t, None)) => Err(anyhow::anyhow!(
                    "--table {t:?}: expected schema.table or table (parts may be double-quoted)"
                )),
                parsed => {
                    let selection = dead_letters::Selection {
                        table: parsed.and_then(|(_, id)| id),
                        id,
                    };
                    dead_letters::run(action, &configs, selection, json).await
                }
            },
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Exit without dropping the runtime: a sink task still inside `block_in_place` (SQLite) or a back-off when
    // another pipeline failed would otherwise be polled during the runtime's shutdown and panic on its timer.
    // Everything durable is already committed; stdout is flushed first.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}
