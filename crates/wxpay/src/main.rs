//! `wxpay`: the self-hosted WeChat Pay backend and its sandbox.

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
    /// Create or upgrade the database schema, then exit.
    Migrate {
        #[arg(long, env = "WXPAY_DATABASE_URL", default_value = "sqlite://wxpay.db")]
        database_url: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    wxpay_server::telemetry::init();
    let cli = Cli::parse();
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
