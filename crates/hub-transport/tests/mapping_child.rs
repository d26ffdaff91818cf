//! A segment handed to a child process by inheritance: the child grows it and writes in the
//! grown part; the parent sees the bytes after a refresh, at the same address (R8, R14).

mod common;
mod plugin;

use hub_alloc::shared::Shared;
use hub_layout::SegmentBytes;
use hub_transport::mapping::{SegmentFile, SegmentMapping, fd_to_env};
use rustix::io::FdFlags;

const MIB: usize = 1 << 20;
const RESERVATION: usize = 4 * MIB;
const GROWN: usize = 256 * 1024;
const MARK_AT: usize = 200 * 1024;
const PARENT_MARK: u64 = 0x7061_7265_6e74;
const CHILD_MARK: u64 = 0x0063_6869_6c64;

#[test]
fn child_process_grows_and_parent_sees_it() {
    let file = SegmentFile::create_anonymous("hub-test", 4096).expect("memfd");
    let mapping = SegmentMapping::new(file, RESERVATION).expect("map");
    let base = mapping.base();
    Shared::new(&mapping)
        .u64_at(0)
        .expect("inside the file")
        .store(PARENT_MARK, std::sync::atomic::Ordering::Release);

    let inheritable = mapping.file().inheritable_fd().expect("dup");
    let flags = rustix::io::fcntl_getfd(&inheritable).expect("flags");
    assert!(
        !flags.contains(FdFlags::CLOEXEC),
        "the dup must survive exec"
    );
    let own = rustix::io::fcntl_getfd(mapping.file().fd()).expect("flags");
    assert!(
        own.contains(FdFlags::CLOEXEC),
        "the segment's own fd must not leak"
    );

    let fd = fd_to_env(&inheritable);
    let fd = fd.to_str().expect("a number");
    let [reservation, grown, at] = [RESERVATION, GROWN, MARK_AT].map(|n| n.to_string());
    let mark = CHILD_MARK.to_string();
    let output = plugin::test_peer(&["grow-mapping", fd, &reservation, &grown, &at, &mark])
        .output()
        .expect("spawn the test peer");
    drop(inheritable);
    assert!(
        output.status.success(),
        "child failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(
        mapping.len(),
        4096,
        "growth elsewhere is not seen before a refresh"
    );
    assert_eq!(mapping.read_u64(MARK_AT), None);
    assert_eq!(mapping.refresh_len().expect("fstat"), GROWN);
    assert_eq!(mapping.read_u64(MARK_AT), Some(CHILD_MARK));
    assert_eq!(mapping.read_u64(0), Some(PARENT_MARK));
    assert_eq!(mapping.base(), base, "growth never remaps");
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}
