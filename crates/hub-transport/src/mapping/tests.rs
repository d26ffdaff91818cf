//! Tests of the segment file and its mappings. They live inside the module so that the little
//! `unsafe` they need (writing through the mapping as the allocator would) stays in it.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hub_alloc::{GrowError, Region};
use hub_layout::{HubLayoutError, SegmentBytes, validate_segment};
use rustix::fs::{Mode, OFlags, SealFlags};
use rustix::io::Errno;

use super::*;

const MIB: usize = 1 << 20;

/// Store `value` at `offset` of `mapping` the way protocol code does: an atomic store.
fn store_u64(mapping: &SegmentMapping, offset: usize, value: u64) {
    assert!(
        offset.is_multiple_of(8) && offset + 8 <= mapping.len(),
        "bad test store at {offset}"
    );
    // SAFETY: the 8 bytes are inside `len()` (backed by the file), 8-aligned (the base is page
    // aligned and `offset` a multiple of 8), and only ever accessed atomically.
    let atomic = unsafe { AtomicU64::from_ptr(mapping.base().as_ptr().add(offset).cast()) };
    atomic.store(value, Ordering::Release);
}

/// Store bytes one by one (any alignment).
fn store_bytes(mapping: &SegmentMapping, offset: usize, bytes: &[u8]) {
    assert!(
        offset + bytes.len() <= mapping.len(),
        "bad test store at {offset}"
    );
    for (i, byte) in bytes.iter().enumerate() {
        // SAFETY: inside `len()`, and an AtomicU8 needs no alignment.
        let atomic = unsafe { AtomicU8::from_ptr(mapping.base().as_ptr().add(offset + i)) };
        atomic.store(*byte, Ordering::Release);
    }
}

/// A path in the temporary directory that no other test (or run) uses.
fn unique_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "hub-mapping-{tag}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

fn anonymous(len: u64, reservation: usize) -> SegmentMapping {
    let file = SegmentFile::create_anonymous("hub-test", len).expect("memfd");
    SegmentMapping::new(file, reservation).expect("map")
}

#[test]
fn create_map_write_and_read_back() {
    let mapping = anonymous(8192, MIB);
    assert_eq!(mapping.len(), 8192);
    assert_eq!(mapping.reservation(), MIB);
    assert_eq!(
        mapping.base().as_ptr() as usize % 4096,
        0,
        "page aligned base"
    );
    // A fresh file reads as zeros.
    assert_eq!(mapping.read_u64(0), Some(0));
    assert_eq!(mapping.read_bytes::<16>(8176), Some([0; 16]));

    store_u64(&mapping, 64, 0x0123_4567_89ab_cdef);
    assert_eq!(mapping.read_u64(64), Some(0x0123_4567_89ab_cdef));
    assert_eq!(mapping.read_u32(64), Some(0x89ab_cdef));
    assert_eq!(mapping.read_u16(70), Some(0x0123));

    // Unaligned reads go byte by byte and still see the right bytes.
    store_bytes(&mapping, 101, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        mapping.read_u64(101),
        Some(u64::from_ne_bytes([1, 2, 3, 4, 5, 6, 7, 8]))
    );
    assert_eq!(
        mapping.read_u32(103),
        Some(u32::from_ne_bytes([3, 4, 5, 6]))
    );
    assert_eq!(mapping.read_u16(105), Some(u16::from_ne_bytes([5, 6])));
    assert_eq!(mapping.read_bytes::<3>(102), Some([2, 3, 4]));
    assert_eq!(mapping.read_bytes::<1>(108), Some([8]));

    // The same bytes through a second, independent mapping of the same file.
    let other = SegmentMapping::new(mapping.file().try_clone().unwrap(), MIB).unwrap();
    assert_ne!(other.base(), mapping.base());
    assert_eq!(other.read_u64(64), Some(0x0123_4567_89ab_cdef));
    store_u64(&other, 128, 42);
    assert_eq!(mapping.read_u64(128), Some(42));
}

#[test]
fn reads_past_len_return_none() {
    let mapping = anonymous(4096, MIB);
    assert_eq!(mapping.read_u64(4088), Some(0));
    assert_eq!(mapping.read_u64(4089), None, "straddles the end");
    assert_eq!(mapping.read_u64(4096), None);
    assert_eq!(mapping.read_bytes::<1>(4095), Some([0]));
    assert_eq!(mapping.read_bytes::<1>(4096), None);
    assert_eq!(
        mapping.read_u32(MIB),
        None,
        "inside the reservation, past the file"
    );
    assert_eq!(mapping.read_u32(2 * MIB), None, "past the reservation");
    assert_eq!(mapping.read_u64(usize::MAX), None, "offset + N overflows");
    assert_eq!(mapping.read_u16(usize::MAX - 1), None);
    assert_eq!(mapping.read_bytes::<0>(4096), Some([]));
    assert_eq!(mapping.read_bytes::<0>(4097), None);
}

#[test]
fn length_is_capped_at_the_reservation() {
    let file = SegmentFile::create_anonymous("hub-test", 64 * 1024).unwrap();
    let mapping = SegmentMapping::new(file, 8192).unwrap();
    assert_eq!(mapping.len(), 8192);
    assert_eq!(mapping.read_u64(8184), Some(0));
    assert_eq!(
        mapping.read_u64(8192),
        None,
        "the file goes on, the mapping does not"
    );
    assert_eq!(mapping.refresh_len().unwrap(), 8192);
    assert_eq!(mapping.grow_to(8192).unwrap(), 8192);
    assert!(matches!(
        mapping.grow_to(8193),
        Err(MappingError::BeyondReservation {
            requested: 8193,
            reservation: 8192
        })
    ));
}

#[test]
fn second_mapping_sees_growth_without_remapping() {
    let a = anonymous(4096, 4 * MIB);
    let b = SegmentMapping::new(a.file().try_clone().unwrap(), 4 * MIB).unwrap();
    let base_a = a.base();
    let base_b = b.base();

    // B grows the file (as another process would) and writes into the new part.
    assert_eq!(b.grow_to(256 * 1024).unwrap(), 256 * 1024);
    store_u64(&b, 200 * 1024, 0xfeed_f00d);

    // A's length lags until it refreshes: reads past it are refused, not faulted.
    assert_eq!(a.len(), 4096);
    assert_eq!(a.read_u64(200 * 1024), None);
    assert_eq!(a.refresh_len().unwrap(), 256 * 1024);
    assert_eq!(a.read_u64(200 * 1024), Some(0xfeed_f00d));

    // A writes in the grown part; B sees it. Neither mapping moved.
    store_u64(&a, 255 * 1024, 7);
    assert_eq!(b.read_u64(255 * 1024), Some(7));
    assert_eq!(a.base(), base_a);
    assert_eq!(b.base(), base_b);

    // grow_to of a length another process already reached refreshes instead of growing.
    assert_eq!(b.grow_to(MIB).unwrap(), MIB);
    assert_eq!(a.grow_to(512 * 1024).unwrap(), MIB);
    assert_eq!(a.file().len().unwrap(), MIB as u64);
}

#[test]
fn sealed_memfd_cannot_shrink() {
    let file = SegmentFile::create_anonymous("hub-test", 64 * 1024).unwrap();
    assert!(file.is_shrink_sealed().unwrap());
    let seals = rustix::fs::fcntl_get_seals(file.fd()).unwrap();
    assert!(
        seals.contains(SealFlags::SHRINK | SealFlags::SEAL),
        "{seals:?}"
    );

    let std_file = std::fs::File::from(rustix::io::dup(file.fd()).unwrap());
    let err = std_file.set_len(4096).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(rustix::fs::ftruncate(file.fd(), 0), Err(Errno::PERM));
    assert_eq!(file.len().unwrap(), 64 * 1024);

    // Growing is still allowed, and nobody can add F_SEAL_GROW to stop it.
    std_file.set_len(128 * 1024).unwrap();
    assert_eq!(
        rustix::fs::fcntl_add_seals(file.fd(), SealFlags::GROW),
        Err(Errno::PERM)
    );
    assert_eq!(file.grow_to(256 * 1024).unwrap(), 256 * 1024);
    // Asking for less never shrinks.
    assert_eq!(file.grow_to(4096).unwrap(), 256 * 1024);
}

/// Threads grow one file through their own descriptors and mappings to different sizes at the
/// same moment; the file ends at the largest, and every grower sees at least its own request.
fn concurrent_growth_ends_at_max(make: impl Fn() -> SegmentFile) {
    const THREADS: usize = 8;
    for round in 0..20 {
        let file = make();
        let mappings: Vec<SegmentMapping> = (0..THREADS)
            .map(|_| SegmentMapping::new(file.try_clone().unwrap(), 64 * MIB).unwrap())
            .collect();
        let barrier = Barrier::new(THREADS);
        // Sizes in an order that changes with the round, so the largest is not always last.
        let sizes: Vec<usize> = (0..THREADS)
            .map(|i| ((i * 5 + round) % THREADS + 1) * 4 * MIB + 4096 * i)
            .collect();
        let max = *sizes.iter().max().unwrap();
        std::thread::scope(|scope| {
            for (mapping, &size) in mappings.iter().zip(&sizes) {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let len = mapping.grow_to(size).unwrap();
                    assert!(len >= size, "grew to {len}, asked {size}");
                    // Write at the very end of what this thread asked for: must not fault.
                    store_u64(mapping, size - 8, size as u64);
                });
            }
        });
        assert_eq!(file.len().unwrap(), max as u64, "round {round}");
        for (mapping, &size) in mappings.iter().zip(&sizes) {
            assert_eq!(mapping.refresh_len().unwrap(), max);
            assert_eq!(mapping.read_u64(size - 8), Some(size as u64));
        }
    }
}

#[test]
fn concurrent_growth_of_a_memfd_ends_at_the_max() {
    concurrent_growth_ends_at_max(|| SegmentFile::create_anonymous("hub-test", 4096).unwrap());
}

#[test]
fn concurrent_growth_of_a_named_file_ends_at_the_max() {
    // A named file has no seal: only fallocate's grow-only semantics protect it here.
    concurrent_growth_ends_at_max(|| {
        let path = unique_path("race");
        let file = SegmentFile::create_named(&path, 4096).unwrap();
        // Keep the descriptor, drop the name right away (the test only needs the inode).
        rustix::fs::unlink(&path).unwrap();
        file
    });
}

#[test]
fn growth_keeps_a_memfd_sparse() {
    let file = SegmentFile::create_anonymous("hub-test", 4096).unwrap();
    let mapping = SegmentMapping::new(file, 128 * MIB).unwrap();
    assert_eq!(mapping.grow_to(100 * MIB).unwrap(), 100 * MIB);
    let info = mapping.file().info().unwrap();
    assert_eq!(info.len, 100 * MIB as u64);
    assert!(
        info.allocated < MIB as u64,
        "{} bytes allocated for a 100 MB file",
        info.allocated
    );
    // Touching a few pages allocates about those pages, not the file.
    for page in 0..4 {
        store_u64(&mapping, page * 10 * MIB, 1);
    }
    let touched = mapping.file().info().unwrap().allocated;
    assert!(
        touched >= info.allocated && touched < MIB as u64,
        "{touched}"
    );
}

#[test]
fn growth_keeps_a_named_file_sparse() {
    let path = unique_path("sparse");
    let file = SegmentFile::create_named(&path, 4096).unwrap();
    assert_eq!(file.grow_to(100 * MIB as u64).unwrap(), 100 * MIB as u64);
    let info = file.info().unwrap();
    assert!(
        info.allocated < MIB as u64,
        "{} bytes allocated for a 100 MB file",
        info.allocated
    );
}

#[test]
fn memfd_mode_is_0600() {
    let file = SegmentFile::create_anonymous("hub-test", 4096).unwrap();
    assert_eq!(file.info().unwrap().mode, 0o600);
    assert!(file.path().is_none());
}

#[test]
fn named_file_mode_0600_exclusive_and_removed_on_drop() {
    let path = unique_path("named");
    let owner = SegmentFile::create_named(&path, 8192).unwrap();
    assert_eq!(owner.info().unwrap().mode, 0o600);
    assert_eq!(owner.path(), Some(path.as_path()));
    assert!(
        !owner.is_shrink_sealed().unwrap(),
        "regular files cannot be sealed"
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 8192);

    // O_EXCL: a second creator is refused.
    match SegmentFile::create_named(&path, 8192) {
        Err(MappingError::CreateFailed { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::AlreadyExists);
        }
        other => panic!("expected CreateFailed, got {other:?}"),
    }
    assert!(
        path.exists(),
        "a failed create must not remove the owner's file"
    );

    // Attach by path and through a clone; neither removes the file when dropped.
    let attached = SegmentFile::open_path(&path, Access::ReadWrite).unwrap();
    let peer = SegmentMapping::new(attached, MIB).unwrap();
    assert_eq!(peer.len(), 8192);
    drop(peer);
    drop(owner.try_clone().unwrap());
    assert!(path.exists());

    // The owner's mapping holds the owner; dropping it removes the name.
    let mapping = SegmentMapping::new(owner, MIB).unwrap();
    drop(mapping);
    assert!(!path.exists());
}

#[test]
fn owner_does_not_unlink_a_replacement() {
    let path = unique_path("replaced");
    let owner = SegmentFile::create_named(&path, 4096).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    drop(owner);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn create_named_in_a_missing_directory_fails() {
    let path = unique_path("missing-dir").join("segment");
    match SegmentFile::create_named(&path, 4096) {
        Err(MappingError::CreateFailed { source, .. }) => {
            assert_eq!(source.kind(), ErrorKind::NotFound);
        }
        other => panic!("expected CreateFailed, got {other:?}"),
    }
    assert!(matches!(
        SegmentFile::open_path(&path, Access::ReadOnly),
        Err(MappingError::OpenFailed { .. })
    ));
}

#[test]
fn bad_memfd_name_is_an_error_not_a_panic() {
    assert!(matches!(
        SegmentFile::create_anonymous("nul\0inside", 4096),
        Err(MappingError::CreateFailed { .. })
    ));
    assert!(matches!(
        SegmentFile::create_anonymous(&"x".repeat(300), 4096),
        Err(MappingError::CreateFailed { .. })
    ));
}

#[test]
fn descriptors_that_are_not_segments_are_refused() {
    // SAFETY: a negative number is refused before anything is done with it.
    let negative = unsafe { SegmentFile::from_raw_inherited(-1) };
    assert!(matches!(negative, Err(MappingError::BadFd { fd: -1, .. })));

    // A number far above any descriptor table: certainly not open.
    // SAFETY: nothing in this process can own descriptor i32::MAX (it exceeds every limit).
    let result = unsafe { SegmentFile::from_raw_inherited(RawFd::MAX) };
    match result {
        Err(MappingError::BadFd { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(Errno::BADF.raw_os_error()));
        }
        other => panic!("expected BadFd, got {other:?}"),
    }

    let dir = rustix::fs::open(".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    match SegmentFile::from_fd(dir) {
        Err(MappingError::NotAFile { file_type }) => assert_eq!(file_type, "Directory"),
        other => panic!("expected NotAFile, got {other:?}"),
    }
    let (reader, _writer) = rustix::pipe::pipe().unwrap();
    assert!(matches!(
        SegmentFile::from_fd(reader),
        Err(MappingError::NotAFile { .. })
    ));
}

#[test]
fn from_fd_takes_a_received_descriptor() {
    let file = SegmentFile::create_anonymous("hub-test", 4096).unwrap();
    let received = SegmentFile::from_fd(rustix::io::dup(file.fd()).unwrap()).unwrap();
    assert!(received.is_writable());
    assert!(received.is_shrink_sealed().unwrap());
    let a = SegmentMapping::new(file, MIB).unwrap();
    let b = SegmentMapping::new(received, MIB).unwrap();
    store_u64(&a, 8, 99);
    assert_eq!(b.read_u64(8), Some(99));
}

#[test]
fn read_only_files_map_read_only() {
    let path = unique_path("ro");
    let owner = SegmentMapping::new(SegmentFile::create_named(&path, 4096).unwrap(), MIB).unwrap();
    store_u64(&owner, 16, 1234);

    let ro = SegmentFile::open_path(&path, Access::ReadOnly).unwrap();
    assert!(!ro.is_writable());
    assert!(matches!(
        ro.grow_to(8192),
        Err(MappingError::ReadOnly { .. })
    ));
    assert_eq!(
        ro.grow_to(4096).unwrap(),
        4096,
        "no growth needed: no error"
    );
    assert!(matches!(
        SegmentMapping::new(ro.try_clone().unwrap(), MIB),
        Err(MappingError::ReadOnly { .. })
    ));

    let view = ReadOnlyMapping::new(ro, MIB).unwrap();
    assert_eq!(view.len(), 4096);
    assert_eq!(view.read_u64(16), Some(1234));
    assert_eq!(view.read_u64(8192), None);
    owner.grow_to(16384).unwrap();
    store_u64(&owner, 12288, 5678);
    assert_eq!(view.read_u64(12288), None);
    assert_eq!(view.refresh_len().unwrap(), 16384);
    assert_eq!(view.read_u64(12288), Some(5678));
    assert_eq!(view.file().path(), Some(path.as_path()));
}

#[test]
fn read_only_view_of_a_memfd() {
    // An inspector reopens a memfd read-only through /proc (what it would do for another pid).
    let owner = anonymous(4096, MIB);
    store_u64(&owner, 0, 77);
    let proc_path = format!("/proc/self/fd/{}", owner.file().as_raw_fd());
    let ro = SegmentFile::open_path(&proc_path, Access::ReadOnly).unwrap();
    assert!(
        ro.is_shrink_sealed().unwrap(),
        "the same memfd, seals included"
    );
    let view = ReadOnlyMapping::new(ro, MIB).unwrap();
    assert_eq!(view.read_u64(0), Some(77));
}

#[test]
fn empty_reservation_is_refused() {
    let file = SegmentFile::create_anonymous("hub-test", 4096).unwrap();
    assert!(matches!(
        SegmentMapping::new(file.try_clone().unwrap(), 0),
        Err(MappingError::EmptyReservation)
    ));
    assert!(matches!(
        ReadOnlyMapping::new(file, 0),
        Err(MappingError::EmptyReservation)
    ));
}

#[test]
fn region_contract() {
    let mapping = anonymous(4096, 2 * MIB);
    let region: &dyn Region = &mapping;
    let base = region.base();
    assert_eq!(base.as_ptr() as usize % 64, 0);
    assert_eq!(region.reservation(), 2 * MIB);
    assert_eq!(Region::len(region), 4096);
    assert_eq!(region.grow_to(100).unwrap(), 4096, "never shrinks");
    assert_eq!(region.grow_to(MIB + 1).unwrap(), MIB + 1);
    assert!(Region::len(region) > MIB);
    assert_eq!(
        region.grow_to(2 * MIB + 1),
        Err(GrowError::BeyondReservation {
            requested: 2 * MIB + 1,
            reservation: 2 * MIB
        })
    );
    assert_eq!(region.base(), base);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SegmentMapping>();
    send_sync::<ReadOnlyMapping>();
}

#[test]
fn validation_runs_over_a_live_mapping() {
    let mapping = anonymous(64 * 1024, MIB);
    // All zeros: a hub whose creator has not written the magic yet (R1).
    assert_eq!(validate_segment(&mapping), Err(HubLayoutError::NotReady));
    let tiny = anonymous(16, MIB);
    assert!(matches!(
        validate_segment(&tiny),
        Err(HubLayoutError::HubTooSmall { found: 16, .. })
    ));
}

#[test]
fn fd_env_round_trip() {
    let file = SegmentFile::create_anonymous("hub-test", 4096).unwrap();
    let text = fd_to_env(&file);
    assert_eq!(parse_fd(&text), Some(file.as_raw_fd()));
    assert_eq!(parse_fd(""), None);
    assert_eq!(parse_fd("-3"), None);
    assert_eq!(parse_fd("12x"), None);
}

#[test]
fn errors_say_what_failed() {
    let err = MappingError::BeyondReservation {
        requested: 10,
        reservation: 5,
    };
    assert_eq!(
        err.to_string(),
        "cannot grow to 10 bytes: the reservation is 5 bytes"
    );
    let grow = MappingError::Grow {
        requested: 1,
        source: io::Error::from(Errno::NOSPC),
    };
    assert!(
        grow.to_string()
            .contains("could not grow the segment file to 1 bytes")
    );
    assert!(std::error::Error::source(&grow).is_some());
}
