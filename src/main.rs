//! The `boa-exchange` binary: `serve` runs the daemon; every other subcommand is an admin
//! client of the control socket (see `cli`).

use std::process::ExitCode;

use anyhow::Context;
use boa_exchange::cli::{self, Cli, Command};
use boa_exchange::config::Config;
use boa_exchange::{app, control, logging, shutdown};
use clap::Parser;

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Command::Serve => serve(&args),
        Command::CheckConfig => cli::check_config(args.config.as_deref()),
        Command::Demo { port, once } => boa_exchange::demo::main(port, once),
        Command::Completions { shell } => cli::print_completions(shell),
        Command::Manpage => cli::print_manpage(),
        Command::Restore { ref file, dry_run } => {
            logging::init_client();
            cli::backup::restore(&args, file, dry_run)
        }
        _ => {
            logging::init_client();
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(cli::run_admin(&args)),
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    ExitCode::from(cli::EXIT_FAILED)
                }
            }
        }
    }
}

/// Pins glibc's mmap threshold at its initial 128 KiB (BENCHMARKS.md, issue 15). By default
/// glibc raises the threshold to the size of each mmapped block that is freed; sled's 512 KiB
/// log buffers then come from the heaps of the malloc arenas (up to 8 per core), where freed ones stay
/// resident. Pinned, every block of 128 KiB or more is its own mapping, returned to the kernel
/// when freed: peak RSS of a 100,000-company sync-all fell from 167.5 to 143-150 MiB.
/// Setting the threshold also stops glibc's dynamic trim-threshold adjustment (128 KiB kept).
/// It replaces a `MALLOC_MMAP_THRESHOLD_` given in the environment.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called first in `serve`, before
    // any thread is started, with a valid parameter and value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn serve(args: &Cli) -> ExitCode {
    fix_mmap_threshold();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let log = logging::init_daemon(&config.log_level);
    let result = tokio::runtime::Runtime::new()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(try_serve(config, log)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("boa-exchange: {e:#}");
            ExitCode::from(boa_exchange::ops::error::start_failure_exit_code(&e))
        }
    }
}

async fn try_serve(config: Config, log: logging::LogHandle) -> anyhow::Result<()> {
    let mut signals = shutdown::Signals::new().context("installing signal handlers")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = signals.next().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    boa_exchange::store::prepare_data_dir(&config.storage.data_dir)?;
    let http = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    let control = control::server::bind(&config.control_socket)
        .with_context(|| format!("binding control socket {}", config.control_socket.display()))?;
    let clock = std::sync::Arc::new(boa_exchange::time::clock::SystemClock);
    app::run(
        config,
        app::Listeners { http, control },
        rx,
        Some(log),
        clock,
    )
    .await
}
