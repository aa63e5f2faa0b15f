//! The `acs-stream` command line: parse, load and validate the configuration (exit 64 on a
//! bad one), dispatch to a command.

use std::path::PathBuf;
use std::process::ExitCode;

use acs_stream::commands::check_config;
use acs_stream::commands::demo::{self, DemoOptions};
use acs_stream::commands::generate::{self, GenerateOptions};
use acs_stream::commands::process::{self, ProcessOptions};
use acs_stream::config::Config;
use acs_stream::pipeline::Pipeline;
use acs_stream::synth::SynthOptions;
use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc: the core allocates many small, short-lived strings per record (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// EX_USAGE: the command line or the configuration is wrong.
const EXIT_USAGE: u8 = 64;
/// EX_IOERR: an input could not be read or an output written.
const EXIT_IO: u8 = 74;

#[derive(Parser)]
#[command(name = "acs-stream", version, about = "Stream processor for TAO proctoring ACS log events")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole service against an in-process Kafka cluster with synthetic traffic, and
    /// print what it did. Needs nothing installed.
    Demo {
        /// Number of records to produce and process.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Number of tenants.
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        /// Random seed of the traffic.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Run the service: consume the input topics, process, publish per tenant
    /// (at-least-once). Stops on SIGTERM or SIGINT after draining and committing.
    Run {
        /// Configuration file (TOML), laid over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the core over JSON lines offline: one JSON-lines file per output topic.
    Process {
        /// Input file of JSON lines (each line one record value), or `-` for standard input.
        #[arg(long)]
        input: PathBuf,
        /// Output directory (created when absent): `<topic>.jsonl` per output topic.
        #[arg(long)]
        out: PathBuf,
        /// Configuration file (TOML), laid over the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Topic name recorded as the events' source (default: the input file's name).
        #[arg(long)]
        source_topic: Option<String>,
        /// Processing time, epoch milliseconds (default: now). Fix it for reproducible output.
        #[arg(long)]
        now: Option<i64>,
    },
    /// Write realistic synthetic traffic as JSON lines (every upstream shape, real message
    /// texts, a share of malformed records); deterministic for a seed.
    Generate {
        /// Output file, or `-` for standard output.
        #[arg(long)]
        out: PathBuf,
        /// Number of records.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Number of tenants.
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        /// Sessions open at once.
        #[arg(long, default_value_t = 64)]
        sessions: usize,
        /// Share of malformed records, 0 to 1.
        #[arg(long, default_value_t = 0.01)]
        malformed_ratio: f64,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Incident time of the first record, epoch milliseconds (default: early enough for
        /// the last record to be about now; records are 10 ms apart on average).
        #[arg(long)]
        start: Option<i64>,
    },
    /// Validate a configuration file: a service configuration (as `run` would load it,
    /// ACS_STREAM__* environment overrides and the catalog file it names included), a
    /// reason catalog or a rules file, recognized from its top-level keys. Prints
    /// `FILE: valid <kind>` and exits 0, or prints why (naming the key) and exits 64.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Demo { events, tenants, seed } => demo(DemoOptions { events, tenants, seed }),
        Command::Run { config } => run(config.as_deref()),
        Command::Generate { out, events, tenants, sessions, malformed_ratio, seed, start } => {
            let span_ms = i64::try_from(events.saturating_mul(10)).unwrap_or(i64::MAX).min(86_400_000);
            let start_ms = start.unwrap_or_else(|| now_ms() - span_ms);
            let synth = SynthOptions {
                seed,
                tenants,
                concurrent_sessions: sessions,
                malformed_ratio,
                start_ms,
                ..SynthOptions::default()
            };
            generate(GenerateOptions { out, events, synth })
        }
        Command::CheckConfig { file } => match check_config::check(&file, std::env::vars()) {
            Ok(kind) => {
                println!("{}: valid {kind}", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("acs-stream: {error}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Process { input, out, config, source_topic, now } => {
            let pipeline = match load(config.as_deref()) {
                Ok((_, pipeline)) => pipeline,
                Err(error) => {
                    eprintln!("acs-stream: invalid configuration: {error:#}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let options = ProcessOptions { input, out, source_topic, now_ms: now.unwrap_or_else(now_ms) };
            match process::run(&pipeline, &options) {
                Ok(summary) => {
                    eprint!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("acs-stream: {error}");
                    ExitCode::from(EXIT_IO)
                }
            }
        }
    }
}

fn generate(options: GenerateOptions) -> ExitCode {
    if !(0.0..=1.0).contains(&options.synth.malformed_ratio) {
        eprintln!("acs-stream: --malformed-ratio must be between 0 and 1");
        return ExitCode::from(EXIT_USAGE);
    }
    if options.synth.tenants == 0 || options.synth.concurrent_sessions == 0 {
        eprintln!("acs-stream: --tenants and --sessions must be at least 1");
        return ExitCode::from(EXIT_USAGE);
    }
    match generate::run(&options) {
        Ok(malformed) => {
            eprintln!(
                "acs-stream: wrote {} records ({malformed} malformed) to {}",
                options.events,
                options.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("acs-stream: cannot write {}: {error}", options.out.display());
            ExitCode::from(EXIT_IO)
        }
    }
}

fn demo(options: DemoOptions) -> ExitCode {
    if options.events == 0 || options.tenants == 0 {
        eprintln!("acs-stream: --events and --tenants must be at least 1");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(demo::run(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("acs-stream demo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `run`: the configuration is validated before anything touches the network.
fn run(path: Option<&std::path::Path>) -> ExitCode {
    let (config, pipeline) = match load(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("acs-stream: invalid configuration: {error:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(acs_stream::kafka::runtime::run(&config, &pipeline, shutdown_signal())) {
        Ok(summary) if summary.drained => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("acs-stream: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "Shutting down."),
        () = terminate => tracing::info!(signal = "SIGTERM", "Shutting down."),
    }
}

/// The configuration (defaults, file, environment) and the core built from it.
fn load(config: Option<&std::path::Path>) -> anyhow::Result<(Config, Pipeline)> {
    let config = Config::load(config)?;
    let catalog = config.catalog()?;
    let pipeline = Pipeline::new(&config, catalog).context("building the pipeline")?;
    Ok((config, pipeline))
}

/// Tokio's multi-threaded runtime (the Kafka runtime's shutdown drain needs it).
fn async_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|error| {
        eprintln!("acs-stream: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// Logs go to stderr; level from `RUST_LOG` (default `info`), JSON when `ACS_STREAM_LOG_FORMAT=json`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("ACS_STREAM_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
