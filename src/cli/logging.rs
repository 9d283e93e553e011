//! Logging: tracing to stderr (foreground) or to a 0600 file (daemon). fuser logs through the
//! `log` crate, bridged into tracing. Log lines name ciphertext paths, never plaintext names.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn init_logging(file: Option<&Path>, default_level: &str) -> std::io::Result<()> {
    // fuser's debug and warning lines print request arguments, plaintext file names
    // included: keep it to errors whatever COFFER_LOG asks for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
        .add_directive("fuser=error".parse().map_err(std::io::Error::other)?);
    let _ = tracing_log::LogTracer::init();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(p) => {
            if let Some(dir) = p.parent() {
                use std::os::unix::fs::DirBuilderExt;
                let _ = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir);
            }
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(p)?;
            let _ = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init();
        }
        None => {
            // Colour for a person at a terminal only: a file, a pipe or the journal gets
            // plain text.
            use std::io::IsTerminal;
            let _ = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
    Ok(())
}
