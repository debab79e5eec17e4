//! The library's log: `RBYPASS_LOG=error|warn|info|debug` on stderr.
//!
//! Lines are formatted into a fixed buffer on the stack and written with one
//! write(2): no allocation and no lock, so logging is safe on every path of
//! the library, including inside the app's signal handlers and after fork.
//! The stack and the devices log with `tracing`; [`install_tracing`] routes
//! their events here through the same writer (formatted into the line
//! buffer; nothing allocates per event).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much a line matters; a line is written when its level is at or below
/// the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// 0: not read yet; otherwise the configured level (5 = off, below Error).
static LEVEL: AtomicU8 = AtomicU8::new(0);

fn configured() -> u8 {
    let l = LEVEL.load(Ordering::Relaxed);
    if l != 0 {
        return l;
    }
    // Read once; getenv does not allocate.
    // SAFETY: a NUL-terminated name; the result is only read.
    let v = unsafe { libc::getenv(c"RBYPASS_LOG".as_ptr()) };
    let level = if v.is_null() {
        Level::Warn as u8
    } else {
        // SAFETY: getenv returns a NUL-terminated string.
        match unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() {
            b"off" | b"" => 0xff,
            b"error" => Level::Error as u8,
            b"warn" => Level::Warn as u8,
            b"info" => Level::Info as u8,
            _ => Level::Debug as u8, // debug, trace, or a tracing-style filter
        }
    };
    LEVEL.store(level, Ordering::Relaxed);
    level
}

/// Whether lines of this level are written (to skip formatting when not).
pub fn enabled(level: Level) -> bool {
    let c = configured();
    c != 0xff && level as u8 <= c
}

/// A line buffer that silently truncates.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes one line, `rbypass[pid] LEVEL: message`, if its level is enabled.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    let tag = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
    };
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = write!(line, "rbypass[{pid}] {tag}: ");
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    // SAFETY: writing our own buffer to stderr.
    unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len + 1) };
}

/// `rlog!(Debug, "fd {} handed to the kernel", fd)`.
#[macro_export]
macro_rules! rlog {
    ($level:ident, $($arg:tt)*) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            $crate::log::write($crate::log::Level::$level, format_args!($($arg)*));
        }
    };
}

/// Routes `tracing` events of the stack and device crates to [`write`], so
/// what they say (the XDP mode in use, dropped frames, interface changes)
/// reaches the app's stderr under RBYPASS_LOG like the library's own lines.
pub fn install_tracing() {
    let _ = tracing::subscriber::set_global_default(LineSubscriber);
}

fn level_of(l: &tracing::Level) -> Level {
    match *l {
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

/// A subscriber with no spans: each event is one line.
struct LineSubscriber;

/// Writes an event's message, then its other fields as `name=value`.
struct Fields<'a>(&'a mut Line);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for LineSubscriber {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() != tracing::Level::TRACE && enabled(level_of(meta.level()))
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        use tracing::level_filters::LevelFilter;
        Some(match configured() {
            0xff => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            _ => LevelFilter::DEBUG,
        })
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        let mut line = Line {
            buf: [0; 512],
            len: 0,
        };
        event.record(&mut Fields(&mut line));
        let bytes = &line.buf[..line.len];
        // A truncated line may end inside a character: keep what is whole.
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        };
        write(
            level_of(meta.level()),
            format_args!("{}: {text}", meta.target()),
        );
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
