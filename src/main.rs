//! Entry point: settings, config, then either `--check`, or run (optionally `--demo`).

use std::process::ExitCode;

use pingora_core::services::background::background_service;

use beat_gateway::admin;
use beat_gateway::edge::auth;
use beat_gateway::live::Source;
use beat_gateway::settings::{Cli, Settings};
use beat_gateway::{config, demo, logging, memory, server};

/// mimalloc instead of glibc's malloc: the per-request path allocates many small, short-lived
/// objects (headers, buffers, tasks), where glibc's malloc showed ~10% of the gateway's CPU
/// under load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let settings = match Settings::resolve(cli.services.clone(), |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    logging::init(settings.log_format);
    if cli.probe {
        return match admin::probe::readyz(
            settings.admin_host,
            settings.admin_port,
            settings.admin_token.as_deref(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("beat-gateway: not ready: {e}");
                ExitCode::from(1)
            }
        };
    }

    // In demo mode without --services, the shipped routes are used as compiled in, so the
    // demo works from any directory.
    let file = settings.services_path.display().to_string();
    let builtin = cli.demo && !settings.services_given;
    let loaded = if builtin {
        config::parse("config/services.json (built in)", config::SHIPPED)
    } else {
        config::load(&settings.services_path)
    };
    let services = match loaded {
        Ok(s) => s,
        Err(e) => return fail(e),
    };

    if let Err(e) = auth::check_settings(&config::with_auth(&services), &settings.jwt_missing) {
        return fail(format!("{file}: {e}"));
    }

    if cli.check {
        println!("{file}: {} routes OK", services.len());
        for line in config::summary(&services) {
            println!("  {line}");
        }
        return ExitCode::SUCCESS;
    }

    let mut settings = settings;
    let mut demo_token = None;
    let services = if cli.demo {
        if cli.pingora.daemon {
            return fail(
                "--demo cannot run as a daemon (-d): its echo services would not survive the fork",
            );
        }
        match demo::start(services) {
            Ok(d) => {
                // The demo's /secure route verifies tokens of the demo's own key.
                settings.jwt = Some(d.jwt);
                settings.jwt_missing.clear();
                demo_token = Some(d.token);
                d.services
            }
            Err(e) => return fail(format!("demo: cannot start the echo services: {e}")),
        }
    } else {
        services
    };

    let config_hash = if builtin {
        config::fingerprint(config::SHIPPED.as_bytes())
    } else {
        std::fs::read(&settings.services_path)
            .map_or_else(|_| "-".into(), |t| config::fingerprint(&t))
    };
    let summary = config::summary(&services);
    let source = if builtin {
        Source::Builtin
    } else {
        Source::File(settings.services_path.clone())
    };
    let server::Built {
        mut server,
        run_args,
    } = match server::build(
        &settings,
        cli.pingora,
        services,
        (source, &config_hash, cli.watch),
    ) {
        Ok(built) => built,
        Err(e) => return fail(e),
    };
    // mimalloc (above) keeps freed pages until asked: give them back after a spike.
    server.add_service(background_service("memory purge", memory::Purge));
    for line in summary {
        log::info!("route {line}");
    }
    log::info!(
        "listening on {}; admin (healthz, readyz, metrics, routes) on {}",
        settings.listen_addr(),
        settings.admin_addr()
    );
    if cli.demo {
        log::info!(
            "demo: try `curl -i http://127.0.0.1:{}/auth/health`",
            settings.port
        );
    }
    if let Some(token) = demo_token {
        log::info!(
            "demo: {} requires a token; this one is valid for a day: {token}",
            demo::SECURE_PREFIX
        );
        log::info!(
            "demo: try `curl -i -H 'Authorization: Bearer {token}' http://127.0.0.1:{}{}/me`",
            settings.port,
            demo::SECURE_PREFIX
        );
    }
    server.run(run_args);
    ExitCode::SUCCESS
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("beat-gateway: {e}");
    ExitCode::from(2)
}
