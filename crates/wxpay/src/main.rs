//! `wxpay`: the self-hosted WeChat Pay backend and its sandbox.

mod soak;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wxpay",
    version,
    about = "Self-hosted WeChat Pay backend for mobile apps (legacy 2014 protocol and APIv3), with a built-in WeChat Pay sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the payment server. With no merchant configured it starts the sandbox in-process.
    Serve {
        /// wxpay.toml; every key can also come from WXPAY_… environment variables.
        #[arg(long, env = "WXPAY_CONFIG")]
        config: Option<PathBuf>,
        /// Refuse sandbox gateways and non-HTTPS public URLs.
        #[arg(long)]
        production: bool,
    },
    /// Run the WeChat Pay sandbox (legacy 2014 API and APIv3) as a standalone server.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// sandbox.toml with [[legacy_merchant]] and [[v3_merchant]]; demo merchants without it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Multiplies WeChat's notification retry delays (0.001 turns 15 s into 15 ms).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Seed for the fault switches' random draws.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Walk through the whole flow (legacy and APIv3 merchants) against the in-process sandbox,
    /// printing each step; exits non-zero if any step's expectation fails.
    Demo {
        /// Leave the server and the sandbox running afterwards and print their URLs.
        #[arg(long)]
        keep_running: bool,
    },
    /// Fault-injection soak: several `wxpay serve` processes on PostgreSQL + Redis against a
    /// faulty sandbox, with SIGKILLs and a Redis restart; prints the figures, exits 1 on a loss.
    Soak(soak::SoakArgs),
    /// Benchmark on this machine (loopback only, bounded): notification ingestion beside pgbench,
    /// order + prepay beside the RSA signing rate, growth to millions of orders, memory.
    Bench(wxpay_bench::BenchArgs),
    /// Reconcile an APIv3 merchant's Beijing day against WeChat Pay's trade bill: repair what a
    /// verified query proves we missed, store and print the report. Exit 0: nothing unresolved;
    /// 1: unresolved differences (or the run failed); 2: not possible (2014-protocol merchant,
    /// unknown merchant, bad date, configuration).
    Reconcile {
        #[arg(long)]
        merchant: String,
        /// YYYY-MM-DD, a Beijing calendar day that is over.
        #[arg(long)]
        date: String,
        #[arg(long, env = "WXPAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[arg(long, env = "WXPAY_DATABASE_URL", default_value = "sqlite://wxpay.db")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Demo { .. }) {
        wxpay_server::telemetry::init_with_default("warn");
    } else {
        wxpay_server::telemetry::init();
    }
    let result: Result<(), String> = match cli.command {
        Command::Serve { config, production } => {
            match wxpay_server::configuration::Settings::load(config.as_deref()) {
                Err(e) => Err(e.to_string()),
                Ok(mut settings) => {
                    settings.production |= production;
                    match settings.check() {
                        Err(e) => Err(e.to_string()),
                        Ok(()) => wxpay_server::startup::run(settings)
                            .await
                            .map_err(|e| e.to_string()),
                    }
                }
            }
        }
        Command::Sandbox {
            listen,
            config,
            time_scale,
            seed,
        } => wxpay_sandbox::run(listen, config, time_scale, seed)
            .await
            .map_err(|e| e.to_string()),
        Command::Demo { keep_running } => wxpay_server::demo::run(
            wxpay_server::demo::DemoOptions {
                keep_running,
                ..Default::default()
            },
            &mut std::io::stdout(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string()),
        Command::Soak(args) => match soak::run(args).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the soak found differences (see the table)".to_string()),
            Err(e) => Err(format!("{e:#}")),
        },
        Command::Bench(args) => wxpay_bench::main(args).await,
        Command::Reconcile {
            merchant,
            date,
            config,
        } => {
            return ExitCode::from(
                wxpay_server::reconcile::run_cli(config.as_deref(), &merchant, &date).await,
            );
        }
        Command::Migrate { database_url } => match wxpay_store::Store::connect(&database_url).await
        {
            Ok(_) => {
                println!("schema is up to date");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxpay: {e}");
            ExitCode::FAILURE
        }
    }
}
