use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kv_cli::cli::{Cli, Command};
use kv_cli::run::{Output, RunOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASI_KV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            // One line: the problem and where it is.
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let config = kv_cli::load_config(args.stores.config.as_deref(), &args.stores.stores)?;
            let stores = Arc::new(kv_cli::registry().build(&config).await?);
            let options = RunOptions {
                component: args.component,
                args: args.args,
                envs: args.envs,
                dirs: args.dirs,
            };
            let code = kv_cli::run::run(&options, stores, Output::Inherit).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Conformance(args) => {
            let passed = kv_cli::conformance::conformance(&args).await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
