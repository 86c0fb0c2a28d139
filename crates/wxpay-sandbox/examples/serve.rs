//! Run the sandbox standalone without the `wxpay` binary:
//!
//! ```text
//! cargo run -p wxpay-sandbox --example serve -- [LISTEN] [CONFIG.toml] [TIME_SCALE] [SEED]
//! cargo run -p wxpay-sandbox --example serve -- 127.0.0.1:8090
//! ```

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8090".into())
        .parse()
        .expect("LISTEN must be host:port");
    let config = args
        .next()
        .filter(|s| !s.is_empty() && s != "-")
        .map(std::path::PathBuf::from);
    let time_scale = args
        .next()
        .map(|s| s.parse().expect("TIME_SCALE"))
        .unwrap_or(1.0);
    let seed = args.next().map(|s| s.parse().expect("SEED"));
    if let Err(e) = wxpay_sandbox::run(listen, config, time_scale, seed).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
