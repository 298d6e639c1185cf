//! Process memory figures for metrics and benchmarks.

/// Peak resident set size of this process in bytes (`VmHWM` of `/proc/self/status`), or
/// `None` where the platform does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

/// Current resident set size in bytes (`VmRSS`).
pub fn current_rss_bytes() -> Option<u64> {
    status_field("VmRSS:")
}

fn status_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resets the peak resident set size to the current one (Linux: writes `5` to
/// `/proc/self/clear_refs`), so a later [`peak_rss_bytes`] measures only what follows.
/// Returns false where the platform does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
