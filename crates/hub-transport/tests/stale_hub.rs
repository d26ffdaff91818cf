//! A named hub whose host was killed (SIGKILL: no chance to remove its file) is *stale*: it is
//! reported as such, `Host::create` at its path fails with `CreateError::Stale`, and replaces
//! it only when asked (`take_over_stale`); a hub whose host lives is never replaced.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hub_transport::mapping::{MappingError, SegmentFile};
use hub_transport::{CreateError, FrameMeta, Host, HubConfig, Peer};

/// Set in the child's environment: the path at which it creates a hub, then waits to be killed.
const CHILD_ENV: &str = "HUB_STALE_HUB_TEST_CHILD";

/// A fresh path in a directory of its own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hub-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(path: &Path) -> HubConfig {
    HubConfig::new().max_peers(1).path(path)
}

/// The child's part: create the hub, say so, and wait to be killed.
fn child(path: &str) -> ! {
    let _host = Host::create(&config(Path::new(path))).expect("the child creates the hub");
    println!("ready");
    loop {
        std::thread::park();
    }
}

#[test]
fn a_stale_hub_is_reported_and_replaced_only_when_asked() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
    }
    let dir = TempDir::new("stale");
    let path = dir.path("hub");
    let mut host_process = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_stale_hub_is_reported_and_replaced_only_when_asked",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the host process");
    let ready = BufReader::new(host_process.stdout.take().unwrap())
        .lines()
        .any(|line| line.is_ok_and(|line| line == "ready"));
    assert!(ready, "the child's hub is up");
    assert!(!SegmentFile::is_stale_at(&path).unwrap(), "its host lives");
    host_process.kill().unwrap();
    host_process.wait().unwrap();

    // The host is gone, its file is not.
    assert!(path.exists());
    assert!(SegmentFile::is_stale_at(&path).unwrap());
    match Host::create(&config(&path)) {
        Err(CreateError::Stale { path: stale }) => assert_eq!(stale, path),
        other => panic!("expected Stale, got {other:?}"),
    }
    assert!(path.exists(), "not replaced unless asked");

    // Asked: replaced by a working hub, which is not stale while it lives.
    let host = Host::create(&config(&path).take_over_stale(true)).expect("take over");
    assert!(!SegmentFile::is_stale_at(&path).unwrap());
    let ticket = host.add_peer().unwrap();
    let peer = Peer::attach(&ticket).unwrap();
    host.send(ticket.peer_id(), FrameMeta::default(), b"fresh")
        .unwrap();
    assert_eq!(peer.recv().unwrap().payload(), b"fresh");
    drop(peer);
    drop(host);
    assert!(!path.exists(), "removed by its host on drop");
}

#[test]
fn a_hub_whose_host_lives_is_never_taken_over() {
    let dir = TempDir::new("live");
    let path = dir.path("hub");
    let host = Host::create(&config(&path)).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    match Host::create(&config(&path).take_over_stale(true)) {
        Err(CreateError::Mapping(MappingError::CreateFailed { source, .. })) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    use std::os::unix::fs::MetadataExt;
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!((before.dev(), before.ino()), (after.dev(), after.ino()));
    // Still the live host's hub.
    let ticket = host.add_peer().unwrap();
    let peer = Peer::attach(&ticket).unwrap();
    peer.send(FrameMeta::default(), b"still here").unwrap();
    assert_eq!(host.recv().unwrap().payload(), b"still here");
}

#[test]
fn a_file_that_is_not_a_hub_is_never_stale_nor_removed() {
    let dir = TempDir::new("other");
    let path = dir.path("not-a-hub");
    std::fs::write(&path, b"someone else's data").unwrap();
    assert!(!SegmentFile::is_stale_at(&path).unwrap());
    match Host::create(&config(&path).take_over_stale(true)) {
        Err(CreateError::Mapping(MappingError::CreateFailed { source, .. })) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(SegmentFile::take_over_stale(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's data");
}
