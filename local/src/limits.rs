//! The process's open-file limit.
//!
//! Every connection is a file descriptor. Linux logins start with a soft limit of 1,024 and
//! macOS shells with 256, far below what a server with many idle keep-alive clients needs, while
//! the hard limit is usually much higher; like Go's runtime, the server lifts the soft limit to
//! the hard one at start.

/// The soft limit on open files, if it can be read.
#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is not u64 on every platform"
)]
pub fn open_files() -> Option<u64> {
    read().map(|limit| limit.rlim_cur as u64)
}

/// Raises the soft limit to the hard one (to `OPEN_MAX` on macOS, which refuses more);
/// returns the limit now in force.
pub fn raise_open_files() -> Option<u64> {
    let mut limit = read()?;
    let target = if cfg!(target_os = "macos") {
        limit.rlim_max.min(10_240)
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < target {
        let previous = limit.rlim_cur;
        limit.rlim_cur = target;
        // SAFETY: `limit` is a valid, initialised rlimit that setrlimit only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft = previous,
                "could not raise the open-file limit"
            );
        }
    }
    open_files()
}

fn read() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `limit`.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}
