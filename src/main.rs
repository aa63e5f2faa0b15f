//! The `acs-stream` command line: parse, load and validate the configuration (exit 64 on a
//! bad one), dispatch to a command.

use std::path::PathBuf;
use std::process::ExitCode;

use acs_stream::commands::demo::{self, DemoOptions};
use acs_stream::commands::generate::{self, GenerateOptions, ProduceOptions};
use acs_stream::commands::process::{self, ProcessOptions};
use acs_stream::commands::tail::{self, StartAt, TailEnd, TailOptions, ValueFormat};
use acs_stream::commands::{StopRequests, check_config};
use acs_stream::config::Config;
use acs_stream::pipeline::Pipeline;
use acs_stream::synth::{Generator, Profile, SynthOptions};
use anyhow::Context;
use clap::{ArgGroup, Parser, Subcommand, ValueEnum};

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

/// The mix of synthetic sessions (`demo`, `generate`).
#[derive(clap::Args)]
struct TrafficArgs {
    /// `realistic`: sittings of `--sitting-minutes`, 85% clean, 10% minor incidents, 5%
    /// suspicious; `stress`: the flag-heavy mix (37% flags, sessions of seconds).
    #[arg(long, default_value = "realistic")]
    profile: Profile,
    /// Shortest and longest sitting in minutes of event time, `MIN..MAX` (realistic profile).
    #[arg(long, value_name = "MIN..MAX", default_value = "20..120", value_parser = minutes_range)]
    sitting_minutes: (u32, u32),
}

/// `20..120` → (20, 120).
fn minutes_range(text: &str) -> Result<(u32, u32), String> {
    let (low, high) = text.split_once("..").ok_or_else(|| format!("expected MIN..MAX, got `{text}`"))?;
    let parse = |n: &str| n.trim().parse::<u32>().map_err(|error| format!("`{n}`: {error}"));
    let (low, high) = (parse(low)?, parse(high)?);
    if low == 0 || low > high {
        return Err(format!("expected 1 <= MIN <= MAX, got `{text}`"));
    }
    Ok((low, high))
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
        #[command(flatten)]
        traffic: TrafficArgs,
        /// Print the service's log lines (INFO and up; `RUST_LOG` chooses otherwise). Without
        /// it and without `RUST_LOG`, the demo prints only its progress and its summary.
        #[arg(long)]
        verbose: bool,
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
    /// Dead letters back to their source topic (or `--to`) after a fix: each dead letter's
    /// original key and value, with the header `acs.replayed.from` naming it. Refuses
    /// `malformed_json` and `invalid_utf8` unless `--force`; `--dry-run` counts per code.
    Replay {
        /// Kafka bootstrap servers (HOST:PORT[,...]).
        #[arg(long)]
        brokers: String,
        /// The dead-letter topic.
        #[arg(long, default_value = "acs.dlq")]
        topic: String,
        /// Produce here instead of each dead letter's source topic.
        #[arg(long)]
        to: Option<String>,
        /// Only this error code (repeatable), e.g. `unknown_tenant`.
        #[arg(long = "code", value_name = "CODE")]
        codes: Vec<String>,
        /// Only dead letters of this source topic (repeatable).
        #[arg(long = "source-topic", value_name = "TOPIC")]
        source_topics: Vec<String>,
        /// Only dead letters written at or after this time (epoch milliseconds or RFC 3339).
        #[arg(long, value_parser = time_arg)]
        since: Option<i64>,
        /// Only dead letters written before this time (epoch milliseconds or RFC 3339).
        #[arg(long, value_parser = time_arg)]
        until: Option<i64>,
        /// Records per second produced (default: as fast as the cluster takes them).
        #[arg(long)]
        rate: Option<f64>,
        /// Read and count per code what would be replayed; produce nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay `malformed_json` and `invalid_utf8` dead letters too.
        #[arg(long)]
        force: bool,
        /// A librdkafka consumer setting, KEY=VALUE (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        consumer_config: Vec<(String, String)>,
        /// A librdkafka producer setting, KEY=VALUE (repeatable). Idempotence is always on.
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        producer_config: Vec<(String, String)>,
    },
    /// What a new rules file would fire, offline: the core over JSON lines with the rules in
    /// force (the configuration's) and with the new ones; per rule, the alerts each fires,
    /// the sessions (or tenants) whose alerts differ, and a few examples.
    RulesDiff {
        /// Input file of JSON lines (as for `process`), or `-` for standard input.
        #[arg(long)]
        input: PathBuf,
        /// The new rules file.
        #[arg(long)]
        rules: PathBuf,
        /// Configuration file (TOML) naming the rules in force (default: the built-in rules).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Processing time, epoch milliseconds (default: now).
        #[arg(long)]
        now: Option<i64>,
        /// Differing sessions shown as examples.
        #[arg(long, default_value_t = acs_stream::commands::rules_diff::EXAMPLES)]
        examples: usize,
    },
    /// Realistic synthetic traffic (every upstream shape, real message texts, a share of
    /// malformed records), the same for a seed: JSON lines to a file (`--out`), or records
    /// keyed by delivery execution id to a Kafka topic (`--brokers` and `--topic`).
    #[command(group(ArgGroup::new("destination").required(true).args(["out", "brokers"])))]
    Generate {
        /// Output file, or `-` for standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Kafka bootstrap servers (HOST:PORT[,...]): produce to `--topic`.
        #[arg(long, requires = "topic")]
        brokers: Option<String>,
        /// Topic to produce to.
        #[arg(long, requires = "brokers", conflicts_with = "out")]
        topic: Option<String>,
        /// Records per second (default: as fast as the cluster takes them).
        #[arg(long, requires = "brokers", conflicts_with = "out")]
        rate: Option<f64>,
        /// A librdkafka producer setting, KEY=VALUE (repeatable). Idempotence is always on.
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value, requires = "brokers", conflicts_with = "out")]
        producer_config: Vec<(String, String)>,
        /// Number of records; with `--brokers`, 0 produces until SIGINT or SIGTERM.
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
        /// the last record to be about now).
        #[arg(long)]
        start: Option<i64>,
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Print the records of an output topic as JSON lines on stdout: events in the JSON
    /// contract (protobuf or JSON values), dead letters with their error and original
    /// value, each with `_kafka` (where it was read). Follows the topic until SIGINT or
    /// SIGTERM, `--max` or `--exit-at-end`.
    Tail {
        /// Kafka bootstrap servers (HOST:PORT[,...]).
        #[arg(long)]
        brokers: String,
        /// The topic to read (every partition).
        #[arg(long)]
        topic: String,
        /// Where to start (with `--group`: where its committed offsets are missing).
        #[arg(long, value_enum, default_value_t = FromArg::Beginning)]
        from: FromArg,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Stop at the end offsets the partitions had at the start.
        #[arg(long)]
        exit_at_end: bool,
        /// Consumer group: start from its committed offsets and commit what was printed
        /// (without it, nothing is committed).
        #[arg(long)]
        group: Option<String>,
        /// How event and alert values are read: `auto` passes a JSON object through and
        /// decodes anything else as protobuf (`acs.v1.EnrichedEvent`, or `acs.v1.Alert` when
        /// the `acs-schema` header says so).
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// A librdkafka consumer setting, KEY=VALUE (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
        consumer_config: Vec<(String, String)>,
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

/// `tail --from`.
#[derive(Clone, Copy, ValueEnum)]
enum FromArg {
    Beginning,
    End,
}

/// `tail --format`.
#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Auto,
    Protobuf,
    Json,
}

/// `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

/// A time: epoch milliseconds, or RFC 3339 (`2026-03-01T10:00:00Z`).
fn time_arg(text: &str) -> Result<i64, String> {
    text.parse::<i64>().or_else(|_| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|time| time.timestamp_millis())
            .map_err(|error| format!("expected epoch milliseconds or RFC 3339, got `{text}`: {error}"))
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout and succeed; a wrong command line is EX_USAGE.
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    // The demo prints its story, not the service's logs, unless asked.
    let quiet = matches!(cli.command, Command::Demo { verbose: false, .. }) && std::env::var_os("RUST_LOG").is_none();
    init_logging(if quiet { "off" } else { "info" });
    match cli.command {
        Command::Demo { events, tenants, seed, traffic, verbose: _ } => demo(DemoOptions {
            events,
            tenants,
            seed,
            profile: traffic.profile,
            sitting_minutes: traffic.sitting_minutes,
        }),
        Command::Run { config } => run(config.as_deref()),
        Command::Generate {
            out,
            brokers,
            topic,
            rate,
            producer_config,
            events,
            tenants,
            sessions,
            malformed_ratio,
            seed,
            start,
            traffic,
        } => {
            let mut synth = SynthOptions {
                seed,
                tenants,
                concurrent_sessions: sessions,
                malformed_ratio,
                profile: traffic.profile,
                sitting_minutes: traffic.sitting_minutes,
                ..SynthOptions::default()
            };
            if !(0.0..=1.0).contains(&synth.malformed_ratio) {
                eprintln!("acs-stream: --malformed-ratio must be between 0 and 1");
                return ExitCode::from(EXIT_USAGE);
            }
            if synth.tenants == 0 || synth.concurrent_sessions == 0 {
                eprintln!("acs-stream: --tenants and --sessions must be at least 1");
                return ExitCode::from(EXIT_USAGE);
            }
            // The last record about now; the stress profile's span is capped at a day, so
            // that its first records are not older than that.
            synth.start_ms = start.unwrap_or_else(|| {
                let span_ms = Generator::span_ms(&synth, events);
                now_ms() - if synth.profile == Profile::Stress { span_ms.min(86_400_000) } else { span_ms }
            });
            match (out, brokers, topic) {
                (Some(out), _, _) => generate(GenerateOptions { out, events, synth }),
                (None, Some(brokers), Some(topic)) => {
                    let events = (events > 0).then_some(events);
                    produce(ProduceOptions { brokers, topic, events, rate, producer_config, synth })
                }
                // clap's argument group and `requires` leave no other case.
                _ => ExitCode::from(EXIT_USAGE),
            }
        }
        Command::Tail { brokers, topic, from, max, exit_at_end, group, format, consumer_config } => {
            let from = match from {
                FromArg::Beginning => StartAt::Beginning,
                FromArg::End => StartAt::End,
            };
            let format = match format {
                FormatArg::Auto => ValueFormat::Auto,
                FormatArg::Protobuf => ValueFormat::Protobuf,
                FormatArg::Json => ValueFormat::Json,
            };
            tail(TailOptions { brokers, topic, from, max, exit_at_end, group, format, consumer_config })
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
        Command::Replay {
            brokers,
            topic,
            to,
            codes,
            source_topics,
            since,
            until,
            rate,
            dry_run,
            force,
            consumer_config,
            producer_config,
        } => replay(acs_stream::commands::replay::ReplayOptions {
            brokers,
            topic,
            to,
            codes,
            source_topics,
            since,
            until,
            rate,
            dry_run,
            force,
            consumer_config,
            producer_config,
        }),
        Command::RulesDiff { input, rules, config, now, examples } => {
            rules_diff(&input, &rules, config.as_deref(), now, examples)
        }
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

/// `replay`: 0 when everything to replay was acknowledged (or counted, in a dry run), 1 for
/// a failed record, a missing topic or an unreachable cluster, 64 for a wrong setting.
fn replay(options: acs_stream::commands::replay::ReplayOptions) -> ExitCode {
    use acs_stream::commands::replay::{self, Progress, ReplayError};
    if options.rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        eprintln!("acs-stream: --rate must be a positive number of records per second");
        return ExitCode::from(EXIT_USAGE);
    }
    let (_signals, stop) = match stop_on_signals() {
        Ok(listening) => listening,
        Err(code) => return code,
    };
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} dead letters read ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = replay::run(&options, &stop, |progress| match progress {
        Progress::Total(total) => bar.set_length(total),
        Progress::Read => bar.inc(1),
    });
    bar.finish_and_clear();
    match result {
        Ok(summary) => {
            eprint!("{summary}");
            if summary.complete() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(
            error @ (ReplayError::Fixed(_)
            | ReplayError::Produce(_)
            | ReplayError::Read(tail::TailError::Fixed { .. } | tail::TailError::Client(_))),
        ) => {
            eprintln!("acs-stream: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            eprintln!("acs-stream: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `rules-diff`: 64 for a bad configuration or rules file, 74 when the input cannot be read.
fn rules_diff(
    input: &std::path::Path,
    rules: &std::path::Path,
    config: Option<&std::path::Path>,
    now: Option<i64>,
    examples: usize,
) -> ExitCode {
    let pipeline = match load(config) {
        Ok((_, pipeline)) => pipeline,
        Err(error) => {
            eprintln!("acs-stream: invalid configuration: {error:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let new = std::fs::read_to_string(rules).map_err(|error| error.to_string()).and_then(|text| {
        acs_stream::rules::RuleSet::from_toml(&rules.display().to_string(), &text).map_err(|e| e.to_string())
    });
    let new = match new {
        Ok(new) => new,
        Err(error) => {
            eprintln!("acs-stream: {}: {error}", rules.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bytes = if input.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(input)
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("acs-stream: cannot read {}: {error}", input.display());
            return ExitCode::from(EXIT_IO);
        }
    };
    let current = (*pipeline.rules()).clone();
    let diff =
        acs_stream::commands::rules_diff::diff(&pipeline, current, new, &bytes, now.unwrap_or_else(now_ms), examples);
    print!("{diff}");
    ExitCode::SUCCESS
}

fn generate(options: GenerateOptions) -> ExitCode {
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

/// `generate --brokers`: exit 0 when every record sent was acknowledged, 1 otherwise, 64
/// for a wrong rate or producer setting.
fn produce(options: ProduceOptions) -> ExitCode {
    if options.rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        eprintln!("acs-stream: --rate must be a positive number of records per second");
        return ExitCode::from(EXIT_USAGE);
    }
    let (_signals, stop) = match stop_on_signals() {
        Ok(listening) => listening,
        Err(code) => return code,
    };
    match generate::produce(&options, &stop, |progress| eprintln!("acs-stream generate: {progress}")) {
        Ok(summary) => {
            eprint!("{summary}");
            if summary.complete() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(error) => {
            eprintln!("acs-stream: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `tail`: exit 0 at `--max`, `--exit-at-end`, SIGINT/SIGTERM or a closed stdout; 64 for a
/// wrong consumer setting, 74 when stdout cannot be written, 1 otherwise.
fn tail(options: TailOptions) -> ExitCode {
    let (_signals, stop) = match stop_on_signals() {
        Ok(listening) => listening,
        Err(code) => return code,
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match tail::run(&options, &stop, &mut out) {
        Ok(summary) => {
            let end = match summary.end {
                TailEnd::Max => "--max reached",
                TailEnd::EndOffsets => "end offsets reached",
                TailEnd::Stopped => "stopped",
                TailEnd::OutputClosed => "output closed",
            };
            eprintln!("acs-stream tail: {} records ({} undecodable); {end}", summary.printed, summary.undecodable);
            ExitCode::SUCCESS
        }
        Err(error @ (tail::TailError::Fixed { .. } | tail::TailError::Client(_))) => {
            eprintln!("acs-stream: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error @ tail::TailError::Write(_)) => {
            eprintln!("acs-stream: {error}");
            ExitCode::from(EXIT_IO)
        }
        Err(error) => {
            eprintln!("acs-stream: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Counts SIGINT and SIGTERM into the returned [`StopRequests`] instead of dying at the
/// first one, on a one-thread runtime that listens as long as it is kept.
fn stop_on_signals() -> Result<(tokio::runtime::Runtime, StopRequests), ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(|error| {
            eprintln!("acs-stream: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })?;
    // Installed here, before any work starts: a signal is never missed.
    let signals = {
        let _context = runtime.enter();
        signal(SignalKind::interrupt()).and_then(|interrupt| Ok((interrupt, signal(SignalKind::terminate())?)))
    };
    let (mut interrupt, mut terminate) = signals.map_err(|error| {
        eprintln!("acs-stream: cannot listen for signals: {error}");
        ExitCode::FAILURE
    })?;
    let stop = StopRequests::default();
    let requests = stop.clone();
    runtime.spawn(async move {
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            requests.request();
            tracing::info!(signal = name, requests = requests.count(), "Stop requested.");
        }
    });
    Ok((runtime, stop))
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
    match runtime.block_on(serve(&config, &pipeline)) {
        Ok(summary) if summary.drained => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("acs-stream: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The service, with its admin HTTP server when `admin.listen` is set.
async fn serve(
    config: &acs_stream::config::Config,
    pipeline: &acs_stream::pipeline::Pipeline,
) -> anyhow::Result<acs_stream::kafka::runtime::RunSummary> {
    use acs_stream::kafka::runtime::{self, Observers, Readiness};
    use anyhow::Context as _;

    let shutdown = shutdown_signal().context("listening for SIGTERM and SIGINT")?;
    // SIGHUP: the rules and the catalog are read again (validated first; on error the ones in
    // force stay).
    let reloads = {
        let (config, pipeline) = (config.clone(), pipeline.clone());
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("listening for SIGHUP")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                // Reads files: off the async workers.
                let (config, pipeline) = (config.clone(), pipeline.clone());
                let _ =
                    tokio::task::spawn_blocking(move || acs_stream::commands::reload::reload(&config, &pipeline)).await;
            }
        })
    };
    let (readiness, watched) = tokio::sync::watch::channel(Readiness::default());
    let heartbeat = std::sync::Arc::new(acs_stream::kafka::runtime::Heartbeat::new());
    let (queries, asked) = tokio::sync::mpsc::channel(16);
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = match config.admin.address() {
        Some(address) => {
            let address = address.context("admin.listen")?;
            let metrics = acs_stream::telemetry::install_prometheus().context("installing the metrics recorder")?;
            // Drains histogram samples into their buckets between scrapes (bounded memory).
            let upkeep = metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            let liveness = Some((heartbeat.clone(), config.admin.liveness_timeout));
            let admin = acs_stream::admin::Admin { readiness: watched, queries, metrics: Some(metrics), liveness };
            let stopped = async {
                let _ = admin_stopped.await;
            };
            let (bound, serving) = acs_stream::admin::bind(address, admin, stopped)
                .await
                .with_context(|| format!("cannot listen on {address} (admin.listen)"))?;
            tracing::info!(address = %bound, "Admin HTTP server listening.");
            Some(tokio::spawn(serving))
        }
        // No server: the loop sees the query channel closed and stops looking at it.
        None => None,
    };
    acs_stream::telemetry::describe_rules(&pipeline.rules());
    acs_stream::telemetry::config_info(&pipeline.stamp(), pipeline.privacy().key_id());
    let observers = Observers { readiness, queries: Some(asked), heartbeat, ..Observers::default() };
    let summary = runtime::run_with(config, pipeline, shutdown, observers).await;
    reloads.abort();
    let _ = stop_admin.send(());
    if let Some(admin) = admin {
        match admin.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Admin HTTP server failed."),
            Err(error) => tracing::warn!(%error, "Admin HTTP server task failed."),
        }
    }
    Ok(summary?)
}

/// Completes on SIGTERM or SIGINT. The handlers are installed at the call, not at the first
/// poll: a signal that arrives while the service starts is not the default (fatal) one.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "Shutting down."),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "Shutting down."),
        }
    })
}

/// The configuration (defaults, file, environment) and the core built from it.
fn load(config: Option<&std::path::Path>) -> anyhow::Result<(Config, Pipeline)> {
    let config = Config::load(config)?;
    let catalog = config.catalog()?;
    let rules = config.rules()?;
    let pipeline = Pipeline::new(&config, catalog).context("building the pipeline")?.with_rules(rules);
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

/// Logs go to stderr; level from `RUST_LOG` (default `default`: `info`, or `off` for a demo
/// not asked to be verbose), JSON when `ACS_STREAM_LOG_FORMAT=json`.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("ACS_STREAM_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
