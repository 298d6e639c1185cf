//! Progress lines on standard output that a closed pipe (`auglocal train | head -1`) ends
//! quietly: the output stops, the command goes on.

use std::io::Write;

/// Writes one line to standard output, dropping it if nobody reads any more.
pub fn line(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout().lock(), "{args}");
}

/// `println!` that never panics on a closed standard output.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Whether `error` is a write to a reader that went away: the end of the output, not a
/// failure.
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
