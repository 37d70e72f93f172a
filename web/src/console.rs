//! A `log` backend and a panic hook that write to the browser console.
//!
//! The library only uses the `log` facade; in the browser something has to
//! print it, and a Rust panic would otherwise surface as an opaque
//! "unreachable executed" trap.

use std::sync::Once;

struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = wasm_bindgen::JsValue::from(format!("{}", record.args()));
        match record.level() {
            log::Level::Error => web_sys::console::error_1(&text),
            log::Level::Warn => web_sys::console::warn_1(&text),
            log::Level::Info => web_sys::console::info_1(&text),
            log::Level::Debug | log::Level::Trace => web_sys::console::debug_1(&text),
        }
    }

    fn flush(&self) {}
}

static LOGGER: ConsoleLogger = ConsoleLogger;
static INIT: Once = Once::new();

/// Installs the console logger at `level` and the panic hook. Later calls
/// only change the level.
pub fn init(level: log::LevelFilter) {
    INIT.call_once(|| {
        // Another logger may already be installed (a host page, a test
        // harness); then that one keeps printing.
        let _ = log::set_logger(&LOGGER);
        std::panic::set_hook(Box::new(|info| {
            web_sys::console::error_1(&format!("panic: {info}").into());
        }));
    });
    log::set_max_level(level);
}
