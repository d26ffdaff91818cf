//! The kernel's view of this process's readiness descriptors, read from outside the transport.

use std::os::fd::RawFd;

/// The descriptor number the ticket's environment value gives for `name` (`fd`, `ready` or
/// `notify`).
pub fn ticket_fd(env_value: &str, name: &str) -> RawFd {
    env_value
        .split(',')
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name}= in {env_value:?}"))
        .parse()
        .expect("a descriptor number")
}

/// How many times eventfd `fd` of this process was written since it was last read (each
/// write here adds 1): its `eventfd-count` in `/proc/self/fdinfo`, which the kernel prints in
/// hexadecimal.
pub fn eventfd_count(fd: RawFd) -> u64 {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("readlink");
    assert_eq!(
        link.to_str(),
        Some("anon_inode:[eventfd]"),
        "descriptor {fd}"
    );
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    let count = info
        .lines()
        .find_map(|line| line.strip_prefix("eventfd-count:"))
        .unwrap_or_else(|| panic!("no eventfd-count in {info:?}"));
    u64::from_str_radix(count.trim(), 16).expect("a hex count")
}

/// The eventfds in epoll set `set` of this process (its `tfd:` lines whose descriptor is an
/// eventfd): the members of a readiness set, beside its timer.
pub fn eventfds_in_set(set: RawFd) -> Vec<RawFd> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{set}")).expect("fdinfo");
    info.lines()
        .filter_map(|line| line.strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|link| link.to_str() == Some("anon_inode:[eventfd]"))
        })
        .collect()
}
